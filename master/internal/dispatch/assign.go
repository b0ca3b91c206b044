package dispatch

import (
	"slices"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// assignLocked sends queued tasks to workers with free slots until either
// runs out. Each time, the most urgent task some free worker can run (by
// priority, then oldest first) goes to the first worker in rotation order,
// from d.next on, that has a free slot and every label it requires.
func (d *Dispatcher) assignLocked() {
	var blocked map[*class]bool                    // classes no free worker can take; free slots only shrink here
	for d.queue.len() > 0 && d.nextLocked() >= 0 { // stale IDs too: they go as the heads are cleaned
		c, pos, idx := d.urgentLocked(&blocked)
		if c == nil {
			return // what waits needs a worker that is busy, or that nobody has
		}
		e := d.queue.take(c, pos)
		s := d.rotation[idx]
		d.next = (idx + 1) % len(d.rotation)
		d.sendLocked(d.tasks.id(e.key), s)
	}
}

// urgentLocked returns the class that holds the most urgent task a free
// worker can run, the task's place in it (0: its head; see
// pastHeldLocked), and the index of that worker, or nil. A class no
// connected worker can serve is passed over at once; only one whose head
// is older than the best found so far has its workers looked at, and one
// found to have no eligible free worker is added to *blocked. A step costs
// at most the classes plus, for some, their eligible workers; never the
// tasks, but for the few past a head that free workers hold.
func (d *Dispatcher) urgentLocked(blocked *map[*class]bool) (*class, int, int) {
	waits := func(k taskKey) bool {
		st, ok := d.tasks.status(k)
		return ok && st == task.StatusQueued
	}
	for level := range d.queue.levels {
		var best *class
		var head int64
		pos, idx := 0, -1
		// By index: cleaning a class may drop it from the level, moving
		// the last class into its place.
		for i := 0; i < len(d.queue.levels[level]); i++ {
			c := d.queue.levels[level][i]
			if (*blocked)[c] || len(d.eligibleOf(c)) == 0 {
				continue
			}
			e, _ := c.q.peek()
			if !waits(e.key) { // a stale head: clean it, then look again
				if d.queue.clean(c, waits); c.q.n == 0 {
					i-- // dropped: another class is at i now
					continue
				}
				e, _ = c.q.peek()
			}
			if best != nil && e.seq >= head {
				continue
			}
			at, w := 0, d.freeAmongLocked(c.eligible, e.key)
			if w < 0 {
				at, e, w = d.pastHeldLocked(c, waits)
			}
			if w < 0 {
				if *blocked == nil {
					*blocked = make(map[*class]bool)
				}
				(*blocked)[c] = true
				continue
			}
			if best != nil && e.seq >= head {
				continue
			}
			best, head, pos, idx = c, e.seq, at, w
		}
		if best != nil {
			return best, pos, idx
		}
	}
	return nil, 0, -1
}

// pastHeldLocked finds, for class c whose head no free worker can take
// because each one that could still holds an older delivery of it (it
// came back running it, or has yet to report its kill), the oldest task
// of c that a free worker can take: its place in c, its entry and the
// index of the worker, or -1. Without it that worker would take a less
// urgent task, or none of c, while it runs that older delivery (up to the
// task's timeout). The walk ends at the first such task: a free worker
// holds fewer deliveries than its slots, so it passes at most those (and
// stale IDs); with no free worker eligible for c it walks nothing.
func (d *Dispatcher) pastHeldLocked(c *class, waits func(k taskKey) bool) (int, entry, int) {
	if !slices.ContainsFunc(c.eligible, func(i int) bool {
		s := d.rotation[i]
		return !s.draining && len(s.inflight) < s.Slots
	}) {
		return 0, entry{}, -1
	}
	for i := 1; i < c.q.n; i++ {
		e := c.q.ring[c.q.at(i)]
		if !waits(e.key) {
			continue
		}
		if w := d.freeAmongLocked(c.eligible, e.key); w >= 0 {
			return i, e, w
		}
	}
	return 0, entry{}, -1
}

// sendLocked hands queued task id to s: its delivery is stored, counted in
// a slot and queued on the worker's stream.
func (d *Dispatcher) sendLocked(id string, s *Session) {
	t, _ := d.tasks.get(id)
	_, assigned := d.deliverLocked(t, s, store.Update, nil)
	d.assignedLocked(assigned)
}

// deliverLocked makes t's next delivery to s: t runs there from now, its
// row is written as k (Update for a task the store has; Insert for one
// submitted straight to a free worker, whose row is written running in the
// first place) with the new attempt, the slot is held, and the assignment
// is queued on the worker's stream, to be sent once the write is on disk.
// It returns that write's commit and the event that tells of the
// assignment, for assignedLocked. With ready nil the stream waits for the
// commit itself; otherwise the caller, who waits for the commit, must pass
// its outcome on to ready.
func (d *Dispatcher) deliverLocked(t *task.Task, s *Session, k store.Kind, ready chan error) (<-chan error, events.Event) {
	now := d.p.Now()
	queuedAt := t.CreatedAt // until its first delivery; then since the last one ended, or its run time
	if a := lastAttempt(t); a != nil && !a.FinishedAt.IsZero() {
		queuedAt = a.FinishedAt
	}
	if t.RunAt.After(queuedAt) {
		queuedAt = t.RunAt
	}
	if t.RetriedAt.After(queuedAt) { // queued again by hand, since its last run or its creation
		queuedAt = t.RetriedAt
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
	stored := d.writeLocked(k, t, lastAttempt(t), store.Insert) // a new delivery
	s.inflight[t.ID] = &hold{attempt: t.Attempts, deadline: d.p.Mono() + t.Timeout + reportGrace}
	m := Message{Task: &task.Assignment{ID: t.ID, Cmd: t.Cmd, Timeout: t.Timeout, Attempt: t.Attempts}, stored: stored}
	if ready != nil {
		m.stored = ready
	}
	s.send(m)
	return stored, events.Event{Type: events.TaskAssigned, Time: now, TaskID: t.ID, WorkerID: s.WorkerID, Attempt: t.Attempts, WaitSeconds: &wait}
}

// assignedLocked logs and publishes an assignment deliverLocked made.
func (d *Dispatcher) assignedLocked(e events.Event) {
	d.log.Info("task assigned", "task_id", e.TaskID, "worker_id", e.WorkerID, "attempt", e.Attempt)
	d.emitLocked(e)
}

// eligibleOf returns the indexes of the workers in the rotation that can
// run c's tasks, worked out again when the rotation changed.
func (d *Dispatcher) eligibleOf(c *class) []int {
	if c.gen == d.rotationGen && c.eligible != nil {
		return c.eligible
	}
	c.eligible, c.gen = c.eligible[:0], d.rotationGen
	if c.eligible == nil {
		c.eligible = []int{}
	}
	for i, s := range d.rotation {
		if labels.Satisfies(s.Labels, c.requires) {
			c.eligible = append(c.eligible, i)
		}
	}
	return c.eligible
}

// freeAmongLocked returns the first of the eligible workers (indexes in the
// rotation, ascending), from d.next on in rotation order, that can take
// task k now, or -1.
func (d *Dispatcher) freeAmongLocked(eligible []int, key taskKey) int {
	// The ID written on the stack, not the heap: this runs for several
	// classes in every assign step.
	var buf [36]byte
	id := d.tasks.ids.appendID(buf[:0], key)
	start, _ := slices.BinarySearch(eligible, d.next)
	for k := range len(eligible) {
		idx := eligible[(start+k)%len(eligible)]
		if s := d.rotation[idx]; s.freeFor(id) {
			return idx
		}
	}
	return -1
}

// free reports whether s can take task id now: it has a free slot, takes
// tasks, and does not hold id already (from an earlier delivery: its slot
// count would not grow).
func (s *Session) free(id string) bool {
	_, holds := s.inflight[id]
	return !holds && !s.draining && len(s.inflight) < s.Slots
}

// freeFor is free with the ID as bytes, looked up without a copy.
func (s *Session) freeFor(id []byte) bool {
	_, holds := s.inflight[string(id)]
	return !holds && !s.draining && len(s.inflight) < s.Slots
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
		if s.free(id) && labels.Satisfies(s.Labels, requires) {
			return idx
		}
	}
	return -1
}
