package dispatch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Get returns a copy of the task with the given ID.
func (d *Dispatcher) Get(ctx context.Context, id string) (task.Task, error) {
	d.mu.Lock()
	t, ok := d.tasks.view(id)
	if ok {
		t.WaitingFor = d.waitingForLocked(&t)
		d.mu.Unlock()
		return t, nil
	}
	d.mu.Unlock()
	return d.p.Store.Get(ctx, id)
}

// Wait returns the task once it is final, or as it is when ctx ends.
func (d *Dispatcher) Wait(ctx context.Context, id string) (task.Task, error) {
	d.mu.Lock()
	t, ok := d.tasks.view(id)
	if !ok || t.Status.Final() {
		d.mu.Unlock()
		return d.Get(ctx, id)
	}
	ch := make(chan struct{})
	d.waiters[id] = append(d.waiters[id], ch)
	d.mu.Unlock()
	select {
	case <-ch:
	case <-d.closedCh:
		d.dropWaiter(id, ch)
	case <-ctx.Done():
		d.dropWaiter(id, ch)
	}
	// The caller's wait is over; the answer still needs a live context.
	return d.Get(context.WithoutCancel(ctx), id)
}

func (d *Dispatcher) dropWaiter(id string, ch chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ws := slices.DeleteFunc(d.waiters[id], func(c chan struct{}) bool { return c == ch })
	if len(ws) == 0 {
		delete(d.waiters, id)
	} else {
		d.waiters[id] = ws
	}
}

// Query and Page are the store's, named here so that transports need not
// know the store is there.
type (
	Query = store.Query
	Page  = store.Page
)

// List returns a page of tasks, newest first, as committed to the store:
// it waits for the writes queued before it, so that it shows what the
// dispatcher has told. While writes fail (a full disk) it does not wait,
// which would be until the disk recovers, and lists what is on disk.
func (d *Dispatcher) List(ctx context.Context, q Query) (Page, error) {
	if d.p.Store.WriteErr() == nil {
		if _, err := d.waitLanded(ctx, d.p.Store.Apply()); err != nil { // an empty Apply is Flush's barrier
			return Page{}, err
		}
	}
	p, err := d.p.Store.List(ctx, q)
	if err != nil {
		return p, err
	}
	// The store does not keep why a task waits: say it as Get does, of
	// each entry as listed, so that an entry is the task as GET shows it.
	d.mu.Lock()
	for i := range p.Tasks {
		if t := &p.Tasks[i]; !t.Status.Final() {
			t.WaitingFor = d.waitingForLocked(t)
		}
	}
	d.mu.Unlock()
	return p, nil
}

// landedPoll is how often a read that waits for the writes queued before
// it asks whether they have started to fail.
const landedPoll = 50 * time.Millisecond

