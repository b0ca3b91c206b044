package main

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

// The start-up log shows whether WORKER_TOKEN is set, never its value.
func TestStartupLogMasksToken(t *testing.T) {
	const secret = "worker-secret-0123456789abcdef"
	cfg, err := loadConfig(map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1", "WORKER_TOKEN": secret})
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
	l := logged.String()
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
	cfg, err := loadConfig(map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1", "WORKER_LABELS": "zone=eu, gpu=nvidia"})
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	if err := run(sigs, cfg, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	if l := logged.String(); !strings.Contains(l, `labels="gpu=nvidia,zone=eu"`) {
		t.Errorf("start-up log lacks labels=\"gpu=nvidia,zone=eu\":\n%s", l)
	}
}
