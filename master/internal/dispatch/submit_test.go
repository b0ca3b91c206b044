package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A task submitted while a worker is free and nothing waits goes to it in
// one write: its row inserted running, with its first attempt. A task that
// has to wait is inserted queued, and its delivery is a second write.
func TestSubmitToAFreeWorkerIsOneWrite(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)

	before := d.p.Store.Counts()
	tk, created, err := d.Submit(ctx, Submission{Cmd: "echo now"})
	if err != nil || !created {
		t.Fatalf("submit: %v (created %v)", err, created)
	}
	// Answered as submitted, like a task that was queued.
	if tk.Status != task.StatusQueued || tk.Attempts != 0 || tk.WorkerID != "" {
		t.Fatalf("answered %s, attempts %d, worker %q; want the task as submitted", tk.Status, tk.Attempts, tk.WorkerID)
	}
	if got := drain(w); len(got) != 1 || got[0] != tk.ID { // its delivery on disk
		t.Fatalf("w got %v, want %s", got, tk.ID)
	}
	after := d.p.Store.Counts()
	if writes, commits := after.Writes-before.Writes, after.Commits-before.Commits; writes != 1 || commits != 1 {
		t.Fatalf("a task for a free worker took %d writes in %d commits to reach it, want 1 in 1", writes, commits)
	}
	onDisk, err := d.p.Store.Get(ctx, tk.ID)
	if err != nil || onDisk.Status != task.StatusRunning || onDisk.Attempts != 1 || onDisk.WorkerID != "w" ||
		len(onDisk.History) != 1 || onDisk.History[0].WorkerID != "w" || onDisk.History[0].N != 1 {
		t.Fatalf("on disk: %+v, %v; want running as w's attempt 1", onDisk, err)
	}

	// w is busy: the next task waits, and is delivered by a write of its own.
	before = d.p.Store.Counts()
	next := submit(t, d, 1)[0]
	if writes := d.p.Store.Counts().Writes - before.Writes; writes != 1 {
		t.Fatalf("a waiting task took %d writes to submit, want 1", writes)
	}
	if st, _ := status(t, d, next); st != task.StatusQueued {
		t.Fatalf("the second task is %s while w is busy, want queued", st)
	}
	before = d.p.Store.Counts()
	if finish(t, d, w, tk.ID, 0) {
		t.Fatal("the first task's result was taken for a duplicate")
	}
	if got := drain(w); len(got) != 1 || got[0] != next {
		t.Fatalf("w got %v after its first task, want %s", got, next)
	}
	// Its result, then its delivery (in one commit or two).
	if writes := d.p.Store.Counts().Writes - before.Writes; writes != 2 {
		t.Fatalf("a result and the next delivery took %d writes, want 2", writes)
	}
}