// waitLanded waits for landed, a barrier the store answers once the writes
// queued before it land, unless writes fail meanwhile: it returns then with
// the store's WriteErr as failing. A write that meets a full disk or another
// process's lock is tried for SQLite's busy timeout before the store knows
// it fails, and a read that came meanwhile would otherwise wait until the
// disk recovers.
func (d *Dispatcher) waitLanded(ctx context.Context, landed <-chan error) (failing, err error) {
	tick := time.NewTicker(landedPoll)
	defer tick.Stop()
	for {
		select {
		case err := <-landed:
			return nil, err
		case <-tick.C:
			if f := d.p.Store.WriteErr(); f != nil {
				return f, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Cancel ends a task: a queued one never runs, a running one is killed on
// its worker. A final task cannot be canceled (ErrConflict).
func (d *Dispatcher) Cancel(ctx context.Context, id string) (task.Task, error) {
	// Unlike a submission, a cancel is not refused while writes fail: a
	// task filling the disk is what one may well want to stop then. It
	// takes effect at once (the worker is told to kill) and answers once
	// its write lands.
	l := holder{mu: &d.mu}
	l.lock()
	defer l.release()
	if d.closed {
		return task.Task{}, task.ErrClosed
	}
	t, ok := d.tasks.get(id)
	if !ok || t.Status.Final() {
		l.unlock()
		ft, err := d.Get(ctx, id)
		if err != nil {
			return task.Task{}, err
		}
		return ft, fmt.Errorf("%w: task %s is already %s", task.ErrConflict, id, ft.Status)
	}
	wasOn := ""
	// Every run of it is killed: the current delivery's, and an older one
	// a worker came back still running. Each keeps its slot until its
	// worker reports the kill; a worker that is away now is told when it
	// comes back and lists the task (claimLocked).
	d.killEverywhereLocked(id)
	switch t.Status {
	case task.StatusRunning:
		wasOn = t.WorkerID
		t.Error = "canceled while running on " + t.WorkerID
	case task.StatusScheduled:
		t.Error = "canceled while scheduled to run at " + t.RunAt.Format(time.RFC3339)
	default:
		t.Error = "canceled before it ran"
	}
	d.finishLocked(t, task.StatusCanceled, d.p.Now())
	var ws []store.Write
	if wasOn != "" && !d.holdsLocked(wasOn, id) {
		// Nobody holds the run to report its end: its worker is away, and
		// may come back to report the kill (claimLocked) or may not. Its
		// end is written with the task's final state, in one transaction:
		// the answer waits for both, and a master stopped between two
		// would find the task running on a delivery its history ended.
		if w, ok := d.unseenEndLocked(id, wasOn, t.Attempts, "canceled while worker "+wasOn+" was away; the kill was never reported"); ok {
			ws = append(ws, w)
		}
	}
	committed := d.p.Store.Apply(append(ws, store.Write{Task: rowOf(t), Kind: store.Update})...) // persistLocked(t, nil), with the run's end
	c := copyTask(t)
	d.emitLocked(events.Event{Type: events.TaskCanceled, Time: t.FinishedAt, TaskID: id, WorkerID: wasOn, Status: string(task.StatusCanceled)})
	l.unlock()
	d.log.Info("task canceled", "task_id", id, "worker_id", wasOn)
	return c, d.settle(t, <-committed)
}

// Retry runs a final task again as a new attempt: it is queued with a
// fresh budget of MaxAttempts deliveries, and keeps its history. A task
// that is not final is a conflict. It returns once the change is on disk.
func (d *Dispatcher) Retry(ctx context.Context, id string) (task.Task, error) {
	if err := d.p.Store.WriteErr(); err != nil {
		return task.Task{}, fmt.Errorf("%w: the database is not accepting writes (%v); retry later", task.ErrUnavailable, err)
	}
	var (
		t, ft    *task.Task // in memory; read off disk
		seen     uint64     // d.diskOnly before that read
		fromDisk bool
	)
	l := holder{mu: &d.mu}
	l.lock()
	defer l.release()
	for {
		if cur, ok := d.tasks.get(id); ok {
			t = cur // in memory (still, or again: another retry came first)
			break
		}
		if ft != nil && d.diskOnly == seen {
			t, fromDisk = ft, true
			break
		}
		// Final and off memory: read it, history and all, without the
		// lock; again should a write for a task off memory (a late result
		// of this one, say) have been queued meanwhile, since the retry
		// puts the task in memory as read, where that write would be
		// missing. Each read waits for the writes queued before it to
		// land, the first read's too: one queued before the retry came
		// (a report not yet committed) is counted in seen already, and
		// the read must see it. A barrier queued under the lock is behind
		// them all; it costs no commit of its own.
		seen = d.diskOnly
		landed := d.p.Store.Apply()
		l.unlock()
		failing, err := d.waitLanded(ctx, landed)
		if err != nil {
			return task.Task{}, err
		}
		if failing != nil {
			return task.Task{}, fmt.Errorf("%w: the database is not accepting writes (%v); retry later", task.ErrUnavailable, failing)
		}
		got, err := d.p.Store.Get(ctx, id)
		if err != nil {
			return task.Task{}, err
		}
		ft = &got
		retryReadHook()
		l.lock()
	}
	if d.closed {
		return task.Task{}, task.ErrClosed
	}
	if !t.Status.Final() {
		return task.Task{}, fmt.Errorf("%w: task %s is %s; only a final task can be retried", task.ErrConflict, id, t.Status)
	}
	// A retried task waits in the queue as a new one does: the same bound.
	if d.queueFullLocked() {
		return task.Task{}, fmt.Errorf("%w: %d tasks are queued or scheduled, the most MASTER_MAX_QUEUED allows; retry later", task.ErrFull, d.p.MaxQueued)
	}
	// An ID of this task left in its class when it stopped waiting (canceled
	// or decided while queued) would stand for it again once it is queued:
	// the retry would run from the place it had then. Sweep the class's
	// stale IDs out first (a cost of its length, only when it has some), so
	// that the retry waits at the back, as it is queued now.
	if c := d.queue.classes[keyOf(t)]; c != nil && c.q.stale > 0 {
		d.queue.keep(c, func(k taskKey) bool {
			st, ok := d.tasks.status(k)
			return ok && st == task.StatusQueued
		})
	}
	if !fromDisk {
		// Final and still in memory: whoever made it final (a cancel, a
		// result, a failure out of attempts) drops it from memory once
		// that write lands, unless memory holds another task then
		// (forgetLocked). The retry is that other task: it may be final
		// again by then, with writes of its own still to land.
		c := copyTask(t)
		t = &c
	}
	was := t.Status
	t.Status = task.StatusQueued
	t.AttemptBase = t.Attempts
	t.WorkerID, t.ExitCode, t.Error = "", nil, ""
	t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut = "", "", false, false
	// Of the run before (the history keeps them): the retry is queued now,
	// neither scheduled (run_at) nor sent.
	t.RunAt, t.AssignedAt, t.StartedAt, t.FinishedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	t.RetriedAt = d.p.Now() // its wait in the queue counts from now
	d.tasks.put(t)
	if t.IdempotencyKey != "" {
		d.keys[t.IdempotencyKey] = t.ID
	}
	d.queue.push(t, d.tasks.key(t.ID), false)
	// A retention round may have deleted it, attempts and all: since it
	// was read without the lock, or while it waited in memory, final, to
	// be dropped (its finished_at, a worker's clock, may be older than
	// MASTER_RETENTION). Its history goes with it, each attempt upserted if
	// gone in the same transaction, so that the retry puts back whatever
	// that took rather than a task without its past runs.
	committed := d.restoreLocked(t)
	d.log.Info("task retried by hand", "task_id", id, "was", was, "attempts_so_far", t.Attempts)
	d.emitLocked(events.Event{Type: events.TaskRetried, TaskID: id, Status: string(was), Attempt: t.Attempts})
	d.emitLocked(events.Event{Type: events.TaskQueued, TaskID: id, Cmd: shorten(t.Cmd), Priority: priorityOf(t), Requires: t.Requires, Reason: "retried"})
	c := copyTask(t)
	c.WaitingFor = d.waitingForLocked(&c)
	d.assignLocked()
	l.unlock()
	if err := <-committed; err != nil {
		return c, err
	}
	return c, nil
}

// retryReadHook runs in Retry between its read of a task off memory and
// taking the lock; tests set it to run a retention round there.
var retryReadHook = func() {}
