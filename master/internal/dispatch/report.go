package dispatch

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Report records a worker's result for one delivery of a task. The first
// result for a task is final. A result that arrives after the task is final
// (it was re-queued and finished elsewhere) is recorded on its delivery's
// attempt, marked duplicate, and changes nothing else. Report returns once
// the result is on disk, so the worker may forget it, or once ctx ends
// (Pending.Wait), leaving its write queued.
func (d *Dispatcher) Report(ctx context.Context, r task.Result) (duplicate bool, err error) {
	dup, committed, settle, err := d.report(ctx, r)
	p := Pending{d: d, dup: dup, err: err, committed: committed, settle: settle} // on the stack: ReportAsync's costs an allocation
	return p.Wait(ctx)
}

// Pending is a result ReportAsync took whose write may not be on disk yet.
// Wait for it exactly once.
type Pending struct {
	d   *Dispatcher
	dup bool
	err error // refused before any write
	// committed receives the write's outcome (nil: none was needed), or
	// that of a Flush behind an earlier report of the same result.
	committed <-chan error
	settle    *task.Task // the task to settle once committed: its final state is in the write
	polled    bool       // the outcome has been taken from committed into res
	res       error
}

// Committed reports, without waiting, whether Wait would return at once.
func (p *Pending) Committed() bool {
	if p.polled || p.committed == nil || p.err != nil {
		return true
	}
	select {
	case p.res = <-p.committed:
		p.polled = true
		return true
	default:
		return false
	}
}

// Wait returns once the result is on disk (or refused, or its write failed
// for good), with what Report returns, or with ctx's error once ctx ends:
// during a store outage the caller (a worker's stream, ended, or the
// master shutting down) must not wait for the disk. The write stays queued
// and lands when the disk recovers; the caller just cannot say so. The
// task it finishes then leaves memory with the sweep (evictLocked), as
// one nobody waits for.
func (p *Pending) Wait(ctx context.Context) (duplicate bool, err error) {
	if p.err != nil {
		return false, p.err
	}
	if p.committed == nil {
		return p.dup, nil
	}
	if !p.polled {
		select {
		case p.res = <-p.committed:
		case <-ctx.Done():
			if p.settle != nil {
				p.d.mu.Lock()
				p.d.evicting = append(p.d.evicting, eviction{t: p.settle, committed: p.committed})
				p.d.mu.Unlock()
				p.settle = nil
			}
			return p.dup, ctx.Err()
		}
		p.polled = true
	}
	if p.settle != nil {
		t := p.settle
		p.settle = nil
		return p.dup, p.d.settle(t, p.res)
	}
	return p.dup, p.res
}

// ReportAsync does what Report does up to the write, and returns without
// waiting for its commit: a caller with many results (a worker's Report
// stream) takes the next while earlier ones are committed, so that they
// share a group commit. It waits only for a read of a task no longer in
// memory. Its results are acknowledged through Pending.Wait.
func (d *Dispatcher) ReportAsync(ctx context.Context, r task.Result) *Pending {
	dup, committed, settle, err := d.report(ctx, r)
	return &Pending{d: d, dup: dup, err: err, committed: committed, settle: settle}
}

