package dispatch

import (
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// assignLocked sends queued tasks to workers with free slots, in rotation
// order, until either runs out.
func (d *Dispatcher) assignLocked() {
	for {
		id, ok := d.queue.peek()
		if !ok {
			return
		}
		if st, ok := d.tasks.status(id); !ok || st != task.StatusQueued { // stale: see leftQueueLocked
			d.queue.popStale()
			continue
		}
		s := d.pickLocked(id)
		if s == nil {
			return // the task at the front stays compact until a worker is free
		}
		d.queue.pop()
		t, _ := d.tasks.get(id)
		now := d.p.Now()
		queuedAt := t.CreatedAt // until its first delivery; then since the last one was lost
		if a := lastAttempt(t); a != nil && !a.FinishedAt.IsZero() {
			queuedAt = a.FinishedAt
		}
		wait := max(now.Sub(queuedAt), 0).Seconds()
		t.Status = task.StatusRunning
		t.WorkerID = s.WorkerID
		t.Attempts++
		t.AssignedAt = now
		t.StartedAt = now // until the worker reports when it really started
		t.History = append(t.History, task.Attempt{
			TaskID: t.ID, N: t.Attempts, WorkerID: s.WorkerID, Outcome: task.OutcomeRunning, AssignedAt: now,
		})
		stored := d.persistLocked(t, lastAttempt(t))
		s.inflight[t.ID] = &hold{attempt: t.Attempts, deadline: d.p.Mono() + t.Timeout + reportGrace}
		s.send(Message{Task: &task.Assignment{ID: t.ID, Cmd: t.Cmd, Timeout: t.Timeout, Attempt: t.Attempts}, stored: stored})
		d.log.Info("task assigned", "task_id", t.ID, "worker_id", s.WorkerID, "attempt", t.Attempts)
		d.emitLocked(events.Event{Type: events.TaskAssigned, Time: now, TaskID: t.ID, WorkerID: s.WorkerID, Attempt: t.Attempts, WaitSeconds: &wait})
	}
}

// pickLocked returns the next worker in the rotation with a free slot and
// moves the rotation past it, or nil when every worker is busy. A worker
// that still holds the task from an earlier delivery is skipped: its slot
// count would not grow, and its assignment buffer could overflow.
func (d *Dispatcher) pickLocked(id string) *Session {
	idx := d.findLocked(id)
	if idx < 0 {
		return nil
	}
	d.next = (idx + 1) % len(d.rotation)
	return d.rotation[idx]
}

// nextLocked returns the index of the worker a new task would go to now, by
// the rule pickLocked follows, or -1 when every worker is busy or draining.
func (d *Dispatcher) nextLocked() int { return d.findLocked("") }

// findLocked returns the index of the first worker, from d.next on in
// rotation order, that can take task id, or -1.
func (d *Dispatcher) findLocked(id string) int {
	n := len(d.rotation)
	for i := range n {
		idx := (d.next + i) % n
		s := d.rotation[idx]
		if _, holds := s.inflight[id]; !holds && !s.draining && len(s.inflight) < s.Slots {
			return idx
		}
	}
	return -1
}
