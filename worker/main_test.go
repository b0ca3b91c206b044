package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/worker/internal/agent"
)

func TestHealth(t *testing.T) {
	var registered, serving atomic.Bool
	srv := httptest.NewServer(healthHandler(registered.Load, serving.Load, "w1"))
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	// /healthz follows the registration; /livez whether the worker still
	// serves its master or tries to: cut off from its master, a worker is
	// unhealthy (compose shows it) but alive (swarm must not replace it).
	tests := []struct {
		name                string
		registered, serving bool
		path                string
		wantCode            int
		wantStatus          string
	}{
		{"not registered", false, true, "/healthz", http.StatusServiceUnavailable, "unregistered"},
		{"registered", true, true, "/healthz", http.StatusOK, "ok"},
		{"reconnecting, live", false, true, "/livez", http.StatusOK, "alive"},
		{"registered, live", true, true, "/livez", http.StatusOK, "alive"},
		{"stopped, live", false, false, "/livez", http.StatusServiceUnavailable, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			registered.Store(tt.registered)
			serving.Store(tt.serving)
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Status     string `json:"status"`
				Registered bool   `json:"registered"`
				WorkerID   string `json:"worker_id"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode || body.Status != tt.wantStatus || body.Registered != tt.registered || body.WorkerID != "w1" {
				t.Errorf("GET %s = %d %+v, want %d status %q", tt.path, resp.StatusCode, body, tt.wantCode, tt.wantStatus)
			}
			if err := healthcheck(":"+port, tt.path); (err == nil) != (tt.wantCode == http.StatusOK) {
				t.Errorf("healthcheck of %s = %v, want healthy %v", tt.path, err, tt.wantCode == http.StatusOK)
			}
		})
	}
}

func TestHealthcheckWithoutAddress(t *testing.T) {
	if err := healthcheck("", "/healthz"); err == nil || !strings.Contains(err.Error(), "WORKER_HEALTH_ADDR is not set") {
		t.Fatalf("healthcheck(\"\") = %v, want an error saying WORKER_HEALTH_ADDR is not set", err)
	}
}

// A signal drains the worker and work returns, even when the master cannot
// be reached to hear about the drain.
func TestWorkStopsOnSignalWithoutMaster(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nobody listens there now
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := agent.New(agent.Config{MasterAddr: addr, WorkerID: "w1", Slots: 1, MaxOutput: 1024, ReconnectMax: 200 * time.Millisecond}, log)

	sigs := make(chan os.Signal, 2)
	done := make(chan error, 1)
	go func() { done <- work(a, sigs, time.Hour, log) }()
	sigs <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("work = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("work did not return within 10s of SIGTERM with nothing to drain")
	}
}

// With WORKER_METRICS_ADDR set, run serves the worker's metrics, and stops
// serving them when the worker stops.
func TestRunServesMetrics(t *testing.T) {
	free := func() string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		return lis.Addr().String()
	}
	cfg, err := loadConfig(map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": free(), "WORKER_METRICS_ADDR": free()})
	if err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 2)
	done := make(chan error, 1)
	go func() { done <- run(sigs, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(body, "roundhouse_worker_connected 0\n") {
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics on WORKER_METRICS_ADDR never showed the worker disconnected; last answer: %q", body)
		}
		if resp, err := http.Get("http://" + cfg.MetricsAddr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	for _, want := range []string{`roundhouse_worker_tasks_total{outcome="succeeded"} 0`, "roundhouse_worker_reconnects_total 0", "# TYPE go_goroutines gauge"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	sigs <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	if _, err := http.Get("http://" + cfg.MetricsAddr + "/metrics"); err == nil {
		t.Error("metrics still served after the worker stopped")
	}
}

func TestTaskEnvDropsTheWorkersSecrets(t *testing.T) {
	got := taskEnv([]string{"PATH=/bin", "WORKER_TOKEN=secret", "WORKER_TLS_KEY=/k", "WORKER_TLS_CA=/ca", "WORKER_ID=w1", "HOME=/tmp"})
	want := []string{"PATH=/bin", "WORKER_ID=w1", "HOME=/tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("taskEnv = %q, want %q", got, want)
	}
}

// TestTaskEnvDropsTheMastersTokens: a worker started without Docker
// inherits the shell's environment, and the README's way to start one
// (`set -a; . ./.env`, or `make dev`, whose Makefile exports
// MASTER_API_TOKEN) puts the master's tokens there too. MASTER_WORKER_TOKEN
// is the worker token under another name, and a task that ran `env` stored
// both in its output.
func TestTaskEnvDropsTheMastersTokens(t *testing.T) {
	got := taskEnv([]string{"PATH=/bin", "MASTER_API_TOKEN=api-secret", "WORKER_TOKEN=secret", "MASTER_WORKER_TOKEN=secret", "HOME=/tmp"})
	want := []string{"PATH=/bin", "HOME=/tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("taskEnv = %q, want %q", got, want)
	}
}

func TestProcsFor(t *testing.T) {
	for _, c := range []struct {
		slots, current int
		env            string
		want           int
		set            bool
	}{
		{slots: 1, current: 2, want: 1, set: true},
		{slots: 3, current: 8, want: 3, set: true},
		{slots: 4, current: 2, want: 2},           // never more than the runtime chose
		{slots: 2, current: 2, want: 2},           // nothing to change
		{slots: 1, current: 2, env: "2", want: 2}, // the operator's setting wins
		{slots: 1, current: 4, env: "3", want: 4}, // as the runtime read it
	} {
		got, set := procsFor(c.slots, c.current, c.env)
		if got != c.want || set != c.set {
			t.Errorf("procsFor(%d, %d, %q) = %d, %v; want %d, %v", c.slots, c.current, c.env, got, set, c.want, c.set)
		}
	}
}
