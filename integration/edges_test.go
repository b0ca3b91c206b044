package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// These tests hit the edges of the master's promises: a message the master
// owes a worker it cannot reach, and a crash of the master and a worker in
// the middle of a burst.

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

// The master and a worker SIGKILLed at the same moment, a third of the way
// into a burst of submissions, then started again: every task the API
// accepted succeeds once with its own output, is listed once, and its
// history is consistent: each delivery numbered once and filed under the
// worker it went to, and no result but the last one counted.
func TestKillMasterAndWorkerMidBurst(t *testing.T) {
	const (
		n             = 200 // submissions tried, accepted or not
		submitters    = 8
		workerTimeout = 3 * time.Second
	)
	l := newLab(t, withDataVolume(), withMasterEnv("MASTER_WORKER_TIMEOUT", workerTimeout.String()))
	for _, id := range []string{"b1", "b2", "b3"} {
		l.startWorker(id, 2)
	}
	ctx, cancel := context.WithTimeout(l.ctx, 90*time.Second)
	defer cancel()
	start := time.Now()

	// The submitters' own client: the restart moves l.api to a new port
	// while they run.
	var api atomic.Pointer[client.Client]
	api.Store(client.New(l.api.Base))
	var (
		mu       sync.Mutex         // protects accepted and failed
		accepted = map[int]string{} // attempt number -> task ID, for each 202
		failed   = map[int]bool{}   // attempts without a 202; they may still exist
	)
	var nAccepted atomic.Int64
	// The burst is paced, and its last third waits for the kill, so that
	// the kill lands in its middle however fast the master accepts and
	// however slow docker kill is.
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	killed := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		fanOut(ctx, n, submitters, func(i int) {
			if i >= 2*n/3 {
				select {
				case <-killed:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-pace.C:
			case <-ctx.Done():
				return
			}
			tk, err := api.Load().Submit(ctx, burstCmd(i))
			mu.Lock()
			if err == nil {
				accepted[i] = tk.ID
			} else {
				failed[i] = true
			}
			mu.Unlock()
			if err == nil {
				nAccepted.Add(1)
				return
			}
			// The master is down: wait until it answers before the next
			// attempt, so that the burst goes on after the restart.
			_ = client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
				_, err := api.Load().Workers(ctx)
				return err == nil, nil
			})
		})
	})

	if err := client.Poll(ctx, 10*time.Millisecond, func() (bool, error) { return nAccepted.Load() >= n/3, nil }); err != nil {
		t.Fatalf("only %d tasks accepted before the kill: %v", nAccepted.Load(), err)
	}
	victim := l.workers["b2"]
	l.docker("kill", "-s", "KILL", l.master.GetContainerID(), victim.GetContainerID())
	killedAt := nAccepted.Load()
	close(killed)
	if err := victim.Start(ctx); err != nil {
		t.Fatalf("start b2: %v", err)
	}
	l.startMaster()
	api.Store(client.New(l.api.Base))
	t.Logf("master and b2 killed after %d accepted, back %s after the first submission", killedAt, time.Since(start).Round(100*time.Millisecond))
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the burst did not end in time: %v", ctx.Err())
	}
	ids := make([]string, 0, len(accepted))
	for _, id := range accepted {
		ids = append(ids, id)
	}
	t.Logf("%d of %d submissions accepted (%d after the kill), %d failed", len(accepted), n, int64(len(accepted))-killedAt, len(failed))
	if int64(len(accepted)) <= killedAt {
		t.Fatalf("no submission accepted after the restart")
	}
	l.watch(ids...)

	got := l.waitAllFinal(ids)
	t.Logf("all accepted tasks final %s after the first submission", time.Since(start).Round(100*time.Millisecond))
	var redelivered int
	for i, id := range accepted {
		tk := got[id]
		if want := fmt.Sprintf("out-%d\n", i); tk.Status != "succeeded" || tk.Stdout != want {
			t.Errorf("task %d (%s): %s, stdout %q; want succeeded, %q", i, id, tk.Status, tk.Stdout, want)
		}
		checkHistory(t, tk)
		if len(tk.History) > 1 {
			redelivered++
			t.Logf("task %d (%s): %s", i, id, trail(tk))
		}
	}
	t.Logf("%d tasks delivered more than once", redelivered)

	listed := listAll(t, l, url.Values{"limit": {"50"}}) // several pages
	for i, id := range accepted {
		if _, ok := listed[id]; !ok {
			t.Errorf("task %d (%s) accepted but not listed", i, id)
		}
	}
	// A submission whose answer the kill cut off may have been stored; any
	// other task listed came from nowhere.
	mine := map[string]bool{}
	for _, id := range accepted {
		mine[id] = true
	}
	for id, tk := range listed {
		if mine[id] {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(tk.Cmd, "echo out-%d;", &i); err != nil || !failed[i] || burstCmd(i) != tk.Cmd {
			t.Errorf("task %s (%q) is listed but was neither accepted nor a failed submission", id, tk.Cmd)
		}
	}
}

// burstCmd is the command of submission i: its output is its own.
func burstCmd(i int) string { return fmt.Sprintf("echo out-%d; sleep 0.2", i) }

// checkHistory checks that a task's deliveries are consistent: one entry per
// attempt, each attempt number once, each filed under a worker, and only the
// last one's result counted (an earlier success is a duplicate). The task's
// worker is the one whose result counted.
func checkHistory(t *testing.T, tk client.Task) {
	t.Helper()
	if len(tk.History) == 0 || len(tk.History) != tk.Attempts {
		t.Errorf("task %s: %d attempts, history %s; want one entry per attempt", tk.ID, tk.Attempts, trail(tk))
		return
	}
	seen := map[int]bool{}
	for k, h := range tk.History {
		if seen[h.Attempt] {
			t.Errorf("task %s: attempt %d recorded twice: %s", tk.ID, h.Attempt, trail(tk))
		}
		seen[h.Attempt] = true
		if h.WorkerID == "" {
			t.Errorf("task %s: attempt %d has no worker: %s", tk.ID, h.Attempt, trail(tk))
		}
		if k < len(tk.History)-1 && h.Outcome == "succeeded" && !h.Duplicate {
			t.Errorf("task %s: attempt %d succeeded but is not the last nor a duplicate: %s", tk.ID, h.Attempt, trail(tk))
		}
	}
	if last := tk.History[len(tk.History)-1]; tk.Status == "succeeded" && (last.Duplicate || last.WorkerID != tk.Worker()) {
		t.Errorf("task %s: succeeded on %s, but its last delivery is on %s (duplicate %v): %s", tk.ID, tk.Worker(), last.WorkerID, last.Duplicate, trail(tk))
	}
}
