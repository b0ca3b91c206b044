package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A worker that stops heartbeating (dead, paused, cut off) is dropped once
// the worker timeout passes, and its task runs elsewhere; one that keeps
// heartbeating stays, however long its task runs.
func TestLeaseExpiryWithInjectedClock(t *testing.T) {
	d, clock := newTest(t)
	silent := register(t, d, "silent", 1)
	alive := register(t, d, "alive", 1)
	ids := submit(t, d, 3) // silent, alive; the third waits
	drain(silent)
	drain(alive)

	clock.Advance(workerTimeout / 2)
	if !d.Heartbeat("alive", alive.InstanceID, nil) {
		t.Fatal("heartbeat of a connected worker: known = false")
	}
	d.Sweep()
	if n := len(d.Workers()); n != 2 {
		t.Fatalf("after half the timeout: %d workers, want 2", n)
	}

	// Silent for the timeout less one sweep interval: the last sweep before
	// the timeout drops it, so detection never takes longer than the timeout.
	clock.Advance(workerTimeout/2 - d.SweepInterval() + time.Millisecond)
	d.Sweep()
	if got := d.Workers(); len(got) != 1 || got[0].ID != "alive" {
		t.Fatalf("at the timeout less a sweep interval: workers %+v, want only alive", got)
	}
	select {
	case <-silent.Done():
	default:
		t.Fatal("the timed-out session was not ended")
	}
	if d.Heartbeat("silent", silent.InstanceID, nil) {
		t.Error("heartbeat of a timed-out worker: known = true, want false so it re-registers")
	}
	// silent's task is first in the queue again; it runs when alive is free.
	finish(t, d, alive, ids[1], 0)
	if got := drain(alive); len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("alive got %v, want the re-queued %s first", got, ids[0])
	}
	tk, _ := d.Get(ctx, ids[0])
	if tk.Attempts != 2 || tk.History[0].Outcome != task.OutcomeLost || !strings.Contains(tk.History[0].Error, "heartbeat") {
		t.Fatalf("history = %+v, want attempt 1 lost for lack of heartbeats", tk.History)
	}
}

// A task whose workers keep vanishing fails after max_attempts deliveries,
// with an error that says why.
func TestMaxAttempts(t *testing.T) {
	d, clk := newTest(t)
	tk, _, err := d.Submit(ctx, Submission{Cmd: "crash-the-worker", MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"a", "b"} {
		s := register(t, d, w, 1)
		if got := drain(s); len(got) != 1 {
			t.Fatalf("%s got %v", w, got)
		}
		lose(d, clk, s)
	}
	got, _ := d.Get(ctx, tk.ID)
	if got.Status != task.StatusFailed || got.Attempts != 2 || !strings.Contains(got.Error, "gave up after 2 attempts") {
		t.Fatalf("task = %s after %d attempts, error %q", got.Status, got.Attempts, got.Error)
	}
	if c := register(t, d, "c", 1); len(drain(c)) != 0 {
		t.Fatal("a failed task was delivered again")
	}
}

func TestCancel(t *testing.T) {
	d, _ := newTest(t)
	ids := submit(t, d, 2) // no worker yet: both queued

	// Queued: never runs.
	c, err := d.Cancel(ctx, ids[0])
	if err != nil || c.Status != task.StatusCanceled || c.Attempts != 0 {
		t.Fatalf("cancel queued = %+v, %v", c, err)
	}
	w := register(t, d, "w", 2)
	if got := drain(w); len(got) != 1 || got[0] != ids[1] {
		t.Fatalf("worker got %v, want only %s", got, ids[1])
	}

	// Running: the worker is told, and its report closes the attempt.
	if c, err = d.Cancel(ctx, ids[1]); err != nil || c.Status != task.StatusCanceled {
		t.Fatalf("cancel running = %+v, %v", c, err)
	}
	if _, cancels := take(w); len(cancels) != 1 || cancels[0] != ids[1] {
		t.Fatalf("cancels sent to the worker: %v, want [%s]", cancels, ids[1])
	}
	r := result(t, d, w, ids[1], 1, -1)
	r.Canceled, r.Error = true, "canceled by the master"
	if dup, err := d.Report(ctx, r); err != nil || dup {
		t.Fatalf("report of the canceled run: dup=%v err=%v", dup, err)
	}
	got, _ := d.Get(ctx, ids[1])
	if got.Status != task.StatusCanceled || got.History[0].Outcome != task.OutcomeCanceled {
		t.Fatalf("after report: %s, history %+v", got.Status, got.History)
	}
	if ws := d.Workers(); ws[0].Running != 0 {
		t.Fatalf("the canceled task still holds a slot: %+v", ws[0])
	}

	// Final: 409.
	if _, err := d.Cancel(ctx, ids[1]); !errors.Is(err, task.ErrConflict) {
		t.Fatalf("cancel of a final task: %v, want ErrConflict", err)
	}
	if _, err := d.Cancel(ctx, "nope"); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("cancel of an unknown task: %v, want ErrNotFound", err)
	}
}

