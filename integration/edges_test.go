package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// These tests hit the edges of the master's promises: a message the master
// owes a worker it cannot reach.

// A task canceled while its worker is cut off: the cancel cannot reach the
// worker then, so the master must deliver it when the worker reconnects and
// says what it still runs. The worker kills the command and the task stays
// canceled.
func TestCancelWhileWorkerCutOff(t *testing.T) {
	const workerTimeout = 3 * time.Second
	l := newLab(t, withMasterEnv("MASTER_WORKER_TIMEOUT", workerTimeout.String()))
	cw := l.startWorker("cw", 1).GetContainerID()
	const cmd = "sleep 300"
	id := l.submit(cmd).ID
	l.watch(id)
	waitStatus(t, l, id, "running")
	if tk, _ := l.api.Get(l.ctx, id); tk.Worker() != "cw" {
		t.Fatalf("task went to %q, want cw, the only worker", tk.Worker())
	}
	// Seen running first, so that its absence at the end means something.
	waitProcess(t, l, cw, cmd, true, 10*time.Second)

	l.docker("network", "disconnect", l.nw.Name, cw)
	// The cut outlasts the worker's session: it must register anew.
	waitWorkerGone(t, l, "cw", workerTimeout+detectionSlack)
	tk, code, err := l.api.Cancel(l.ctx, id)
	if err != nil || code != http.StatusOK || tk.Status != "canceled" {
		t.Fatalf("DELETE while cw is cut off = %d %s, %v; want 200, canceled", code, tk.Status, err)
	}

	l.docker("network", "connect", "--alias", "cw", l.nw.Name, cw)
	healed := time.Now()
	waitWorkerBack(t, l, "cw", labRejoin)
	t.Logf("healed cw back after %s", time.Since(healed).Round(100*time.Millisecond))
	// Reconnected, cw lists the delivery it still runs; the master answers
	// with the cancel it owes.
	waitProcess(t, l, cw, cmd, false, 15*time.Second)
	if got := waitTask(t, l, id, 10*time.Second, "the task final", client.Task.Final); got.Status != "canceled" {
		t.Errorf("task after cw reconnected: %s, history %s; want canceled", got.Status, trail(got))
	}
}

// waitProcess polls `docker top` of a container until a process whose
// command line contains cmd is listed (running) or is not (!running), and
// fails the test after d.
func waitProcess(t *testing.T, l *lab, container, cmd string, running bool, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, d)
	defer cancel()
	var top string
	err := client.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		top = l.docker("top", container)
		return strings.Contains(top, cmd) == running, nil
	})
	if err != nil {
		want := "no process"
		if running {
			want = "a process"
		}
		t.Fatalf("waited %s for %s running %q; docker top:\n%s", d, want, cmd, top)
	}
}
