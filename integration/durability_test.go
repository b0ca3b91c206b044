package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// These tests break workers and the master the ways production does (a
// SIGKILL, a frozen process, a cut network, a restart, a stop) and check,
// through the API only, the master's promise: every accepted task reaches a
// final state, and a task is delivered more than once only when the worker
// it was on was cut off.

// A worker killed in the middle of a task: the task is re-delivered to
// another worker and succeeds there; its first delivery shows as lost. The
// tasks on the other workers are not disturbed.
func TestKillWorkerMidTask(t *testing.T) {
	l := newLab(t)
	for _, id := range []string{"k1", "k2", "k3"} {
		l.startWorker(id, 1)
	}
	// The task on k1 runs until k1 is killed, however slow the machine
	// (tasks see the worker's WORKER_ID); elsewhere, and when run again,
	// each takes a few seconds, so the others are still running too.
	const victim = "k1"
	var ids []string
	for i := range 3 {
		ids = append(ids, l.submit(fmt.Sprintf(`if [ "$WORKER_ID" = %s ]; then sleep 60; else sleep 3; fi; echo ok-%d`, victim, i)).ID)
	}
	l.watch(ids...)
	killed := "" // the task running on the victim
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	if err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		for _, id := range ids {
			if tk, err := l.api.Get(ctx, id); err == nil && tk.Status == "running" && tk.Worker() == victim {
				killed = id
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no task ran on %s: %v", victim, err)
	}
	l.docker("kill", l.workers[victim].GetContainerID()) // SIGKILL: no goodbye, no report

	got := l.waitAllFinal(ids)
	for i, id := range ids {
		if tk := got[id]; tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("ok-%d\n", i) {
			t.Errorf("task %d: %s, stdout %q", i, tk.Status, tk.Stdout)
		}
	}
	tk := got[killed]
	if tk.Attempts != 2 || len(tk.History) != 2 {
		t.Fatalf("killed task: %d attempts, history %+v; want 2 deliveries", tk.Attempts, tk.History)
	}
	if h := tk.History[0]; h.Outcome != "lost" || h.WorkerID != victim {
		t.Errorf("killed task's first delivery: %s on %s, want lost on %s", h.Outcome, h.WorkerID, victim)
	}
	if h := tk.History[1]; h.Outcome != "succeeded" || h.WorkerID == victim || tk.Worker() != h.WorkerID {
		t.Errorf("killed task's second delivery: %s on %s (task worker %s), want succeeded elsewhere than %s", h.Outcome, h.WorkerID, tk.Worker(), victim)
	}
	checkDeliveries(t, got, killed)
	if ws := l.waitWorkers(2); ws.Has(victim) {
		t.Errorf("killed %s still listed: %v", victim, ws.IDs())
	}
}

// detectionSlack is what a lab test allows beyond MASTER_WORKER_TIMEOUT for
// noticing that the master dropped a worker.
const detectionSlack = 2 * time.Second

// A paused worker sends no heartbeats: the master drops it within
// MASTER_WORKER_TIMEOUT and re-delivers its task. Unpaused, the worker
// rejoins and reports how the first delivery ended (finished, or killed at
// the master's word since the task is final elsewhere); the master records
// that late result as a duplicate and keeps the first final result.
func TestPausedWorkerTimesOutAndRejoins(t *testing.T) {
	l := newLab(t, withMasterEnv("MASTER_WORKER_TIMEOUT", "4s"))
	l.startWorker("pa", 1)
	l.startWorker("pb", 1)
	// The task waits at a gate that the test opens on pb once pa is
	// dropped, and on pa once it is unpaused: so it is running on pa when
	// pa freezes, however slow the machine.
	id := l.submit(gate("paused") + "; echo done").ID
	l.watch(id)
	waitStatus(t, l, id, "running")
	if tk, _ := l.api.Get(l.ctx, id); tk.Worker() != "pa" || tk.Status != "running" {
		t.Fatalf("task %s on %q, want running on pa, the first in the rotation", tk.Status, tk.Worker())
	}

	pa := l.workers["pa"].GetContainerID()
	l.docker("pause", pa)
	paused := time.Now()
	t.Cleanup(func() { _ = exec.Command("docker", "unpause", pa).Run() }) // so that removal can stop it if the test ends early
	// Dropped within MASTER_WORKER_TIMEOUT; the slack covers polling and
	// container overhead, not a longer lease.
	waitWorkerGone(t, l, "pa", 4*time.Second+detectionSlack)
	t.Logf("paused pa dropped after %s", time.Since(paused).Round(100*time.Millisecond))
	l.openGate("paused", "pb")

	tk := l.waitFinal(id)
	if tk.Status != "succeeded" || tk.Worker() != "pb" || tk.Attempts != 2 || tk.Stdout != "done\n" {
		t.Fatalf("task = %s on %s after %d attempts, stdout %q; want succeeded on pb after 2", tk.Status, tk.Worker(), tk.Attempts, tk.Stdout)
	}
	if len(tk.History) != 2 || tk.History[0].Outcome != "lost" || tk.History[0].WorkerID != "pa" {
		t.Fatalf("history = %+v, want pa's delivery lost", tk.History)
	}

	l.docker("unpause", pa)
	l.openGate("paused", "pa")
	waitWorkerBack(t, l, "pa", 30*time.Second)
	late := waitTask(t, l, id, 30*time.Second, "pa's first delivery reported as a duplicate", func(tk client.Task) bool {
		return len(tk.History) > 0 && tk.History[0].Duplicate
	})
	// pa's run ends either way: at the gate, opened before the master's
	// word reaches the rejoined worker, or killed by that word (the task is
	// final elsewhere); both are its late result, and neither may decide.
	if h := late.History[0]; h.Outcome != "succeeded" && h.Outcome != "canceled" || h.WorkerID != "pa" || h.Attempt != 1 {
		t.Errorf("late result: attempt %d on %s, outcome %s; want attempt 1 on pa, succeeded or canceled", h.Attempt, h.WorkerID, h.Outcome)
	}
	if late.Status != "succeeded" || late.Worker() != "pb" || late.Attempts != 2 || late.Stdout != "done\n" || late.History[1].Duplicate {
		t.Errorf("the late result changed the task: %s on %s, %d attempts, stdout %q, history %+v", late.Status, late.Worker(), late.Attempts, late.Stdout, late.History)
	}
}

// A worker cut off the network looks, to the master, like a paused one: it
// is dropped, its task runs elsewhere, and it rejoins once reconnected.
func TestNetworkCutWorker(t *testing.T) {
	l := newLab(t, withMasterEnv("MASTER_WORKER_TIMEOUT", "4s"))
	l.startWorker("na", 1)
	l.startWorker("nb", 1)
	// The task waits at a gate that the test opens on both workers once na
	// is dropped: so it is running on na at the cut, however slow the
	// machine, and na finishes it while still cut off.
	id := l.submit(gate("cut") + "; echo cut").ID
	l.watch(id)
	waitStatus(t, l, id, "running")
	if tk, _ := l.api.Get(l.ctx, id); tk.Worker() != "na" || tk.Status != "running" {
		t.Fatalf("task %s on %q, want running on na, the first in the rotation", tk.Status, tk.Worker())
	}

	na := l.workers["na"].GetContainerID()
	l.docker("network", "disconnect", l.nw.Name, na)
	cut := time.Now()
	waitWorkerGone(t, l, "na", 4*time.Second+detectionSlack)
	t.Logf("cut-off na dropped after %s", time.Since(cut).Round(100*time.Millisecond))
	l.openGate("cut", "nb", "na")

	tk := l.waitFinal(id)
	if tk.Status != "succeeded" || tk.Worker() != "nb" || tk.Attempts != 2 || tk.Stdout != "cut\n" {
		t.Fatalf("task = %s on %s after %d attempts, stdout %q; want succeeded on nb after 2", tk.Status, tk.Worker(), tk.Attempts, tk.Stdout)
	}
	if len(tk.History) != 2 || tk.History[0].Outcome != "lost" || tk.History[0].WorkerID != "na" {
		t.Fatalf("history = %+v, want na's delivery lost", tk.History)
	}

	l.docker("network", "connect", "--alias", "na", l.nw.Name, na)
	waitWorkerBack(t, l, "na", 30*time.Second)
	// na finished its delivery while cut off, and reports it now.
	late := waitTask(t, l, id, 30*time.Second, "na's first delivery reported as a duplicate", func(tk client.Task) bool {
		return len(tk.History) > 0 && tk.History[0].Duplicate
	})
	if late.Status != "succeeded" || late.Worker() != "nb" || late.Stdout != "cut\n" || late.Attempts != 2 {
		t.Errorf("the late result changed the task: %s on %s, %d attempts, stdout %q", late.Status, late.Worker(), late.Attempts, late.Stdout)
	}
	if r := l.waitFinal(l.submit("echo rejoined").ID); r.Status != "succeeded" {
		t.Errorf("task after na rejoined: %s", r.Status)
	}
}

// The master restarted with tasks running and queued: the worker reconnects
// by itself, every task still ends succeeded, and what had finished before
// the restart reads the same after it (the database is on the volume).
func TestMasterRestartLosesNothing(t *testing.T) {
	l := newLab(t, withDataVolume())
	l.startWorker("solo", 1)
	before := l.waitFinal(l.submit("echo before").ID)
	if before.Status != "succeeded" {
		t.Fatalf("task before the restart: %s", before.Status)
	}
	// The long task waits at a gate that the test opens once the master is
	// back: so the quick tasks queue behind it and it runs across the
	// restart, however slow the machine.
	long := l.submit(gate("restart") + "; echo a").ID
	waitStatus(t, l, long, "running")
	ids := []string{before.ID, long}
	for i := range 3 {
		tk := l.submit(fmt.Sprintf("echo q-%d", i))
		if tk.Status != "queued" {
			t.Fatalf("quick task %d: %s, want queued behind the long one", i, tk.Status)
		}
		ids = append(ids, tk.ID)
	}
	l.watch(ids...)

	mounts := "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}"
	if got := l.docker("inspect", "-f", mounts, l.master.GetContainerID()); got != l.volume+":/data" {
		t.Fatalf("master mounts %q, want %s at /data", got, l.volume)
	}
	if tk, err := l.api.Get(l.ctx, long); err != nil || tk.Status != "running" {
		t.Fatalf("long task before the restart: %s, %v; want running", tk.Status, err)
	}
	l.restartMaster()
	l.waitWorkers(1)
	l.openGate("restart", "solo")
	got := l.waitAllFinal(ids)

	want := map[string]string{before.ID: "before\n", long: "a\n", ids[2]: "q-0\n", ids[3]: "q-1\n", ids[4]: "q-2\n"}
	for _, id := range ids {
		if tk := got[id]; tk.Status != "succeeded" || tk.Stdout != want[id] {
			t.Errorf("task %s (%q): %s, stdout %q, want succeeded, %q", id, tk.Cmd, tk.Status, tk.Stdout, want[id])
		}
	}
	if b := got[before.ID]; b.Attempts != 1 || b.Worker() != "solo" || b.FinishedAt == nil || before.FinishedAt == nil || !b.FinishedAt.Equal(*before.FinishedAt) {
		t.Errorf("finished task after the restart: %+v, before it: %+v", b, before)
	}
	// The long task may have been cut off by the restart; the others were
	// queued or done, and are delivered once.
	if tk := got[long]; tk.Attempts > 2 {
		t.Errorf("long task delivered %d times", tk.Attempts)
	} else {
		t.Logf("long task across the restart: %s", trail(tk))
	}
	checkDeliveries(t, got, long)

	listed := listAll(t, l, nil)
	if len(listed) != len(ids) {
		t.Errorf("GET /tasks lists %d tasks, want %d", len(listed), len(ids))
	}
	for _, id := range ids {
		if _, ok := listed[id]; !ok {
			t.Errorf("task %s is missing from GET /tasks after the restart", id)
		}
	}
}

// 2,000 tasks on five workers while two are killed and one is restarted:
// every task succeeds, each is listed once, and only the tasks the broken
// workers held are delivered twice.
func TestChaos2000(t *testing.T) {
	const (
		n           = 2000
		slots       = 2
		concurrency = 16
	)
	l := newLab(t)
	for _, id := range []string{"c1", "c2", "c3", "c4", "c5"} {
		l.startWorker(id, slots)
	}
	ctx, cancel := context.WithTimeout(l.ctx, 4*time.Minute)
	defer cancel()
	start := time.Now()

	ids := make([]string, n)
	var submitted atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		fanOut(ctx, n, concurrency, func(i int) {
			tk, err := l.api.Submit(ctx, "true")
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			ids[i] = tk.ID
			submitted.Add(1)
		})
	})

	// The chaos, spread over the submission.
	afterSubmitted := func(k int64) {
		t.Helper()
		if err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) { return submitted.Load() >= k, nil }); err != nil {
			t.Fatalf("only %d of %d tasks submitted: %v", submitted.Load(), k, err)
		}
	}
	afterSubmitted(300)
	l.docker("kill", l.workers["c1"].GetContainerID())
	afterSubmitted(800)
	stop := 30 * time.Second // it drains: its tasks finish, none re-delivered
	if err := l.workers["c3"].Stop(ctx, &stop); err != nil {
		t.Fatalf("stop c3: %v", err)
	}
	if err := l.workers["c3"].Start(ctx); err != nil {
		t.Fatalf("start c3: %v", err)
	}
	afterSubmitted(1300)
	l.docker("kill", l.workers["c2"].GetContainerID())
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d tasks submitted in %s", n, time.Since(start).Round(100*time.Millisecond))

	// Wait until nothing is queued or running, then read every task.
	var open []client.Task
	err := client.Poll(ctx, 250*time.Millisecond, func() (bool, error) {
		var err error
		open, _, err = l.api.List(ctx, url.Values{"status": {"queued,running"}, "limit": {"10"}})
		return err == nil && len(open) == 0, nil
	})
	if err != nil {
		for _, tk := range open {
			l.watch(tk.ID)
		}
		t.Fatalf("tasks still open after %s: %v", time.Since(start).Round(time.Second), err)
	}
	t.Logf("all %d tasks final %s after the first submission", n, time.Since(start).Round(100*time.Millisecond))

	listed := listAll(t, l, url.Values{"limit": {"1000"}})
	if len(listed) != n {
		t.Errorf("GET /tasks lists %d tasks, want %d", len(listed), n)
	}
	var redelivered []string
	for i, id := range ids {
		tk, ok := listed[id]
		switch {
		case !ok:
			t.Errorf("task %d (%s) accepted but not listed", i, id)
			continue
		case tk.Status != "succeeded":
			t.Errorf("task %d (%s): %s", i, id, tk.Status)
			l.watch(id)
		}
		// A late result (a duplicate) is of a delivery that another one
		// replaced, so Attempts counts both: list entries carry no history.
		if tk.Attempts > 1 {
			redelivered = append(redelivered, id)
		}
	}
	// A killed or restarted worker can have held at most its slots.
	const most = 3 * slots
	t.Logf("%d tasks delivered more than once: %v", len(redelivered), redelivered)
	if len(redelivered) > most {
		t.Errorf("%d tasks delivered more than once, want at most %d (slots of the broken workers)", len(redelivered), most)
	}
	broken := []string{"c1", "c2", "c3"}
	for _, id := range redelivered {
		l.watch(id)
		tk, err := l.api.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("task %s: %s", id, trail(tk))
		for _, h := range tk.History[:max(len(tk.History)-1, 0)] {
			if !slices.Contains(broken, h.WorkerID) {
				t.Errorf("task %s: delivery %d on %s (%s) was repeated, but %s was not broken", id, h.Attempt, h.WorkerID, h.Outcome, h.WorkerID)
			}
		}
	}
}