func TestWait(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	id := submit(t, d, 1)[0]
	drain(w)

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if got, err := d.Wait(short, id); err != nil || got.Status != task.StatusRunning {
		t.Fatalf("wait that ends first = %s, %v; want running", got.Status, err)
	}

	done := make(chan task.Task, 1)
	go func() {
		got, _ := d.Wait(ctx, id)
		done <- got
	}()
	finish(t, d, w, id, 0)
	select {
	case got := <-done:
		if got.Status != task.StatusSucceeded {
			t.Fatalf("wait returned %s", got.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return when the task finished")
	}
}

func TestIdempotencyKey(t *testing.T) {
	d, _ := newTest(t)
	first, created, err := d.Submit(ctx, Submission{Cmd: "echo once", IdempotencyKey: "k1"})
	if err != nil || !created {
		t.Fatalf("first = %v, %v", created, err)
	}
	again, created, err := d.Submit(ctx, Submission{Cmd: "echo once", IdempotencyKey: "k1"})
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("same key = %s created %v, %v; want %s", again.ID, created, err, first.ID)
	}
	if _, _, err := d.Submit(ctx, Submission{Cmd: "echo other", IdempotencyKey: "k1"}); !errors.Is(err, task.ErrConflict) {
		t.Fatalf("same key, other command: %v, want ErrConflict", err)
	}
	if w := register(t, d, "w", 5); len(drain(w)) != 1 {
		t.Fatal("the key created more than one task")
	}
}

func TestDrainingWorkerGetsNoTasks(t *testing.T) {
	d, _ := newTest(t)
	a := register(t, d, "a", 5)
	b := register(t, d, "b", 5)
	if _, err := d.Drain("a", a.InstanceID); err != nil {
		t.Fatal(err)
	}
	submit(t, d, 4)
	if got := drain(a); len(got) != 0 {
		t.Fatalf("draining a got %v", got)
	}
	if got := drain(b); len(got) != 4 {
		t.Fatalf("b got %d tasks, want 4", len(got))
	}
	if _, err := d.Drain("ghost", "x"); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("drain of an unknown worker: %v", err)
	}
}

// Drain answers with every delivery the worker holds a slot for, taken or
// not yet (a delivery is sent once on disk, and may reach the worker after
// the answer): the worker waits for those before it closes its stream.
func TestDrainNamesTheDeliveriesTheWorkerHolds(t *testing.T) {
	d, _ := newTest(t)
	a := register(t, d, "a", 5)
	ids := submit(t, d, 2)
	held, err := d.Drain("a", a.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	want := []Delivery{{TaskID: ids[0], Attempt: 1}, {TaskID: ids[1], Attempt: 1}}
	if !slices.Equal(held, want) {
		t.Fatalf("Drain = %v; want %v", held, want)
	}
	// Asked again (the worker retried the call), it answers the same.
	if again, err := d.Drain("a", a.InstanceID); err != nil || !slices.Equal(again, want) {
		t.Fatalf("Drain again = %v, %v; want %v", again, err, want)
	}
}

func TestTimeoutIsSentToTheWorker(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 2)
	if _, _, err := d.Submit(ctx, Submission{Cmd: "sleep 9", Timeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	submit(t, d, 1)
	msgs := w.Take()
	if len(msgs) != 2 {
		t.Fatalf("worker got %d messages, want 2 tasks", len(msgs))
	}
	first, second := msgs[0].Task, msgs[1].Task
	if first.Timeout != 2*time.Second || second.Timeout != time.Hour {
		t.Fatalf("timeouts = %s, %s; want 2s and the default 1h", first.Timeout, second.Timeout)
	}
}

// After a master restart on the same database: queued tasks are queued and
// finished ones readable. A task that was running waits one worker timeout
// for its worker: one that reconnects still running it keeps it; one not
// claimed by then is re-queued, its delivery marked lost.
func TestRecoverAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d1, _ := newOnDB(t, path, clock, 0)
	w := register(t, d1, "w", 2)
	ids := submit(t, d1, 4) // 0 and 1 run on w, 2 and 3 queued
	drain(w)
	finish(t, d1, w, ids[0], 0)
	if got := drain(w); len(got) != 1 || got[0] != ids[2] {
		t.Fatalf("after a slot freed: %v", got)
	}
	// Crash: nothing is closed in order. The store's committed writes are
	// what survives; Flush stands in for "the writes reached the disk".
	if err := d1.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clock, 100)
	for i, want := range []task.Status{task.StatusSucceeded, task.StatusRunning, task.StatusRunning, task.StatusQueued} {
		if st, _ := status(t, d2, ids[i]); st != want {
			t.Errorf("task %d after restart = %s, want %s", i, st, want)
		}
	}
	// Another worker connects first: it gets the queued task, not the ones
	// that are running on w.
	other := register(t, d2, "other", 5)
	if got := drain(other); len(got) != 1 || got[0] != ids[3] {
		t.Fatalf("first worker after restart got %v, want only %s", got, ids[3])
	}
	// w reconnects still running ids[1] only (ids[2] died with it).
	w2 := register(t, d2, "w", 3, ids[1])
	if st, worker := status(t, d2, ids[1]); st != task.StatusRunning || worker != "w" {
		t.Fatalf("claimed task = %s on %q", st, worker)
	}
	clock.Advance(workerTimeout)
	d2.Heartbeat("w", w2.InstanceID, nil)
	d2.Heartbeat("other", other.InstanceID, nil)
	d2.Sweep()
	tk, _ := d2.Get(ctx, ids[2])
	if tk.Status != task.StatusRunning || tk.Attempts != 2 || tk.History[0].Outcome != task.OutcomeLost {
		t.Fatalf("unclaimed task after the grace = %s, attempts %d, history %+v; want re-delivered with attempt 1 lost", tk.Status, tk.Attempts, tk.History)
	}
	if dup := finish(t, d2, w2, ids[1], 0); dup {
		t.Fatal("the claimed task's result counted as duplicate")
	}
	page, err := d2.List(ctx, store.Query{Statuses: []task.Status{task.StatusSucceeded}})
	if err != nil || len(page.Tasks) != 2 {
		t.Fatalf("succeeded after restart = %d tasks, %v; want 2", len(page.Tasks), err)
	}
}