// report is ReportAsync. It returns the write to wait for and the task to
// settle after it.
func (d *Dispatcher) report(ctx context.Context, r task.Result) (bool, <-chan error, *task.Task, error) {
	// The worker bounds its output too, but the master does not rely on a
	// worker's settings for what it stores. Bounding happens before taking
	// d.mu: it copies and checks the UTF-8 of everything the report carries
	// (megabytes per stream, up to the gRPC receive limit), and every
	// submission, assignment and report waits for that lock. It reads only
	// d.p, which never changes after New.
	var out output
	out.stdout, out.stdoutCut = task.Output(r.Stdout, d.maxOutput())
	out.stderr, out.stderrCut = task.Output(r.Stderr, d.maxOutput())
	out.stdoutCut, out.stderrCut = out.stdoutCut || r.StdoutCut, out.stderrCut || r.StderrCut
	l := holder{mu: &d.mu}
	l.lock()
	defer l.release()
	freed := false
	// Only a result for the delivery the slot holds frees it: a late result
	// of an older delivery of the same task must not free the slot of the
	// one the worker runs now.
	if s := d.instanceLocked(r.WorkerID, r.InstanceID); s != nil {
		if h, ok := s.inflight[r.TaskID]; ok && (h.attempt == 0 || h.attempt == r.Attempt) {
			delete(s.inflight, r.TaskID)
			freed = true
		}
	}
	// A freed slot is filled once the result is recorded, so that events
	// tell of the finish before the next assignment on this worker; every
	// way out unlocks through here.
	unlock := func() {
		if freed {
			freed = false
			d.assignLocked()
		}
		l.unlock()
	}
	t, live := d.tasks.get(r.TaskID)
	if !live {
		unlock()
		ft, err := d.p.Store.Get(ctx, r.TaskID) // final, and already off memory
		if err != nil {
			return false, nil, nil, err
		}
		t = &ft
		reportReadHook()
		l.lock()
		if cur, ok := d.tasks.get(r.TaskID); ok {
			// A retry by hand brought it back since the read: the report
			// is of the live task, recorded in its history in memory too,
			// and judged by what it is now (a delivery from before the
			// retry decides nothing).
			t, live = cur, true
		}
	}
	a := attemptFor(t, r)
	if a == nil {
		// Every delivery is on disk before it is sent, so this one never
		// was: a confused or forged worker. Its result must not decide a
		// task, nor take the number of a delivery still to come.
		unlock()
		d.log.Warn("result refused: no such delivery was sent to this worker", "task_id", r.TaskID, "worker_id", r.WorkerID, "attempt", r.Attempt)
		return false, nil, nil, fmt.Errorf("%w: delivery %d of task %s was never sent to worker %s", task.ErrNotFound, r.Attempt, r.TaskID, r.WorkerID)
	}
	if reported(a) {
		// This delivery's result is already recorded: the worker is retrying
		// a report whose acknowledgement it did not get. The first report's
		// write may not have reached the disk yet; writes land in order, so
		// once a barrier behind it has, the result is there.
		dup := a.Duplicate
		unlock()
		return dup, d.p.Store.Apply(), nil, nil // an empty Apply is Flush's barrier
	}
	r.StartedAt, r.FinishedAt = withinDelivery(r.StartedAt, r.FinishedAt, a.AssignedAt, d.p.Now())
	code := r.ExitCode
	if r.Canceled && !t.Status.Final() {
		// The master sends a kill only for a task that is final or a
		// delivery it gave up (replaced, or no result in time), never to
		// cancel a task that goes on: this run's end is no result of the
		// task. The delivery is lost, its end noted; should it still be the
		// current one (its worker took it back before the kill landed), the
		// task is taken back, to run again.
		if isCurrent(t, r.WorkerID, a.N) {
			d.takeBackLocked(t, "killed", "worker "+r.WorkerID+" killed a delivery the master had given up")
		}
		a.Outcome, a.ExitCode, a.Error, a.FinishedAt = task.OutcomeLost, &code, "killed: the master had given this delivery up", r.FinishedAt
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a), AttemptKind: store.Update})
		unlock()
		return false, committed, nil, nil
	}
	if a.N <= t.AttemptBase && !t.Status.Final() {
		// A delivery from before the task was retried by hand (it was
		// canceled, or given up, while this worker was away): the retry
		// runs afresh, and only its own deliveries decide it. The result
		// is recorded on its attempt, as one that came too late.
		a.Outcome, a.ExitCode, a.Error, a.FinishedAt, a.Duplicate = outcomeOf(r), &code, r.Error, r.FinishedAt, true
		d.log.Warn("result of a delivery from before a retry by hand recorded; it decides nothing", "task_id", t.ID, "worker_id", r.WorkerID, "attempt", r.Attempt, "attempt_base", t.AttemptBase)
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a), AttemptKind: store.Update})
		unlock()
		return true, committed, nil, nil
	}
	// A canceled task's running delivery ends with this report, recorded
	// running still or lost once the master stopped waiting for its word
	// (endUnseenLocked); that is no duplicate. Any other report for a
	// final task is, a delivery from before a retry by hand's included
	// (its run was given up then).
	ranWhenCanceled := a.Outcome == task.OutcomeRunning || a.N == t.Attempts && a.WorkerID == t.WorkerID
	dup := t.Status.Final() && !(t.Status == task.StatusCanceled && ranWhenCanceled && a.N > t.AttemptBase)
	a.Outcome, a.ExitCode, a.Error, a.FinishedAt, a.Duplicate = outcomeOf(r), &code, r.Error, r.FinishedAt, dup
	if t.Status.Final() {
		if dup {
			d.log.Warn("duplicate result recorded", "task_id", t.ID, "worker_id", r.WorkerID, "attempt", r.Attempt, "final_worker_id", t.WorkerID)
		}
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a), AttemptKind: store.Update})
		if !live {
			d.diskOnly++ // a write memory does not hold (Retry reads again)
		}
		unlock()
		return dup, committed, nil, nil
	}
	// A retryable outcome of a delivery that is not the current one (lost,
	// then replaced) decides nothing: the task runs, or waits to run, again
	// already, and that is the retry, whether or not it is the last one its
	// budget allows. retryLocked records it on its attempt, a duplicate.
	if retryable := slices.Contains(t.RetryOn, a.Outcome); retryable && !isCurrent(t, r.WorkerID, a.N) ||
		retryable && t.Attempts-t.AttemptBase < t.MaxAttempts {
		dup, committed := d.retryLocked(t, a, r, out, unlock)
		return dup, committed, nil, nil
	}
	d.keepResultLocked(t, a, r, out)
	finished := r.FinishedAt
	if finished.IsZero() {
		finished = d.p.Now()
	}
	d.finishLocked(t, task.Status(a.Outcome), finished) // t may be queued: a result for a delivery the master had taken back
	last := lastAttempt(t)
	replaced := last != a && last.Outcome == task.OutcomeRunning
	var ws []store.Write
	if replaced && !d.holdsLocked(last.WorkerID, t.ID) {
		// Its worker is away: nobody holds the run to report its end
		// (as for a cancel, Cancel). Written with the task's final state,
		// in one transaction, which the ack waits for.
		if w, ok := d.unseenEndLocked(t.ID, last.WorkerID, last.N, "worker "+last.WorkerID+" was away when another delivery decided the task; the kill was never reported"); ok {
			ws = append(ws, w)
		}
	}
	// persistLocked(t, a), with the replaced run's end.
	committed := d.p.Store.Apply(append(ws, store.Write{Task: rowOf(t), Kind: store.Update, Attempt: copyAttempt(a), AttemptKind: store.Update})...)
	// The task is decided: any other run of it has nothing left to do, the
	// delivery that replaced this one (a late result of a lost delivery
	// decided it) or an older one its worker came back still running.
	d.killEverywhereLocked(t.ID)
	run := finished.Sub(t.StartedAt).Seconds()
	d.emitLocked(events.Event{Type: events.TaskFinished, Time: finished, TaskID: t.ID, WorkerID: r.WorkerID, Attempt: a.N,
		Status: string(t.Status), ExitCode: &code, RunSeconds: &run})
	unlock()
	d.log.Info("task finished", "task_id", t.ID, "worker_id", r.WorkerID, "status", t.Status, "exit_code", code)
	return false, committed, t, nil
}

