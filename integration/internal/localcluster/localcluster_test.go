package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// bins are built once for the package's tests, by TestMain.
var bins Binaries

func TestMain(m *testing.M) {
	os.Exit(RunWithBinaries(m, "localcluster-test-", &bins))
}

// gone reports whether no process has this ID any more.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestClusterLifecycle starts a master with an API token and two workers,
// in an environment that holds the compose lab's worker token and TLS
// files, runs a task, stops one worker with SIGTERM and kills the other,
// and checks that Close leaves no process behind.
func TestClusterLifecycle(t *testing.T) {
	missing := t.TempDir() + "/no-such-file.pem"
	for k, v := range map[string]string{
		"MASTER_WORKER_TOKEN": "lab-worker-token-0123456789abcdef", "WORKER_TOKEN": "another-worker-token-0123456789",
		"MASTER_TLS_CERT": missing, "MASTER_TLS_KEY": missing, "MASTER_TLS_CLIENT_CA": missing,
		"WORKER_TLS_CA": missing, "WORKER_TLS_CERT": missing, "WORKER_TLS_KEY": missing,
		"WORKER_METRICS_ADDR": "127.0.0.1:1", "MASTER_API_TOKEN_FILE": missing,
	} {
		t.Setenv(k, v)
	}
	var log Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{
		Bin: bins, APIToken: "localcluster-test-token", Log: &log,
		MasterEnv: []string{"MASTER_WORKER_TIMEOUT=1s"}, StopTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log.String())
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
		if t.Failed() {
			t.Logf("cluster output:\n%s", log.String())
		}
	}()
	if err := c.StartWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartWorker(ctx, Worker{ID: "w2"}); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Errorf("a second w2 while the first runs: err = %v, want one saying it runs", err)
	}
	cl := c.Client()
	ws, err := cl.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ws.IDs(), " "); got != "w1 w2" {
		t.Fatalf("rotation %q, want \"w1 w2\"", got)
	}
	task, _, err := cl.SubmitWith(ctx, client.Submit{Cmd: "echo hello", Wait: 30 * time.Second})
	if err != nil || task.Status != "succeeded" || strings.TrimSpace(task.Stdout) != "hello" {
		t.Fatalf("task: %+v, %v", task, err)
	}

	pids := []int{c.Master().Pid(), c.Worker("w1").Pid(), c.Worker("w2").Pid()}
	if err := c.Worker("w1").Stop(); err != nil {
		t.Fatalf("stop w1: %v", err)
	}
	if err := c.Worker("w1").Err(); err != nil {
		t.Errorf("w1 after SIGTERM: %v, want exit 0", err)
	}
	if ws, err := cl.WaitWorkers(ctx, 1); err != nil || ws.Has("w1") {
		t.Fatalf("after stopping w1: %v, %v", ws.IDs(), err)
	}
	if err := c.Worker("w2").Kill(); err != nil {
		t.Fatalf("kill w2: %v", err)
	}
	if err := c.Worker("w2").Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("w2 after SIGKILL: %v, want killed", err)
	}
	if _, err := cl.WaitWorkers(ctx, 0); err != nil {
		t.Fatalf("after killing w2: %v", err)
	}
	// An ID can be used again once its process has ended.
	if _, err := c.StartWorker(ctx, Worker{ID: "w2", Slots: 2}); err != nil {
		t.Fatal(err)
	}
	if ws, err := cl.Workers(ctx); err != nil || len(ws.Workers) != 1 || ws.Workers[0].Slots != 2 {
		t.Fatalf("the new w2: %+v, %v", ws, err)
	}
	pids = append(pids, c.Worker("w2").Pid())

	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("process %d still there after Close", pid)
		}
	}
	if _, err := cl.Workers(ctx); err == nil {
		t.Error("the API still answers after Close")
	}
	for _, want := range []string{"master| ", "worker-w1| ", "worker-w2| "} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("no line of %q in the output", want)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestLogDir: with Config.LogDir each process writes its output into a
// file of its own, directly (its stdout is the file, not a pipe to the
// launcher), and a worker started again under its ID appends to its file.
func TestLogDir(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Bin: bins, LogDir: dir, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.StartWorker(ctx, Worker{ID: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	for name, pid := range map[string]int{"master": c.Master().Pid(), "worker-w1": w.Pid()} {
		out, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
		if want := filepath.Join(dir, name+".log"); err != nil || out != want {
			t.Errorf("%s's stdout is %q (%v), want %s", name, out, err, want)
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "worker-w1.log"))
	if err != nil || len(before) == 0 {
		t.Fatalf("worker-w1.log: %d bytes, %v", len(before), err)
	}
	if _, err := c.StartWorker(ctx, Worker{ID: "w1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "worker-w1.log"))
	if err != nil || !bytes.HasPrefix(after, before) || len(after) == len(before) {
		t.Errorf("worker-w1.log after a second w1: %d bytes (%v), want the first's %d and more", len(after), err, len(before))
	}
	if m, err := os.ReadFile(filepath.Join(dir, "master.log")); err != nil || len(m) == 0 {
		t.Errorf("master.log: %d bytes, %v", len(m), err)
	}
}

// TestStartFailsFast: a master that cannot start fails Start at once with
// its exit and output, not after the readiness timeout; a fixed address
// already in use fails before anything starts.
func TestStartFailsFast(t *testing.T) {
	var log Buffer
	began := time.Now()
	c, err := Start(context.Background(), Config{Bin: bins, Log: &log, ReadyTimeout: time.Minute,
		MasterEnv: []string{"MASTER_MAX_ATTEMPTS=zero"}})
	if err == nil {
		c.Close()
		t.Fatal("a master with a broken setting started")
	}
	if !strings.Contains(err.Error(), "master exited") || time.Since(began) > 20*time.Second {
		t.Errorf("err = %v after %s, want the master's exit, soon", err, time.Since(began))
	}
	if !strings.Contains(log.String(), "master| ") || !strings.Contains(log.String(), "MASTER_MAX_ATTEMPTS") {
		t.Errorf("the failed master's output is missing:\n%s", log.String())
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err = Start(context.Background(), Config{Bin: bins, HTTPAddr: l.Addr().String()})
	if err == nil {
		c.Close()
		t.Fatal("a master on a taken address started")
	}
	if !strings.Contains(err.Error(), "is not free") {
		t.Errorf("err = %v, want one saying the address is taken", err)
	}
}