// Regression tests for review findings.

func TestFinalTasksLeaveMemory(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	ids := submit(t, d, 3)
	for _, id := range ids {
		drain(w)
		finish(t, d, w, id, 0)
	}
	if _, err := d.Cancel(ctx, submit(t, d, 1)[0]); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	n, e := d.tasks.len(), len(d.evicting)
	d.mu.Unlock()
	if n != 0 || e != 0 {
		t.Fatalf("in memory: %d tasks, %d evictions pending; want none: every task is final and on disk", n, e)
	}
	if tk, err := d.Get(ctx, ids[0]); err != nil || tk.Status != task.StatusSucceeded {
		t.Fatalf("a finished task read back = %s, %v", tk.Status, err)
	}
}

// A worker reconnects listing a task whose result the master recorded but
// whose acknowledgement it never got: the task holds its slot until the
// worker reports it again, which is acknowledged as already recorded.
func TestReconnectWithFinishedTaskHoldsItsSlotUntilReported(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	id := submit(t, d, 1)[0]
	drain(w)
	finish(t, d, w, id, 0)
	d.Sweep() // the final task leaves memory: the claim is settled from the store
	w2 := register(t, d, "w", 1, id)
	next := submit(t, d, 1)[0]
	if got, cancels := take(w2); len(got) != 0 || len(cancels) != 0 {
		t.Fatalf("after reconnect the worker got tasks %v and cancels %v, want nothing: its one slot holds %s's result", got, cancels, id)
	}
	if dup, err := d.Report(ctx, result(t, d, w2, id, 1, 0)); err != nil || dup {
		t.Fatalf("report again: dup=%v err=%v, want the recorded result acknowledged", dup, err)
	}
	if got := drain(w2); len(got) != 1 || got[0] != next {
		t.Fatalf("after the report the worker got %v, want %s", got, next)
	}
}

