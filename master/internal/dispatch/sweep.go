package dispatch

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// unendedRun is a run, no task's current delivery, whose end the master
// never heard of before it stopped, waiting for its worker to come back
// holding it.
type unendedRun struct {
	workerID string
	deadline time.Duration // monotonic: when to end it lost
}

// Recover loads the live tasks from the store after a start. Queued tasks
// queue again in their order. Tasks that were running stay with their worker
// for one worker timeout: a worker that reconnects still running one keeps
// it (Register); Sweep re-queues the ones nobody claimed. Runs whose end
// was never reported and that are no task's current delivery (the newest
// run of a final task, canceled or decided by another run while it ran; a
// run from before a retry by hand of a live task) wait the same window for
// their worker to come back holding them, to be told to kill them; else
// they end lost.
func (d *Dispatcher) Recover(ctx context.Context) error {
	live, err := d.p.Store.Live(ctx)
	if err != nil {
		return fmt.Errorf("loading live tasks: %w", err)
	}
	unended, err := d.p.Store.Unended(ctx)
	if err != nil {
		return fmt.Errorf("loading unended runs: %w", err)
	}
	// Histories are read before the lock is taken: nothing waits for the
	// disk under it, even at start.
	histories := make(map[string][]task.Attempt)
	for i := range live {
		if t := &live[i]; t.Attempts > 0 { // Live leaves History out; most queued tasks have none
			full, err := d.p.Store.Get(ctx, t.ID)
			if err != nil {
				return fmt.Errorf("loading task %s: %w", t.ID, err)
			}
			histories[t.ID] = full.History
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	orphaned, scheduled := 0, 0
	// One reading of each clock for every task: the remaining waits all
	// count from the same instant, not from when the loop reaches each
	// task, which for a large backlog is seconds later for the last.
	mono := d.p.Mono()
	grace := mono + d.p.WorkerTimeout
	now := d.p.Now()
	// Queued tasks queue again in the order they were queued. Live gives
	// them by creation; a task that waited for a run time (a delay, a
	// retry's backoff) was queued at that time, after tasks created later,
	// so those few wait in fellDue, by run time, until the first task
	// created after it.
	var fellDue []*task.Task
	pushDue := func(before time.Time) {
		n := 0
		for n < len(fellDue) && (before.IsZero() || fellDue[n].RunAt.Before(before)) {
			d.queue.push(fellDue[n], d.tasks.key(fellDue[n].ID), false)
			n++
		}
		fellDue = fellDue[n:]
	}
	for i := range live {
		t := &task.Task{}
		*t = live[i] // a copy: a pointer into live would keep the whole slice in memory
		t.History = histories[t.ID]
		// A run still going on in the history that is not the task's
		// current delivery is one from before a retry by hand (any other
		// is ended when its task is taken back): the master that stopped
		// waited for its worker to report its kill.
		for _, a := range t.History {
			if a.Outcome == task.OutcomeRunning && !isCurrent(t, a.WorkerID, a.N) {
				d.unended[Delivery{TaskID: t.ID, Attempt: a.N}] = unendedRun{workerID: a.WorkerID, deadline: grace}
			}
		}
		switch t.Status {
		case task.StatusRunning:
			d.orphans[t.ID] = grace
			orphaned++
		case task.StatusScheduled:
			// The wall clock is all that outlives a process: the wait left
			// is counted from it once, then on the monotonic clock.
			d.scheduleLocked(t, t.RunAt, mono+t.RunAt.Sub(now))
			scheduled++
		default:
			if t.RunAt.After(t.CreatedAt) {
				i, _ := slices.BinarySearchFunc(fellDue, t.RunAt, func(f *task.Task, at time.Time) int {
					return cmp.Or(f.RunAt.Compare(at), -1) // after those due at the same time
				})
				fellDue = slices.Insert(fellDue, i, t)
				break
			}
			pushDue(t.CreatedAt)
			d.queue.push(t, d.tasks.key(t.ID), false)
		}
		d.tasks.put(t)
		if t.IdempotencyKey != "" {
			d.keys[t.IdempotencyKey] = t.ID
		}
	}
	pushDue(time.Time{})
	for _, r := range unended {
		d.unended[Delivery{TaskID: r.TaskID, Attempt: r.N}] = unendedRun{workerID: r.WorkerID, deadline: grace}
	}
	d.log.Info("recovered tasks", "live", len(live), "awaiting_their_worker", orphaned, "scheduled", scheduled,
		"unended_runs", len(d.unended))
	return nil
}

// Sweep drops workers whose lease expired (no heartbeat within the worker
// timeout: dead, paused or cut off), gives up deliveries that outlived their
// task's timeout plus a grace without a result, re-queues the tasks of
// workers that did not come back to claim them, queues the scheduled tasks
// that are due, and forgets final tasks that are safely on disk. An owner calls it periodically; tests call it
// after moving the clock. Every duration here is monotonic.
func (d *Dispatcher) Sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.p.Mono()
	expiry := d.p.WorkerTimeout - d.SweepInterval()
	// Every task this sweep takes back, of every worker, goes back at once,
	// oldest first (takeBackAllLocked).
	var back []takeBack
	for _, s := range slices.Clone(d.rotation) {
		if silent := now - s.seenMono; silent > expiry {
			d.log.Warn("worker timed out", "worker_id", s.WorkerID, "silent_for", silent.Round(time.Millisecond))
			why := fmt.Sprintf("it sent no heartbeat for %s", silent.Round(time.Second))
			d.emitLocked(events.Event{Type: events.WorkerTimedOut, WorkerID: s.WorkerID, Reason: "timed_out", Detail: why})
			back = append(back, d.leaveLocked(s, "timed_out", why)...)
			continue
		}
		back = d.expireDeliveriesLocked(s, now, back)
	}
	for id, deadline := range d.orphans {
		if now < deadline {
			continue
		}
		delete(d.orphans, id)
		// A claim of the delivery deletes its entry, so none came: a slot
		// another worker holds for an older delivery of it does not count.
		if t, ok := d.tasks.get(id); ok && t.Status == task.StatusRunning && !d.runsOnItsWorkerLocked(t) {
			d.log.Info("no worker claimed a task whose worker went away", "task_id", id, "worker_id", t.WorkerID)
			back = append(back, takeBack{t: t, reason: "not_reclaimed", why: "its worker " + t.WorkerID + " did not come back to claim it in time"})
		}
	}
	d.takeBackAllLocked(back)
	for k, u := range d.unended {
		if now >= u.deadline {
			delete(d.unended, k)
			d.endUnseenLocked(k.TaskID, u.workerID, k.Attempt,
				fmt.Sprintf("the master restarted while it ran, and worker %s did not come back holding it within %s", u.workerID, d.p.WorkerTimeout))
		}
	}
	d.promoteLocked()
	d.assignLocked()
	d.evictLocked()
}

// expireDeliveriesLocked gives up the deliveries on s whose deadline passed:
// a worker that heartbeats but never reports (or never reads its stream)
// would otherwise pin them, and its slots, forever. The worker is told to
// kill the run, should it still go on, and the task is added to back, to
// be re-queued, or to fail, by the caller (takeBackAllLocked).
func (d *Dispatcher) expireDeliveriesLocked(s *Session, now time.Duration, back []takeBack) []takeBack {
	for id, h := range s.inflight {
		if now < h.deadline || !h.sent {
			continue
		}
		t, ok := d.tasks.get(id)
		if !ok || !isCurrent(t, s.WorkerID, h.attempt) {
			delete(s.inflight, id)
			d.log.Warn("worker never reported a delivery it was told to kill; freeing its slot", "task_id", id, "worker_id", s.WorkerID, "attempt", h.attempt)
			d.endUnseenLocked(id, s.WorkerID, h.attempt, fmt.Sprintf("worker %s never reported the kill within %s", s.WorkerID, reportGrace))
			continue
		}
		d.log.Warn("no result within the task's timeout plus grace; giving the delivery up", "task_id", id, "worker_id", s.WorkerID, "attempt", h.attempt)
		// The run may go on: it keeps its slot, and the task goes to another
		// worker, until the worker reports the kill or one more grace passes.
		h.canceled, h.deadline = true, now+reportGrace
		s.send(Message{Cancel: id})
		back = append(back, takeBack{t: t, reason: "no_result",
			why: fmt.Sprintf("worker %s sent no result within the task's timeout (%s) plus %s", s.WorkerID, t.Timeout, reportGrace)})
	}
	return back
}

// Run sweeps every SweepInterval and queues each scheduled task when it is
// due, until ctx ends. The master's main owns the goroutine that runs it;
// tests call Sweep themselves after moving their clock.
func (d *Dispatcher) Run(ctx context.Context) {
	next := d.p.Mono() + d.SweepInterval()
	t := time.NewTimer(d.SweepInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick: // a timer earlier than the one slept for was set
		}
		now := d.p.Mono()
		if now >= next {
			d.Sweep() // queues the due tasks too
			next = now + d.SweepInterval()
		} else {
			d.mu.Lock()
			d.promoteLocked()
			d.mu.Unlock()
		}
		wake := next
		d.mu.Lock()
		if due, ok := d.timers.next(); ok && due < wake {
			wake = due
		}
		d.mu.Unlock()
		t.Reset(max(wake-d.p.Mono(), time.Millisecond))
	}
}