// output is a result's stdout and stderr as the master keeps them: bounded
// (before the lock is taken), each with whether anything was cut.
type output struct {
	stdout, stderr       string
	stdoutCut, stderrCut bool
}

// keepResultLocked makes r, the result of delivery a, t's latest: its
// worker, exit code, output and error, counted for the worker.
func (d *Dispatcher) keepResultLocked(t *task.Task, a *task.Attempt, r task.Result, out output) {
	d.completed[r.WorkerID]++
	t.WorkerID = r.WorkerID
	t.ExitCode = a.ExitCode
	t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut = out.stdout, out.stderr, out.stdoutCut, out.stderrCut
	t.Error = r.Error
	if !r.StartedAt.IsZero() {
		t.StartedAt = r.StartedAt
	}
}

func (d *Dispatcher) maxOutput() int {
	if d.p.MaxOutputBytes <= 0 {
		return math.MaxInt
	}
	return d.p.MaxOutputBytes
}

// outcomeOf classifies a worker's result.
func outcomeOf(r task.Result) task.Outcome {
	switch {
	case r.Canceled:
		return task.OutcomeCanceled
	case r.TimedOut:
		return task.OutcomeTimedOut
	case r.ExitCode == 0 && r.Error == "":
		return task.OutcomeSucceeded
	}
	return task.OutcomeFailed
}

// attemptFor returns the delivery a result answers, by its number and
// worker, or nil when no such delivery was sent.
func attemptFor(t *task.Task, r task.Result) *task.Attempt {
	for i := range t.History {
		if a := &t.History[i]; a.N == r.Attempt && a.WorkerID == r.WorkerID {
			return a
		}
	}
	return nil
}

