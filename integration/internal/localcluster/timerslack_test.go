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
	"github.com/roundhouse-lab/roundhouse/proto/timerslack/timerslacktest"
)

// ownSlack is the test's own timer slack.
func ownSlack(t *testing.T) time.Duration {
	t.Helper()
	d, err := timerslacktest.Own()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBinariesRaiseTimerSlack: the master and the worker run every thread,
// the Go runtime's own among them, with the timer slack of
// MASTER_TIMER_SLACK and WORKER_TIMER_SLACK (1 ms and 5 ms by default;
// proto/timerslack), in the process they were started as and under their
// own names; the commands a worker runs get the slack the worker was
// started with, and running them leaves the worker's threads as they were.
func TestBinariesRaiseTimerSlack(t *testing.T) {
	ours := ownSlack(t)
	// The defaults, unless the test has as much already: then ask for
	// more, so that raised and inherited differ; at timerslack.Max (10 ms)
	// or above, the programs must leave it as they found it.
	wantSlack := func(def time.Duration, variable string) (time.Duration, []string) {
		if ours < def {
			return def, nil
		}
		want := max(min(2*ours, 10*time.Millisecond), ours)
		return want, []string{variable + "=" + want.String()}
	}
	masterWant, masterEnv := wantSlack(time.Millisecond, "MASTER_TIMER_SLACK")
	workerWant, workerEnv := wantSlack(5*time.Millisecond, "WORKER_TIMER_SLACK")
	var log Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Bin: bins, Log: &log, MasterEnv: masterEnv, WorkerEnv: workerEnv})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log.String())
	}
	defer func() {
		c.Close()
		if t.Failed() {
			t.Logf("cluster output:\n%s", log.String())
		}
	}()
	if err := c.StartWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	procs := []struct {
		name string
		pid  int
		bin  string
		want time.Duration
	}{{"master", c.Master().Pid(), bins.Master, masterWant}, {"worker", c.Worker("w1").Pid(), bins.Worker, workerWant}}
	for _, p := range procs {
		// Executed again by its own path, it keeps its name in ps and top.
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/comm"); err != nil || strings.TrimSpace(string(comm)) != filepath.Base(p.bin) {
			t.Errorf("%s runs as %q (%v), want %q", p.name, comm, err, filepath.Base(p.bin))
		}
	}
	task, _, err := c.Client().SubmitWith(ctx, client.Submit{Cmd: "cat /proc/self/timerslack_ns", Wait: 30 * time.Second})
	if err != nil || task.Status != "succeeded" {
		t.Fatalf("task: %+v, %v", task, err)
	}
	if got := strings.TrimSpace(task.Stdout); got != strconv.FormatInt(int64(ours), 10) {
		t.Errorf("the command has %s ns of timer slack, want %d as the worker was started with", got, ours)
	}
	// After the task: the thread that forked it has its slack back.
	for _, p := range procs {
		timerslacktest.Want(t, p.name, p.pid, p.want)
	}
}