// Per-task timeout, cancel of a queued and of a running task, ?wait and
// idempotency keys, on one worker with one slot.
func TestTimeoutCancelWaitIdempotency(t *testing.T) {
	l := newLab(t)
	l.startWorker("tw", 1)
	const long = 20 * time.Second // a ?wait that a passing step never needs in full

	t.Run("timeout", func(t *testing.T) {
		tk, _, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "sleep 30", Timeout: "1s", Wait: long})
		if err != nil {
			t.Fatal(err)
		}
		l.watch(tk.ID)
		if tk.Status != "timed_out" || tk.Timeout != "1s" {
			t.Fatalf("sleep 30 with a 1s timeout: status %s, timeout %q; want timed_out", tk.Status, tk.Timeout)
		}
		if len(tk.History) != 1 || tk.History[0].Outcome != "timed_out" {
			t.Errorf("history = %+v, want one delivery, timed_out", tk.History)
		}
		next, _, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo x", Wait: long})
		if err != nil || next.Status != "succeeded" || next.Stdout != "x\n" {
			t.Fatalf("the task after the timeout: %s, stdout %q, %v; the worker should be free", next.Status, next.Stdout, err)
		}
	})

	var busy, queued string
	t.Run("cancel queued", func(t *testing.T) {
		busy = l.submit("sleep 30").ID
		waitStatus(t, l, busy, "running")
		q := l.submit("echo never")
		queued = q.ID
		l.watch(busy, queued)
		if q.Status != "queued" {
			t.Fatalf("second task: %s, want queued behind sleep 30", q.Status)
		}
		tk, code, err := l.api.Cancel(l.ctx, queued)
		if err != nil || code != http.StatusOK || tk.Status != "canceled" || tk.Attempts != 0 || len(tk.History) != 0 {
			t.Fatalf("DELETE queued = %d %+v, %v; want 200, canceled, never delivered", code, tk, err)
		}
	})

	t.Run("cancel running", func(t *testing.T) {
		if busy == "" {
			t.Fatal("the previous subtest left no running task to cancel")
		}
		tk, code, err := l.api.Cancel(l.ctx, busy)
		if err != nil || code != http.StatusOK || tk.Status != "canceled" {
			t.Fatalf("DELETE running = %d %s, %v; want 200, canceled", code, tk.Status, err)
		}
		canceled := time.Now()
		next, _, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo next", Wait: long})
		if err != nil || next.Status != "succeeded" || next.Worker() != "tw" {
			t.Fatalf("the task after the cancel: %s on %s, %v; the killed sleep 30 should have freed the worker", next.Status, next.Worker(), err)
		}
		if d := time.Since(canceled); d > 10*time.Second {
			t.Errorf("the next task finished %s after the cancel: the canceled sleep 30 was not killed", d.Round(time.Second))
		}
		// The canceled delivery ends with the worker's report, no duplicate.
		got := waitTask(t, l, busy, 10*time.Second, "the canceled delivery's outcome", func(tk client.Task) bool {
			return len(tk.History) == 1 && tk.History[0].Outcome != "running"
		})
		if got.Status != "canceled" || got.History[0].Outcome != "canceled" || got.History[0].Duplicate {
			t.Errorf("canceled running task: %s, history %+v", got.Status, got.History)
		}
		if q, err := l.api.Get(l.ctx, queued); err != nil || q.Status != "canceled" || q.Attempts != 0 || len(q.History) != 0 {
			t.Errorf("the canceled queued task after the worker was free: %+v, %v; want it never run", q, err)
		}
	})

	t.Run("cancel final", func(t *testing.T) {
		done := l.waitFinal(l.submit("echo finished").ID)
		for _, id := range []string{done.ID, busy, queued} {
			if id == "" {
				continue
			}
			if tk, code, err := l.api.Cancel(l.ctx, id); err != nil || code != http.StatusConflict {
				t.Errorf("DELETE final task %s = %d %+v, %v; want 409", id, code, tk, err)
			}
		}
		if tk, _ := l.api.Get(l.ctx, done.ID); tk.Status != "succeeded" {
			t.Errorf("after a refused DELETE the task is %s, want still succeeded", tk.Status)
		}
	})

	t.Run("wait", func(t *testing.T) {
		tk, code, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo w", Wait: long})
		if err != nil || code != http.StatusAccepted || tk.Status != "succeeded" || tk.Stdout != "w\n" {
			t.Fatalf("POST ?wait = %d %s, stdout %q, %v; want 202, succeeded, \"w\\n\" in one call", code, tk.Status, tk.Stdout, err)
		}
		// GET ?wait answers as soon as the task is final.
		id := l.submit("sleep 1; echo g").ID
		got, err := l.api.GetWait(l.ctx, id, long)
		if err != nil || got.Status != "succeeded" || got.Stdout != "g\n" {
			t.Fatalf("GET ?wait = %s, stdout %q, %v", got.Status, got.Stdout, err)
		}
	})

	t.Run("idempotency", func(t *testing.T) {
		key := fmt.Sprintf("rhtest-%d", time.Now().UnixNano())
		s := client.Submit{Cmd: "echo idem", IdempotencyKey: key}
		first, code, err := l.api.SubmitWith(l.ctx, s)
		if err != nil || code != http.StatusAccepted || first.Replayed {
			t.Fatalf("first POST = %d, replayed %v, %v; want 202", code, first.Replayed, err)
		}
		again, code, err := l.api.SubmitWith(l.ctx, s)
		if err != nil || code != http.StatusOK || !again.Replayed || again.ID != first.ID {
			t.Fatalf("second POST = %d, replayed %v, id %s (first %s), %v; want 200, Idempotent-Replayed, same task", code, again.Replayed, again.ID, first.ID, err)
		}
		s.Cmd = "echo other"
		if tk, code, err := l.api.SubmitWith(l.ctx, s); code != http.StatusConflict || err == nil {
			t.Fatalf("same key, other cmd = %d %+v, %v; want 409", code, tk, err)
		}
		if tk := l.waitFinal(first.ID); tk.Cmd != "echo idem" || tk.Stdout != "idem\n" || tk.Attempts != 1 {
			t.Errorf("the keyed task: %q, stdout %q, %d attempts; want it run once", tk.Cmd, tk.Stdout, tk.Attempts)
		}
	})
}

