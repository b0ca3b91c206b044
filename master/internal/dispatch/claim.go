package dispatch

// What a registering worker says it runs (its claims), settled against what
// the master knows of each task: Register's part that reads the store and
// decides, per delivery, to keep it, take it back or have it killed.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// lookUpGone reads from the store the claimed tasks that are not in memory:
// final ones (only those leave memory), or ones the master never had. It
// runs before Register takes the lock, which must not wait for the disk.
// A final task changes again only by a retry by hand, which puts it back
// in memory: claimLocked takes memory's copy of a task live again, and
// what it reads of one still off memory is final either way (a run of it
// is killed).
func (d *Dispatcher) lookUpGone(ctx context.Context, claims []Delivery) (map[string]*task.Task, error) {
	d.mu.Lock()
	var ids []string
	for _, c := range claims {
		if _, live := d.tasks.statusOf(c.TaskID); !live {
			ids = append(ids, c.TaskID)
		}
	}
	d.mu.Unlock()
	gone := make(map[string]*task.Task, len(ids))
	for _, id := range ids {
		t, err := d.p.Store.Get(ctx, id)
		switch {
		case errors.Is(err, task.ErrNotFound):
			gone[id] = nil
		case err != nil:
			return nil, fmt.Errorf("looking up task %s a worker runs: %w", id, err)
		default:
			gone[id] = &t
		}
	}
	return gone, nil
}

// claimLocked settles one delivery a registering worker says it runs: it
// keeps it, takes back a task re-queued meanwhile, or tells the worker to
// kill it. stored is the task as the store has it when it is not live.
func (d *Dispatcher) claimLocked(s *Session, c Delivery, stored *task.Task) {
	log := d.log.With("task_id", c.TaskID, "worker_id", s.WorkerID, "attempt", c.Attempt)
	mono := d.p.Mono()
	var t *task.Task
	if _, live := d.tasks.statusOf(c.TaskID); live {
		t, _ = d.tasks.delivered(c.TaskID) // nil for a task never sent, which stays compact
	} else {
		t = stored
	}
	var a *task.Attempt
	if t != nil {
		a = deliveryOf(t, s.WorkerID, c.Attempt)
	}
	// A slot for the delivery until the worker reports it, whatever happens
	// to the task: the worker runs it, or holds its result, until then.
	h := &hold{attempt: c.Attempt, deadline: mono + d.p.WorkerTimeout + reportGrace, sent: true, claimed: true}
	if a != nil {
		h.attempt = a.N
	}
	s.inflight[c.TaskID] = h
	switch {
	case t == nil, a == nil:
		log.Warn("worker runs a delivery the master did not give it; telling it to kill it")
	case reported(a):
		// Its result is recorded; the worker waits for the acknowledgement
		// of its report, which it will send again.
		log.Debug("reconnecting worker holds a result the master has recorded")
		return
	case a.N <= t.AttemptBase:
		// A run from before the task was retried by hand (canceled, or
		// given up, while this worker was away): the retry runs afresh, so
		// this run is killed, as it would have been had the worker been
		// there for the cancel.
		log.Info("reconnecting worker runs a delivery from before the task's retry by hand; telling it to kill it", "attempt_base", t.AttemptBase)
	case t.Status.Final():
		log.Info("reconnecting worker runs a task that is final; telling it to kill it", "status", t.Status)
	case a.N != t.Attempts:
		// Given to another worker since: both run, the first result wins,
		// and the other delivery is then killed (Report). Its slot counts.
		log.Info("reconnecting worker runs a delivery the master has replaced; the first result wins", "current_attempt", t.Attempts)
		h.deadline = mono + t.Timeout + reportGrace
		return
	case t.Status == task.StatusRunning:
		// Still its delivery: it keeps running it (a master restart, or a
		// reconnect within the claim window).
		h.deadline = mono + t.Timeout + reportGrace
		delete(d.orphans, t.ID)
		// Told as a reclaim, as below: after a master restart nothing else
		// tells of this delivery, and the live output buffers (which start
		// a delivery on its task.assigned) would drop all it prints.
		d.emitLocked(events.Event{Type: events.TaskAssigned, Time: d.p.Now(), TaskID: t.ID, WorkerID: s.WorkerID, Attempt: a.N, Reason: "reclaimed"})
		return
	default:
		// Re-queued when the worker was lost, and not yet sent elsewhere: it
		// stays with this worker instead of running twice.
		h.deadline = mono + t.Timeout + reportGrace
		t.Status = task.StatusRunning
		t.WorkerID = s.WorkerID
		d.queue.remove(t, d.tasks.key(t.ID)) // not left stale: see remove
		a.Outcome, a.Error, a.FinishedAt = task.OutcomeRunning, "", time.Time{}
		d.persistLocked(t, a)
		d.emitLocked(events.Event{Type: events.TaskAssigned, Time: d.p.Now(), TaskID: t.ID, WorkerID: s.WorkerID, Attempt: a.N, Reason: "reclaimed"})
		return
	}
	// Told to kill it now: the grace for the kill's report runs from now,
	// as for a kill sent to a connected worker (killEverywhereLocked).
	h.canceled, h.deadline = true, mono+reportGrace
	s.send(Message{Cancel: c.TaskID})
}

// deliveryOf returns the attempt of t sent to workerID that a claim names:
// attempt n, or the last one sent to that worker when n is 0; nil when
// there is none.
func deliveryOf(t *task.Task, workerID string, n int) *task.Attempt {
	for i := len(t.History) - 1; i >= 0; i-- {
		a := &t.History[i]
		if a.WorkerID == workerID && (n == 0 || a.N == n) {
			return a
		}
	}
	return nil
}
