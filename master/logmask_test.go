package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The start-up log shows every setting, but of the tokens only whether they
// are set.
func TestStartupLogMasksSecrets(t *testing.T) {
	const api, node = "api-secret-0123456789abcdef", "node-secret-0123456789abcdef"
	cfg, err := loadConfig(map[string]string{
		"MASTER_GRPC_ADDR": "127.0.0.1:0", "MASTER_HTTP_ADDR": "127.0.0.1:0",
		"MASTER_DB_PATH":   filepath.Join(t.TempDir(), "rh.db"),
		"MASTER_API_TOKEN": api, "MASTER_WORKER_TOKEN": node,
	})
	if err != nil {
		t.Fatal(err)
	}
	var logged syncBuffer
	runUntilReady(t, cfg, &logged)
	l := logged.String()
	for _, want := range []string{"api_token=set", "worker_token=set", "max_queued=10000", "max_event_streams=64", "read_header_timeout=5s", "MASTER_TLS_CERT is unset"} {
		if !strings.Contains(l, want) {
			t.Errorf("start-up log lacks %q:\n%s", want, l)
		}
	}
	for _, secret := range []string{api, node, api[:12], node[:12]} {
		if strings.Contains(l, secret) {
			t.Errorf("the log holds (part of) a token:\n%s", l)
		}
	}

	// Unset tokens are shown as such, with a warning about what that means.
	cfg.APIToken, cfg.WorkerToken = "", ""
	var logged2 syncBuffer
	runUntilReady(t, cfg, &logged2)
	if l := logged2.String(); !strings.Contains(l, "api_token=unset") || !strings.Contains(l, "MASTER_API_TOKEN is unset: anyone who can reach") {
		t.Errorf("start-up log without tokens:\n%s", l)
	}
}

// runUntilReady runs the master as main does, logging to w, and stops it
// once it is ready.
func runUntilReady(t *testing.T, cfg config, w *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- run(ctx, cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.String(), "master ready") {
		if time.Now().After(deadline) {
			t.Fatalf("master not ready:\n%s", w.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}