// A stopped worker drains: it takes no new task, finishes the one it runs,
// reports it, and exits 0. The task is not re-run.
func TestDrainOnStop(t *testing.T) {
	l := newLab(t)
	l.startWorker("da", 1)
	l.startWorker("db", 1)
	// The task waits at a gate that the test opens once da is seen
	// draining: so it is still running then, however slow the machine.
	id := l.submit(gate("drain") + "; echo drained").ID
	l.watch(id)
	waitStatus(t, l, id, "running")
	if tk, _ := l.api.Get(l.ctx, id); tk.Worker() != "da" {
		t.Fatalf("task went to %q, want da, the first in the rotation", tk.Worker())
	}

	stopped := make(chan error, 1)
	go func() {
		grace := 30 * time.Second // docker stop --time 30: SIGTERM, SIGKILL after 30s
		stopped <- l.workers["da"].Stop(l.ctx, &grace)
	}()
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	var ws client.Workers
	err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		if ws, err = l.api.Workers(ctx); err != nil {
			return false, nil
		}
		if !ws.Has("da") {
			return false, fmt.Errorf("da left before it was seen draining")
		}
		return ws.StateOf("da") == "draining", nil
	})
	if err != nil {
		t.Fatalf("GET /workers never showed da draining (last %+v): %v", ws.Workers, err)
	}
	if tk, err := l.api.Get(l.ctx, id); err != nil || tk.Status != "running" || tk.Worker() != "da" {
		t.Fatalf("task while da drains: %s on %q, %v; want running on da", tk.Status, tk.Worker(), err)
	}
	// While da drains, new tasks go to db only.
	during := l.submit("echo during")
	l.watch(during.ID)
	l.openGate("drain", "da")

	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("stop da: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("da did not stop within 45s")
	}
	tk := l.waitFinal(id)
	if tk.Status != "succeeded" || tk.Worker() != "da" || tk.Attempts != 1 || tk.Stdout != "drained\n" || len(tk.History) != 1 {
		t.Fatalf("drained task = %s on %s after %d attempts, stdout %q, history %+v; want succeeded on da, once", tk.Status, tk.Worker(), tk.Attempts, tk.Stdout, tk.History)
	}
	state, err := l.workers["da"].State(l.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if state.Running || state.ExitCode != 0 {
		t.Errorf("da after the stop: running %v, exit code %d; want exited with 0", state.Running, state.ExitCode)
	}
	if got := l.waitWorkers(1).IDs(); !slices.Equal(got, []string{"db"}) {
		t.Errorf("workers after da stopped: %v, want [db]", got)
	}
	if d := l.waitFinal(during.ID); d.Status != "succeeded" || d.Worker() != "db" {
		t.Errorf("task submitted while da drained: %s on %s, want succeeded on db", d.Status, d.Worker())
	}
	if after := l.waitFinal(l.submit("echo after").ID); after.Status != "succeeded" || after.Worker() != "db" {
		t.Errorf("task after da stopped: %s on %s, want succeeded on db", after.Status, after.Worker())
	}
}