// Not while another task waits: the new one would overtake it.
func TestSubmitGoesBehindAWaitingTask(t *testing.T) {
	d, _ := newTest(t)
	gpu, _, err := d.Submit(ctx, Submission{Cmd: "train", Requires: map[string]string{"gpu": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	w := register(t, d, "w", 1) // cannot run gpu's task
	before := d.p.Store.Counts()
	id := submit(t, d, 1)[0]
	if got := drain(w); len(got) != 1 || got[0] != id {
		t.Fatalf("w got %v, want %s", got, id)
	}
	// Inserted queued, then delivered: two writes.
	if writes := d.p.Store.Counts().Writes - before.Writes; writes != 2 {
		t.Fatalf("a task submitted behind a waiting one took %d writes, want 2 (queued, then delivered)", writes)
	}
	if st, _ := status(t, d, gpu.ID); st != task.StatusQueued {
		t.Fatalf("the gpu task is %s, want queued", st)
	}
}

// The worker gets a task submitted straight to it only once the task's row
// is on disk, and the submission is answered then too; a master that dies
// after that knows the delivery.
func TestSubmitToAFreeWorkerWaitsForItsWrite(t *testing.T) {
	h := submitHeld(t, "echo held")
	clk, w, unlock, pending, m := h.clk, h.w, h.unlock, h.pending, h.m
	if m.Task == nil {
		t.Fatalf("w got %+v, want a task", m)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := m.Ready(short, w.Done()); err == nil {
		t.Fatal("the task was ready to send while its row could not be stored")
	}
	stillBlocked(t, "the submission", pending)
	unlock()
	a := within(t, "the submission", pending)
	if a.err != nil || a.t.ID != m.Task.ID {
		t.Fatalf("submit: %+v, %v; want %s", a.t, a.err, m.Task.ID)
	}
	if err := m.Ready(ctx, w.Done()); err != nil {
		t.Fatalf("ready once stored: %v", err)
	}

	// The master dies and starts again: w's attempt 1 is known, and w may
	// claim it before anyone else gets the task.
	d2, _ := newOnDB(t, h.path, clk, 100)
	x := register(t, d2, "x", 1)
	if got := drain(x); len(got) != 0 {
		t.Fatalf("x got %v while w may still claim its run", got)
	}
	back := register(t, d2, "w", 1, m.Task.ID)
	if dup, err := d2.Report(ctx, result(t, d2, back, m.Task.ID, 1, 0)); err != nil || dup {
		t.Fatalf("w's report after the restart: dup=%v %v", dup, err)
	}
	if st, worker := status(t, d2, m.Task.ID); st != task.StatusSucceeded || worker != "w" {
		t.Fatalf("the task is %s by %q, want succeeded by w", st, worker)
	}
}

// A store that closes before the row is written refuses the submission:
// the task never existed, and the worker's slot is free again.
func TestSubmitToAFreeWorkerNeverStoredLeavesNothing(t *testing.T) {
	h := submitHeld(t, "echo lost")
	defer h.unlock()
	d, w, pending, m := h.d, h.w, h.pending, h.m
	id := m.Task.ID
	if err := d.p.Store.Close(); err != nil && !errors.Is(err, task.ErrUnavailable) {
		t.Logf("close: %v", err)
	}
	if a := within(t, "the submission", pending); !errors.Is(a.err, task.ErrUnavailable) {
		t.Fatalf("submit: %v, want ErrUnavailable", a.err)
	}
	if err := m.Ready(ctx, w.Done()); err == nil {
		t.Fatal("the task was ready to send though it was never stored")
	}
	// The store is closed: only memory can tell.
	d.mu.Lock()
	_, kept := d.tasks.view(id)
	d.mu.Unlock()
	if kept {
		t.Fatalf("%s is still in memory though it was never stored", id)
	}
	for _, wk := range d.Workers() {
		if wk.Running != 0 {
			t.Fatalf("worker %s runs %d tasks, want its slot free", wk.ID, wk.Running)
		}
	}
}

// A delivery canceled before its stream sent it (here a straight task
// canceled while its insert waits for the disk: its ID is public from the
// events already) gets a deadline when it is sent, as one canceled after:
// a worker that never reports the kill does not hold the slot forever.
func TestDeliveryCanceledBeforeItWasSentStillExpires(t *testing.T) {
	for _, before := range []bool{true, false} {
		t.Run(fmt.Sprintf("canceled before sent %v", before), func(t *testing.T) {
			h := submitHeld(t, "echo x")
			d, clk, w, unlock, pending, m := h.d, h.clk, h.w, h.unlock, h.pending, h.m
			canceled := make(chan error, 1)
			if before {
				go func() { _, err := d.Cancel(ctx, m.Task.ID); canceled <- err }()
				eventually(t, "the task to be canceled", func() bool { st, _ := status(t, d, m.Task.ID); return st == task.StatusCanceled })
			}
			unlock()
			within(t, "the submission", pending)
			if err := m.Ready(ctx, w.Done()); err != nil {
				t.Fatal(err)
			}
			d.Sent(w, *m.Task) // the stream handler sent it
			if before {
				if err := within(t, "the cancel", canceled); err != nil {
					t.Fatal(err)
				}
			} else if _, err := d.Cancel(ctx, m.Task.ID); err != nil {
				t.Fatal(err)
			}
			take(w) // the worker reads the cancel, and never reports the kill
			for range 3 {
				clk.Advance(time.Hour + reportGrace + time.Second)
				d.Heartbeat(w.WorkerID, w.InstanceID, nil)
				d.Sweep()
			}
			if n := d.Workers()[0].Running; n != 0 {
				t.Errorf("w still holds %d slot(s) 3 hours after it was told to kill the task", n)
			}
		})
	}
}

// held is a submission to a free worker caught with its write held: the
// dispatcher has given w the task (m), the store says its write fails, and
// the answer will come on pending once unlock lets the write land.
type held struct {
	d       *Dispatcher
	clk     *fakeClock
	path    string // the database's
	w       *Session
	unlock  func()
	pending <-chan submitAnswer
	m       Message
}

// submitHeld registers w, a worker with one slot, takes the database's
// write lock and submits cmd, which goes straight to w.
func submitHeld(t *testing.T, cmd string) held {
	t.Helper()
	d, clk, path := newFlaky(t)
	w := register(t, d, "w", 1)
	unlock := storetest.HoldWriteLock(t, path)
	pending := goSubmit(d, cmd)
	failing(t, d)
	return held{d: d, clk: clk, path: path, w: w, unlock: unlock, pending: pending, m: nextMessage(t, w)}
}

// A max_backoff given alone that is too short is refused for what it is:
// the error names max_backoff, not a backoff the submission never gave.
func TestTooShortMaxBackoffAloneBlamesMaxBackoff(t *testing.T) {
	d, _ := newTest(t)
	_, err := d.Normalize(Submission{Cmd: "x", RetryOn: []task.Outcome{task.OutcomeFailed}, MaxBackoff: 5 * time.Millisecond})
	if err == nil || !strings.HasPrefix(strings.TrimPrefix(err.Error(), task.ErrInvalid.Error()+": "), "max_backoff") {
		t.Fatalf("max_backoff 5ms alone: %v; want it refused as a max_backoff out of range", err)
	}
}
