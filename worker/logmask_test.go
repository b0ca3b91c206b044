package main

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

// startupLog runs the worker with env until it has started, and returns
// what it logged.
func startupLog(t *testing.T, env map[string]string) string {
	t.Helper()
	cfg, err := loadConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	// Two signals already waiting: run starts, drains at once and stops.
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	if err := run(sigs, cfg, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	return logged.String()
}

// The start-up log shows whether WORKER_TOKEN is set, never its value.
func TestStartupLogMasksToken(t *testing.T) {
	const secret = "worker-secret-0123456789abcdef"
	l := startupLog(t, map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1", "WORKER_TOKEN": secret})
	if !strings.Contains(l, "token=set") || !strings.Contains(l, "worker starting") {
		t.Errorf("start-up log lacks token=set:\n%s", l)
	}
	if strings.Contains(l, secret) || strings.Contains(l, secret[:12]) {
		t.Errorf("the log holds the token:\n%s", l)
	}
}

// The start-up log shows the labels the worker registers with, in the
// canonical form the master shows them in.
func TestStartupLogShowsLabels(t *testing.T) {
	l := startupLog(t, map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1", "WORKER_LABELS": "zone=eu, gpu=nvidia"})
	if !strings.Contains(l, `labels="gpu=nvidia,zone=eu"`) {
		t.Errorf("start-up log lacks labels=\"gpu=nvidia,zone=eu\":\n%s", l)
	}
}
