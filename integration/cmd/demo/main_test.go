package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoRoundRobinOnLocalProcesses builds the real master and worker and
// runs the demo against them: three workers, nine tasks one after another,
// so each worker must run every third task in registration order. The
// master requires an API token, which the demo sends on every request.
//
// The environment holds the compose lab's worker token and TLS settings,
// as after `set -a; . ./.env`: inherited, they would make the local master
// demand a token and certificates its workers do not have (or, for the
// missing files, fail to start), and several workers could not share a
// metrics address.
func TestDemoRoundRobinOnLocalProcesses(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-file.pem")
	for k, v := range map[string]string{
		"MASTER_WORKER_TOKEN": "lab-worker-token-0123456789abcdef",
		"WORKER_TOKEN":        "another-worker-token-0123456789",
		"MASTER_TLS_CERT":     missing, "MASTER_TLS_KEY": missing, "MASTER_TLS_CLIENT_CA": missing,
		"WORKER_TLS_CA": missing, "WORKER_TLS_CERT": missing, "WORKER_TLS_KEY": missing,
		"WORKER_METRICS_ADDR": "127.0.0.1:1", // one address for all three, if inherited
	} {
		t.Setenv(k, v)
	}
	for _, m := range []string{"master", "worker"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, m), "github.com/roundhouse-lab/roundhouse/"+m).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", m, err, out)
		}
	}
	var log bytes.Buffer
	procLog, err := os.Create(filepath.Join(dir, "cluster.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer procLog.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ran, err := run(ctx, options{
		masterBin: filepath.Join(dir, "master"),
		workerBin: filepath.Join(dir, "worker"),
		token:     "demo-test-token-0123456789",
		workers:   3,
		tasks:     9,
		timeout:   time.Minute,
		procLog:   procLog,
	}, &log)
	if err != nil {
		cl, _ := os.ReadFile(procLog.Name())
		t.Fatalf("demo: %v\n%s\ncluster log:\n%s", err, log.String(), cl)
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
