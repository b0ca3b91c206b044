package dispatch

import (
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// assignLocked sends queued tasks to workers with free slots until either
// runs out. Each time, the most urgent task some free worker can run (by
// priority, then oldest first) goes to the first worker in rotation order,
// from d.next on, that has a free slot and every label it requires.
func (d *Dispatcher) assignLocked() {
	var blocked map[*class]bool // classes no free worker can take; free slots only shrink here
	for d.queue.len() > 0 && d.nextLocked() >= 0 { // stale IDs too: they go as the heads are cleaned
		c, idx := d.urgentLocked(&blocked)
		if c == nil {
			return // what waits needs a worker that is busy, or that nobody has
		}
		e, _ := c.q.peek()
		d.queue.pop(c)
		s := d.rotation[idx]
		d.next = (idx + 1) % len(d.rotation)
		d.sendLocked(e.id, s)
	}
}

// urgentLocked returns the class whose head is the most urgent task that a
// free worker can run, and the index of that worker, or nil. Classes found
// to have no eligible free worker are added to *blocked.
func (d *Dispatcher) urgentLocked(blocked *map[*class]bool) (*class, int) {
	waits := func(id string) bool {
		st, ok := d.tasks.status(id)
		return ok && st == task.StatusQueued
	}
	for level := range d.queue.levels {
		d.queue.clean(level, waits)
		for {
			var best *class
			var head int64
			for _, c := range d.queue.levels[level] {
				if e, _ := c.q.peek(); !(*blocked)[c] && (best == nil || e.seq < head) {
					best, head = c, e.seq
				}
			}
			if best == nil {
				break // on to the next priority
			}
			e, _ := best.q.peek()
			if idx := d.findLocked(best.requires, e.id); idx >= 0 {
				return best, idx
			}
			if *blocked == nil {
				*blocked = make(map[*class]bool)
			}
			(*blocked)[best] = true
		}
	}
	return nil, -1
}

// sendLocked hands queued task id to s: its delivery is stored, counted in
// a slot and queued on the worker's stream.
func (d *Dispatcher) sendLocked(id string, s *Session) {
	t, _ := d.tasks.get(id)
	now := d.p.Now()
	queuedAt := t.CreatedAt // until its first delivery; then since the last one ended, or its run time
	if a := lastAttempt(t); a != nil && !a.FinishedAt.IsZero() {
		queuedAt = a.FinishedAt
	}
	if t.RunAt.After(queuedAt) {
		queuedAt = t.RunAt
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

// nextLocked returns the index of the worker a new task that requires no
// label would go to now, or -1 when every worker is busy or draining.
func (d *Dispatcher) nextLocked() int { return d.findLocked(nil, "") }

// findLocked returns the index of the first worker, from d.next on in
// rotation order, that can take task id: it has a free slot, every label
// in requires, and does not hold the task already (from an earlier
// delivery: its slot count would not grow). -1 when there is none.
func (d *Dispatcher) findLocked(requires map[string]string, id string) int {
	n := len(d.rotation)
	for i := range n {
		idx := (d.next + i) % n
		s := d.rotation[idx]
		if _, holds := s.inflight[id]; !holds && !s.draining && len(s.inflight) < s.Slots && labels.Satisfies(s.Labels, requires) {
			return idx
		}
	}
	return -1
}