// A reconnect on a task's last attempt, with the task still running on
// the worker, must not fail the task.
func TestReconnectOnLastAttemptKeepsTask(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	tk, _, err := d.Submit(ctx, Submission{Cmd: "sleep 5", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	drain(w)
	w2 := register(t, d, "w", 1, tk.ID)
	if st, worker := status(t, d, tk.ID); st != task.StatusRunning || worker != "w" {
		t.Fatalf("after reconnect = %s on %q, want still running on w", st, worker)
	}
	if dup := finish(t, d, w2, tk.ID, 0); dup {
		t.Fatal("its result counted as duplicate")
	}
}

func TestWaitThatEndsLeavesNoWaiter(t *testing.T) {
	d, _ := newTest(t)
	id := submit(t, d, 1)[0]
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	d.Wait(short, id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.waiters) != 0 {
		t.Fatalf("waiters left: %v", d.waiters)
	}
}

// A worker listing, as still running, a queued task it was never sent does
// not get it: it is told to kill what it runs under that ID, and that run
// holds its slot until it reports. The task is delivered by the rules (a
// recorded attempt), and stays compact until then.
func TestWorkerCannotClaimATaskNeverSentToIt(t *testing.T) {
	d, _ := newTest(t)
	ids := submit(t, d, 2) // no worker yet: both queued, never sent
	w := register(t, d, "w", 2, ids[0])
	// ids[0] heads the queue and w, which holds a run under its ID, cannot
	// take it until it reports that run; its free slot takes the next task
	// it can run, ids[1].
	got, cancels := take(w)
	if fmt.Sprint(got) != fmt.Sprint(ids[1:]) || fmt.Sprint(cancels) != fmt.Sprint(ids[:1]) {
		t.Fatalf("w got tasks %v and cancels %v, want %s sent and %s canceled", got, cancels, ids[1], ids[0])
	}
	d.mu.Lock()
	_, compact := d.tasks.queued.get(d.tasks.key(ids[0]))
	d.mu.Unlock()
	if !compact {
		t.Error("the claimed queued task was expanded: it should have stayed compact")
	}
	checkWaiting(t, d, ids[0])
	// The killed run's report is refused (no such delivery), and frees the slot.
	r := result(t, d, w, ids[0], 0, -1)
	r.Canceled = true
	if _, err := d.Report(ctx, r); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("report of the killed run: %v, want ErrNotFound", err)
	}
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint(ids[:1]) {
		t.Fatalf("w got %v, want %s sent as a normal delivery", got, ids[0])
	}
	tk, err := d.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusRunning || tk.WorkerID != "w" || tk.Attempts != 1 || len(tk.History) != 1 {
		t.Fatalf("task %s on %q, attempts %d, history %+v; want running on w as attempt 1", tk.Status, tk.WorkerID, tk.Attempts, tk.History)
	}
}

// A worker listing a task that runs on another worker is told to kill its
// run, which holds its slot until reported; the task stays with the worker
// it was sent to.
func TestWorkerCannotClaimATaskRunningElsewhere(t *testing.T) {
	d, _ := newTest(t)
	var logged syncBuffer
	d.log = slog.New(slog.NewJSONHandler(&logged, nil))
	a := register(t, d, "a", 1)
	id := submit(t, d, 1)[0]
	drain(a)
	b := register(t, d, "b", 1, id)
	if want := fmt.Sprintf(`"task_id":"%s","worker_id":"b"`, id); !strings.Contains(logged.String(), want) {
		t.Errorf("no log line with %s about the refused claim in:\n%s", want, logged.String())
	}
	next := submit(t, d, 1)[0]
	if got, cancels := take(b); len(got) != 0 || fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
		t.Fatalf("b got tasks %v and cancels %v, want only a cancel of %s", got, cancels, id)
	}
	if st, worker := status(t, d, id); st != task.StatusRunning || worker != "a" {
		t.Fatalf("task %s on %q, want still running on a", st, worker)
	}
	if _, err := d.Report(ctx, result(t, d, b, id, 1, -1)); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("b's report: %v, want ErrNotFound: it was never sent the task", err)
	}
	if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{next}) {
		t.Fatalf("b got %v, want %s once its slot is free", got, next)
	}
	if dup := finish(t, d, a, id, 0); dup {
		t.Fatal("a's result counted as duplicate")
	}
}

// A task taken back from a worker that dropped, and not yet sent elsewhere,
// stays with that worker when it reconnects still running it: the same
// delivery, running again, no new assignment.
func TestReconnectReclaimsItsRequeuedTask(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submit(t, d, 1)[0]
	drain(w)
	lose(d, clk, w) // its connection closed: re-queued, no worker to take it
	if st, _ := status(t, d, id); st != task.StatusQueued {
		t.Fatalf("after the drop: %s, want queued", st)
	}
	w2 := register(t, d, "w", 1, id)
	if got := drain(w2); len(got) != 0 {
		t.Fatalf("reconnected worker was sent %v, want nothing: it runs the task already", got)
	}
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusRunning || tk.WorkerID != "w" || tk.Attempts != 1 || len(tk.History) != 1 || tk.History[0].Outcome != task.OutcomeRunning {
		t.Fatalf("task %s on %q, attempts %d, history %+v; want running on w, its one delivery running", tk.Status, tk.WorkerID, tk.Attempts, tk.History)
	}
	checkWaiting(t, d)
	if dup := finish(t, d, w2, id, 0); dup {
		t.Fatal("its result counted as duplicate")
	}
}
