package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// bins are the master and worker, built once by TestMain.
var bins localcluster.Binaries

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunWithBinaries(m, "roundhouse-demo-test-", &bins))
}

// labEnv fills the environment with the compose lab's worker token and TLS
// settings, as after `set -a; . ./.env`: inherited, they would make the
// local master demand a token and certificates its workers do not have
// (or, for the missing files, fail to start), and several workers could
// not share a metrics address.
func labEnv(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-file.pem")
	for k, v := range map[string]string{
		"MASTER_WORKER_TOKEN": "lab-worker-token-0123456789abcdef",
		"WORKER_TOKEN":        "another-worker-token-0123456789",
		"MASTER_TLS_CERT":     missing, "MASTER_TLS_KEY": missing, "MASTER_TLS_CLIENT_CA": missing,
		"WORKER_TLS_CA": missing, "WORKER_TLS_CERT": missing, "WORKER_TLS_KEY": missing,
		"WORKER_METRICS_ADDR": "127.0.0.1:1", // one address for all three, if inherited
	} {
		t.Setenv(k, v)
	}
}

// TestDemoRoundRobinOnLocalProcesses runs the demo against the real master
// and worker: three workers, nine tasks one after another, so each worker
// must run every third task in registration order. The master requires an
// API token, which the demo sends on every request.
func TestDemoRoundRobinOnLocalProcesses(t *testing.T) {
	labEnv(t)
	var log, procLog localcluster.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ran, err := run(ctx, options{
		masterBin: bins.Master,
		workerBin: bins.Worker,
		token:     "demo-test-token-0123456789",
		workers:   3,
		tasks:     9,
		timeout:   time.Minute,
		procLog:   &procLog,
	}, &log)
	if err != nil {
		t.Fatalf("demo: %v\n%s\ncluster log:\n%s", err, log.String(), procLog.String())
	}
	for i, w := range ran {
		if want := fmt.Sprintf("w%d", i%3+1); w != want {
			t.Errorf("task %d ran on %q, want %q", i+1, w, want)
		}
	}
	if len(ran) != 9 {
		t.Errorf("ran %d tasks, want 9", len(ran))
	}
	if !strings.Contains(log.String(), "tasks per worker: w1=3 w2=3 w3=3") {
		t.Errorf("summary missing from output:\n%s", log.String())
	}
}

// make up and make swarm-up wait with -wait-workers for the lab's workers.
// A master that refuses the token (a shell or .env from another lab) will
// not change its mind: the wait ends at once and says why, rather than
// "have []" when the timeout is spent.
func TestWaitWorkersRefusedToken(t *testing.T) {
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"unauthenticated: invalid API token"}`))
	}))
	defer master.Close()
	var out bytes.Buffer
	_, err := run(context.Background(), options{api: master.URL, token: "another-labs-token", waitWorkers: 5, timeout: 30 * time.Second}, &out)
	if client.StatusOf(err) != http.StatusUnauthorized || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("demo -wait-workers 5 against a master that refuses the token: %v; want its 401 at once", err)
	}
}

// TestServe runs make dev's mode: the cluster stays up, with the shell's
// worker token on both sides, until the context ends (Ctrl-C), and then
// every process is gone.
func TestServe(t *testing.T) {
	labEnv(t)
	t.Setenv("MASTER_WORKER_TOKEN", "serve-worker-token-0123456789") // what -serve hands on
	var out, procLog localcluster.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, options{masterBin: bins.Master, workerBin: bins.Worker, token: "serve-test-token-0123456789", workers: 2,
			timeout: time.Minute, procLog: &procLog, serve: true, workerToken: os.Getenv("MASTER_WORKER_TOKEN")}, &out)
	}()
	up := regexp.MustCompile(`local cluster up: master (http://127\.0\.0\.1:\d+) \(API token: \$MASTER_API_TOKEN\), workers dial \S+, 2 workers`)
	var api string
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	err := client.Poll(wctx, 20*time.Millisecond, func() (bool, error) {
		select {
		case err := <-done:
			return false, fmt.Errorf("serve ended early: %v", err)
		default:
		}
		m := up.FindStringSubmatch(out.String())
		if m != nil {
			api = m[1]
		}
		return m != nil, nil
	})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s\ncluster log:\n%s", err, out.String(), procLog.String())
	}
	cl := client.New(api, client.WithToken("serve-test-token-0123456789"))
	ws, err := cl.Workers(ctx)
	if err != nil || strings.Join(ws.IDs(), " ") != "w1 w2" {
		t.Fatalf("workers: %v, %v", ws.IDs(), err)
	}
	// The workers registered, so they sent the token the master wants.
	if !regexp.MustCompile(`master\| .*worker_token=set`).MatchString(procLog.String()) {
		t.Errorf("the master runs without the shell's worker token:\n%s", procLog.String())
	}
	if pids := children(t); len(pids) != 3 {
		t.Errorf("child processes while serving: %v, want the master and 2 workers", pids)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\ncluster log:\n%s", err, procLog.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not stop")
	}
	if pids := children(t); len(pids) != 0 {
		t.Errorf("child processes after serve: %v, want none", pids)
	}
	if _, err := client.New(api).Workers(context.Background()); err == nil {
		t.Error("the API still answers after serve ended")
	}
}

// children lists the processes whose parent is this test binary, from /proc.
func children(t *testing.T) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // ended meanwhile
		}
		// After the command name in parentheses: state, then the parent's pid.
		var pid, ppid int
		var state string
		fields := string(b[bytes.LastIndexByte(b, ')')+2:])
		if _, err := fmt.Sscan(fields, &state, &ppid); err != nil || ppid != os.Getpid() {
			continue
		}
		fmt.Sscan(string(b), &pid)
		pids = append(pids, pid)
	}
	return pids
}