// fanOut calls do(i) for each i in [0, n) from workers goroutines, and
// returns once they have all returned. When ctx ends, the calls not yet
// begun are skipped.
func fanOut(ctx context.Context, n, workers int, do func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range workers {
		wg.Go(func() {
			for i := range next {
				do(i)
			}
		})
	}
	defer close(next)
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			return
		}
	}
}

// checkDeliveries fails the test for each task delivered more than once or
// with a duplicate result, unless it is one of cutOff: the tasks whose worker
// was killed, paused, cut off or restarted.
func checkDeliveries(t *testing.T, tasks map[string]client.Task, cutOff ...string) {
	t.Helper()
	for id, tk := range tasks {
		if slices.Contains(cutOff, id) {
			continue
		}
		if tk.Attempts != 1 || len(tk.History) != 1 || tk.Duplicates() != 0 {
			t.Errorf("task %s (%q): %d attempts, history %+v; want one delivery, no duplicate", id, tk.Cmd, tk.Attempts, tk.History)
		}
	}
}

// trail shows a task's deliveries on one line.
func trail(tk client.Task) string {
	var s []string
	for _, h := range tk.History {
		s = append(s, fmt.Sprintf("#%d %s %s dup=%v", h.Attempt, h.WorkerID, h.Outcome, h.Duplicate))
	}
	return strings.Join(s, ", ")
}

