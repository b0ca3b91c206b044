package localcluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// slackOf reads the timer slack of a process or thread, in ns.
func slackOf(t *testing.T, id string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + id + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBinariesRaiseTimerSlack: the master and the worker run every thread,
// the Go runtime's own among them, with 1 ms of timer slack (proto/timerslack,
// MASTER_TIMER_SLACK and WORKER_TIMER_SLACK by default), in the process
// they were started as; the commands a worker runs get the slack the worker
// was started with, not its own.
func TestBinariesRaiseTimerSlack(t *testing.T) {
	ours := slackOf(t, "self")
	if ours == int64(time.Millisecond) {
		t.Fatal("this test process already has 1 ms of timer slack: it could not tell raised from inherited")
	}
	var log Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Bin: bins, Log: &log})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log.String())
	}
	defer c.Close()
	if err := c.StartWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]struct {
		pid int
		bin string
	}{"master": {c.Master().Pid(), bins.Master}, "worker": {c.Worker("w1").Pid(), bins.Worker}} {
		pid := p.pid
		// Executed again by its own path, it keeps its name in ps and top.
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err != nil || strings.TrimSpace(string(comm)) != filepath.Base(p.bin) {
			t.Errorf("%s runs as %q (%v), want %q", name, comm, err, filepath.Base(p.bin))
		}
		tids, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			t.Fatal(err)
		}
		if len(tids) < 2 {
			t.Errorf("%s has %d threads; want the runtime's too", name, len(tids))
		}
		for _, tid := range tids {
			if got := slackOf(t, tid.Name()); got != int64(time.Millisecond) {
				t.Errorf("%s's thread %s has %d ns of timer slack, want %d", name, tid.Name(), got, time.Millisecond)
			}
		}
	}
	task, _, err := c.Client().SubmitWith(ctx, client.Submit{Cmd: "cat /proc/self/timerslack_ns", Wait: 30 * time.Second})
	if err != nil || task.Status != "succeeded" {
		t.Fatalf("task: %+v, %v", task, err)
	}
	if got := strings.TrimSpace(task.Stdout); got != strconv.FormatInt(ours, 10) {
		t.Errorf("the command has %s ns of timer slack, want %d as the worker was started with", got, ours)
	}
	if t.Failed() {
		t.Logf("cluster output:\n%s", log.String())
	}
}