// reported tells whether a delivery's result is recorded: any outcome but
// running, or lost with its worker's own word on it (the kill of a delivery
// the master had given up).
func reported(a *task.Attempt) bool {
	return a.Outcome != task.OutcomeRunning && (a.Outcome != task.OutcomeLost || a.ExitCode != nil)
}

// retryLocked handles a result whose outcome t's retry policy names, with
// attempts left: when it ends the delivery t runs on, t keeps the result
// and is scheduled to run again after its backoff. Otherwise another
// delivery goes on, or t already waits to run again: the result is recorded
// on its attempt only, as a duplicate, so that the backoff does not count
// it as a retry (it was none: its delivery was lost, and the task ran
// again at once). It leaves the lock through unlock and returns whether
// the result is a duplicate and the write's commit, without waiting for it.
func (d *Dispatcher) retryLocked(t *task.Task, a *task.Attempt, r task.Result, out output, unlock func()) (bool, <-chan error) {
	if !isCurrent(t, r.WorkerID, a.N) {
		a.Duplicate = true
		d.log.Warn("result of a replaced delivery recorded; it decides nothing", "task_id", t.ID, "worker_id", r.WorkerID, "attempt", r.Attempt, "outcome", a.Outcome)
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a), AttemptKind: store.Update})
		unlock()
		return true, committed
	}
	d.keepResultLocked(t, a, r, out)
	wait := d.backoffLocked(t)
	d.scheduleLocked(t, d.p.Now().Add(wait), d.p.Mono()+wait)
	committed := d.persistLocked(t, a)
	why := fmt.Sprintf("attempt %d of %d %s (exit code %d); the next runs after %s", a.N-t.AttemptBase, t.MaxAttempts, a.Outcome, *a.ExitCode, wait.Round(time.Millisecond))
	d.log.Info("task scheduled to retry", "task_id", t.ID, "worker_id", r.WorkerID, "attempt", a.N, "outcome", a.Outcome, "run_at", t.RunAt)
	// A copy: the event outlives this schedule (the hub keeps it for
	// readers resuming, who read it without d.mu), and t's next retry
	// sets t.RunAt again.
	runAt := t.RunAt
	d.emitLocked(events.Event{Type: events.TaskScheduled, TaskID: t.ID, Cmd: shorten(t.Cmd), WorkerID: r.WorkerID, Attempt: a.N, Status: string(a.Outcome),
		ExitCode: a.ExitCode, Priority: priorityOf(t), Requires: t.Requires, RunAt: &runAt, Reason: "retry", Detail: why})
	unlock()
	return false, committed
}

// backoffLocked is the wait before t's next try: Backoff doubled for each
// retry since its budget began, at most MaxBackoff, less up to a fifth at
// random, so that tasks that failed together do not all retry together.
// A retry is a delivery that ended in an outcome RetryOn names (the one
// just recorded included); one lost with its worker is none, even when its
// result comes later (a duplicate: retryLocked).
func (d *Dispatcher) backoffLocked(t *task.Task) time.Duration {
	retries := 0
	for _, a := range t.History {
		if a.N > t.AttemptBase && !a.Duplicate && slices.Contains(t.RetryOn, a.Outcome) {
			retries++
		}
	}
	w := t.Backoff
	for range retries - 1 {
		if w >= t.MaxBackoff {
			break
		}
		w *= 2
	}
	w = min(w, t.MaxBackoff)
	return w - time.Duration(d.rand()*float64(w)/5)
}

// withinDelivery keeps a worker's start and finish times (zero: none)
// between when the master sent the delivery and now, both on the master's
// clock: a worker's clock that is behind would otherwise date a result
// before its task was assigned, and retention, which counts from
// finished_at on the master's clock, would delete a result a worker a
// month behind just reported. A clock in step changes nothing.
func withinDelivery(started, finished, assigned, now time.Time) (time.Time, time.Time) {
	clamp := func(t, lo, hi time.Time) time.Time {
		switch {
		case t.IsZero():
			return t
		case t.Before(lo):
			return lo
		case t.After(hi):
			return hi
		}
		return t
	}
	if now.Before(assigned) {
		// The master's clock stepped back since it sent the delivery: it
		// bounds nothing above, and the worker's times stand.
		now = task.LastTime
	}
	finished = clamp(finished, assigned, now)
	end := now
	if !finished.IsZero() {
		end = finished
	}
	return clamp(started, assigned, end), finished
}

// reportReadHook runs in report between its read of a task off memory and
// taking the lock; tests set it to retry the task by hand there.
var reportReadHook = func() {}