// waitTask polls a task until ok holds, and fails the test after d.
func waitTask(t *testing.T, l *lab, id string, d time.Duration, what string, ok func(client.Task) bool) client.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, d)
	defer cancel()
	var last client.Task
	err := client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		tk, err := l.api.Get(ctx, id)
		if err == nil {
			last = tk
		}
		return err == nil && ok(tk), nil
	})
	if err != nil {
		t.Fatalf("task %s: waited %s for %s; last %+v: %v", id, d, what, last, err)
	}
	return last
}

// waitWorkerGone polls GET /workers until the worker is no longer listed.
func waitWorkerGone(t *testing.T, l *lab, id string, d time.Duration) {
	t.Helper()
	waitWorkersMatch(t, l, d, id+" dropped", func(ws client.Workers) bool { return !ws.Has(id) })
}

// waitWorkerBack polls GET /workers until the worker is listed again.
func waitWorkerBack(t *testing.T, l *lab, id string, d time.Duration) {
	t.Helper()
	waitWorkersMatch(t, l, d, id+" back", func(ws client.Workers) bool { return ws.Has(id) })
}

func waitWorkersMatch(t *testing.T, l *lab, d time.Duration, what string, ok func(client.Workers) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, d)
	defer cancel()
	var last client.Workers
	err := client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		ws, err := l.api.Workers(ctx)
		if err == nil {
			last = ws
		}
		return err == nil && ok(ws), nil
	})
	if err != nil {
		t.Fatalf("waited %s for %s; workers %v: %v", d, what, last.IDs(), err)
	}
}

// listAll reads every page of GET /tasks and returns the tasks by ID,
// failing the test if one is listed twice.
func listAll(t *testing.T, l *lab, q url.Values) map[string]client.Task {
	t.Helper()
	tasks, err := l.api.ListAll(l.ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]client.Task{}
	for _, tk := range tasks {
		if _, dup := all[tk.ID]; dup {
			t.Errorf("task %s listed twice", tk.ID)
		}
		all[tk.ID] = tk
	}
	return all
}
