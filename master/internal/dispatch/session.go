package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// Session is one registered worker stream. The grpcapi handler that
// registered it sends what Take returns, and calls Unregister when its
// stream ends.
type Session struct {
	WorkerID    string
	InstanceID  string
	Slots       int
	Labels      map[string]string // never changed after Register
	ConnectedAt time.Time

	// The dispatcher queues messages here under its own lock and never
	// waits for the handler: the outbox grows instead. It holds at most one
	// task per slot plus the cancels, so it stays small.
	outMu  sync.Mutex // protects outbox; taken after Dispatcher.mu, never before
	outbox []Message
	wake   chan struct{} // cap 1: a message was queued
	done   chan struct{} // closed by the dispatcher when it ends the session

	// Guarded by Dispatcher.mu:
	inflight map[string]*hold // task ID -> the delivery the worker holds a slot for
	lastSeen time.Time        // registration or last heartbeat, wall time, for people
	seenMono time.Duration    // the same on the monotonic clock, for the lease
	draining bool             // takes no new tasks
}

// hold is a worker's slot for one delivery of a task. A worker runs at most
// one delivery of a task at a time (it refuses a second), so the task ID
// names the slot, and the attempt says which delivery it is for: a result
// frees the slot only if it answers that delivery.
type hold struct {
	attempt  int           // 0: unknown (a claim from a worker that did not say)
	deadline time.Duration // monotonic; past it the master gives up on the delivery
	canceled bool          // the worker was told to kill it
	claimed  bool          // listed by the worker when it registered, not sent
	// sent: the worker has the delivery (its stream handler sent it, or the
	// worker listed it). Only then does the deadline run: a delivery that
	// waits for its write during a store outage is not the worker's fault.
	sent bool
}

// Message is one thing to send on a worker's stream: a task to run, or the
// ID of a task to kill.
type Message struct {
	Task   *task.Assignment // nil for a cancel
	Cancel string
	// stored receives the commit of the task's delivery. A task is sent only
	// once its delivery is on disk, so that a master crash cannot forget an
	// attempt a worker is running.
	stored <-chan error
}

// Ready waits until m may be sent: for a task, until its delivery is on
// disk. It returns early with an error when done is closed or ctx ends, and
// with the store's error if the delivery could not be stored.
func (m Message) Ready(ctx context.Context, done <-chan struct{}) error {
	if m.stored == nil {
		return nil
	}
	select {
	case err := <-m.stored:
		return err
	case <-done:
		return errors.New("session ended")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wake receives when messages were queued for Take.
func (s *Session) Wake() <-chan struct{} { return s.wake }

// Done is closed when the dispatcher ends the session: the same worker
// reconnected, it timed out, or the master is shutting down.
func (s *Session) Done() <-chan struct{} { return s.done }

// Take returns the messages queued for the worker, oldest first, and
// empties the queue.
func (s *Session) Take() []Message {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	out := s.outbox
	s.outbox = nil
	return out
}

// send queues m for the worker without waiting.
func (s *Session) send(m Message) {
	s.outMu.Lock()
	s.outbox = append(s.outbox, m)
	s.outMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// Delivery names one delivery of a task: the task and its attempt number.
// (task ID, attempt) is unique across master restarts, since a delivery is
// on disk before it is sent.
type Delivery struct {
	TaskID  string
	Attempt int // 0: unknown, taken as the last delivery sent to that worker
}

// Registration is what a worker says when it connects.
type Registration struct {
	WorkerID   string
	InstanceID string
	Slots      int
	Running    []Delivery        // deliveries the worker still runs, or holds an unacknowledged result of
	Labels     map[string]string // capabilities; a task runs only where its Requires are all here
}

// Register adds a worker at the end of the rotation and returns its session
// and its 0-based place in the rotation. A reconnect from the same process
// (same instance ID) replaces its stale session; another process claiming a
// connected worker's ID gets ErrConflict.
//
// Every delivery the worker lists holds one of its slots until it reports
// it. One the master still counts on (running on this worker) is kept, and
// so is one given to another worker since (the first result wins); one of
// a task that is final, or that the master never sent this worker, is
// cancelled: the worker is told to kill it.
func (d *Dispatcher) Register(ctx context.Context, r Registration) (*Session, int, error) {
	gone, err := d.lookUpGone(ctx, r.Running)
	if err != nil {
		return nil, 0, err
	}
	if err := labels.Validate(r.Labels); err != nil {
		return nil, 0, fmt.Errorf("%w: worker labels: %v", task.ErrInvalid, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, 0, task.ErrClosed
	}
	if old := d.sessionLocked(r.WorkerID); old != nil {
		if old.InstanceID != r.InstanceID {
			return nil, 0, fmt.Errorf("%w: worker ID %q is already connected from another process", task.ErrConflict, r.WorkerID)
		}
		d.log.Info("worker replaced its stale session", "worker_id", r.WorkerID)
		// The tasks it still runs move to the new session: not lost, not re-queued.
		for _, c := range r.Running {
			if h, ok := old.inflight[c.TaskID]; ok && (h.attempt == 0 || c.Attempt == 0 || h.attempt == c.Attempt) {
				delete(old.inflight, c.TaskID)
			}
		}
		d.endLocked(old, "replaced", "replaced by a new connection")
	}
	now, mono := d.p.Now(), d.p.Mono()
	s := &Session{
		WorkerID:    r.WorkerID,
		InstanceID:  r.InstanceID,
		Slots:       r.Slots,
		Labels:      maps.Clone(r.Labels),
		ConnectedAt: now,
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		inflight:    make(map[string]*hold, min(r.Slots, 64)), // sized for the usual few slots, not for any claim
		lastSeen:    now,
		seenMono:    mono,
	}
	d.rotation = append(d.rotation, s)
	d.rotationGen++
	pos := len(d.rotation) - 1
	// Told before its claims, so that a follower knows the worker a
	// reclaim (task.assigned) names.
	d.log.Info("worker joined", "worker_id", r.WorkerID, "slots", r.Slots, "labels", labels.String(r.Labels), "position", pos, "still_running", len(r.Running))
	d.emitLocked(events.Event{Type: events.WorkerJoined, Time: now, WorkerID: r.WorkerID, Slots: r.Slots, Position: &pos})
	for _, c := range r.Running {
		d.claimLocked(s, c, gone[c.TaskID])
	}
	// Its tasks that wait for it to claim them and that it did not list it
	// does not hold (a worker lists every delivery it holds: this is a new
	// process, or the delivery never reached it). No other worker can claim
	// them, so they go back to the queue now, not once the window closes.
	var without []takeBack
	for id := range d.orphans {
		if t, ok := d.tasks.get(id); ok && t.Status == task.StatusRunning && t.WorkerID == r.WorkerID && !d.runsOnItsWorkerLocked(t) {
			delete(d.orphans, id)
			d.log.Info("worker came back without a task that waited for it", "task_id", id, "worker_id", r.WorkerID)
			without = append(without, takeBack{t: t, reason: "not_reclaimed", why: "its worker " + r.WorkerID + " came back without it"})
		}
	}
	d.takeBackAllLocked(without)
	// Unended runs (Recover) it did not list are over: it lists every
	// delivery it holds. One it listed was told to kill (claimLocked) and
	// holds a slot until it reports the kill or the grace passes.
	for k, u := range d.unended {
		if u.workerID != r.WorkerID {
			continue
		}
		delete(d.unended, k)
		h, held := s.inflight[k.TaskID]
		if held && h.attempt == 0 {
			// Claimed without its number, and its task left memory between
			// lookUpGone and the lock, so claimLocked could not tell which
			// delivery: the one this worker was running is this one.
			h.attempt = k.Attempt
		}
		if !held || h.attempt != k.Attempt {
			d.endUnseenLocked(k.TaskID, u.workerID, k.Attempt,
				"the master restarted while it ran, and worker "+u.workerID+" came back without it")
		}
	}
	d.assignLocked()
	return s, pos, nil
}

// reportGrace is how long past a delivery's timeout the master waits for
// its result before it gives the delivery up: the worker's kill, and a
// report that is retried, take that long at worst.
const reportGrace = 30 * time.Second

// Heartbeat renews a worker's lease. It reports false when the master has
// no session for that worker process, which should then register again.
//
// holding, when not nil, is what the worker holds now. A delivery it
// listed when it registered, other than the one its task runs on now, and
// that it no longer holds, frees its slot: its result was acknowledged
// between the worker's list and its registration (the master may have read
// the task before that result), and no report of it will come again.
func (d *Dispatcher) Heartbeat(workerID, instanceID string, holding []Delivery) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.instanceLocked(workerID, instanceID)
	if s == nil {
		return false
	}
	s.lastSeen, s.seenMono = d.p.Now(), d.p.Mono()
	if holding == nil {
		return true
	}
	held := make(map[Delivery]bool, len(holding))
	for _, h := range holding {
		held[h] = true
	}
	freed := false
	for id, h := range s.inflight {
		if !h.claimed || held[Delivery{TaskID: id, Attempt: h.attempt}] || held[Delivery{TaskID: id}] {
			continue
		}
		if t, ok := d.tasks.delivered(id); ok && isCurrent(t, s.WorkerID, h.attempt) {
			continue // its own deadline, or a claim window, settles it
		}
		delete(s.inflight, id)
		freed = true
		d.endUnseenLocked(id, s.WorkerID, h.attempt, "worker "+s.WorkerID+" no longer runs it; its end was never reported")
	}
	if freed {
		d.assignLocked()
	}
	return true
}

// Sent records that the stream handler sent s the delivery of a: its
// deadline (the task's timeout plus a grace for the report) runs from now.
// A delivery canceled before it was sent (the cancel follows it on the
// stream) gets only the grace for the kill's report, as a delivery does
// once the master has told its worker to kill it: without a deadline, a
// worker that never reported the kill would hold the slot forever.
func (d *Dispatcher) Sent(s *Session, a task.Assignment) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := s.inflight[a.ID]
	if !ok || h.attempt != a.Attempt || h.sent {
		return
	}
	h.sent = true
	if h.canceled {
		h.deadline = d.p.Mono() + reportGrace
	} else {
		h.deadline = d.p.Mono() + a.Timeout + reportGrace
	}
}

// Drain stops sending tasks to a worker; the tasks it runs stay with it.
// It returns the deliveries the worker holds a slot for: some may still be
// on their way to it (sent once on disk), and the worker waits for them.
func (d *Dispatcher) Drain(workerID, instanceID string) ([]Delivery, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.instanceLocked(workerID, instanceID)
	if s == nil {
		return nil, fmt.Errorf("worker %q: %w", workerID, task.ErrNotFound)
	}
	if !s.draining {
		s.draining = true
		running := len(s.inflight)
		d.emitLocked(events.Event{Type: events.WorkerDraining, WorkerID: workerID, Running: &running})
	}
	d.log.Info("worker draining", "worker_id", workerID, "in_flight", len(s.inflight))
	held := make([]Delivery, 0, len(s.inflight))
	for id, h := range s.inflight {
		held = append(held, Delivery{TaskID: id, Attempt: h.attempt})
	}
	slices.SortFunc(held, func(a, b Delivery) int { return strings.Compare(a.TaskID, b.TaskID) })
	return held, nil
}

// Unregister removes a session whose stream ended. A worker whose
// connection merely closed may be reconnecting (it gave up on a stream that
// stopped answering): its tasks wait one ClaimWindow for it to claim them
// before Sweep re-queues them. It is a no-op for a session the dispatcher
// already ended.
func (d *Dispatcher) Unregister(s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.rotation, s) {
		return
	}
	if s.draining {
		d.endLocked(s, "drained", "it drained and closed its connection")
	} else {
		claimBy := d.p.Mono() + d.ClaimWindow()
		for id, h := range s.inflight {
			if t, ok := d.tasks.get(id); ok && isCurrent(t, s.WorkerID, h.attempt) {
				d.orphans[id] = claimBy
				delete(s.inflight, id)
			}
		}
		d.endLocked(s, "disconnected", "its connection closed")
	}
	d.assignLocked()
}

// isCurrent reports whether attempt (0: unknown, any) is the delivery t
// runs on now, on workerID.
func isCurrent(t *task.Task, workerID string, attempt int) bool {
	return t.Status == task.StatusRunning && t.WorkerID == workerID && (attempt == 0 || attempt == t.Attempts)
}

// endLocked takes s out of the rotation, closes it and re-queues the tasks
// it was running, oldest first at the head of the queue: they were accepted
// before anything queued now. A task that has used up its attempts fails.
//
// reason is a short code for events and metrics (disconnected, drained,
// replaced, timed_out); why says the same for people.
func (d *Dispatcher) endLocked(s *Session, reason, why string) {
	d.takeBackAllLocked(d.leaveLocked(s, reason, why))
}

// leaveLocked is endLocked but for the taking back, which it returns for
// the caller to do (takeBackAllLocked): one that ends several sessions
// at once takes all their tasks back together, oldest first.
func (d *Dispatcher) leaveLocked(s *Session, reason, why string) []takeBack {
	i := slices.Index(d.rotation, s)
	d.rotation = slices.Delete(d.rotation, i, i+1)
	d.rotationGen++
	if i < d.next {
		d.next--
	}
	if d.next >= len(d.rotation) {
		d.next = 0
	}
	close(s.done)
	d.log.Info("worker left", "worker_id", s.WorkerID, "why", why, "in_flight", len(s.inflight))
	d.emitLocked(events.Event{Type: events.WorkerLeft, WorkerID: s.WorkerID, Reason: reason, Detail: why})

	var lost []takeBack
	for id, h := range s.inflight {
		if t, ok := d.tasks.get(id); ok && isCurrent(t, s.WorkerID, h.attempt) {
			lost = append(lost, takeBack{t: t, reason: "worker_" + reason, why: "worker " + s.WorkerID + " was lost: " + why})
		} else {
			d.endUnseenLocked(id, s.WorkerID, h.attempt, "worker "+s.WorkerID+" left ("+why+"); the kill was never reported")
		}
	}
	return lost
}

// takeBack is a running task to take back (takeBackLocked), and why.
type takeBack struct {
	t           *task.Task
	reason, why string
}

// takeBackAllLocked takes back each of ts newest first, each to the front
// of the queue, so that the oldest ends up first, as FIFO within a
// priority asks: callers gather them from maps, whose order is random, and
// from several workers. One no longer running (listed twice) is skipped.
func (d *Dispatcher) takeBackAllLocked(ts []takeBack) {
	slices.SortFunc(ts, func(a, b takeBack) int {
		return cmp.Or(b.t.CreatedAt.Compare(a.t.CreatedAt), strings.Compare(b.t.ID, a.t.ID))
	})
	for _, tb := range ts {
		if tb.t.Status == task.StatusRunning {
			d.takeBackLocked(tb.t, tb.reason, tb.why)
		}
	}
}

// takeBackLocked ends the running delivery of t as lost and re-queues t at
// the head of the queue, or fails it when it has used up its attempts.
// reason is a short code for events and metrics; why is for people.
func (d *Dispatcher) takeBackLocked(t *task.Task, reason, why string) {
	d.loseAttemptLocked(t, why)
	if t.Attempts-t.AttemptBase >= t.MaxAttempts { // the budget counts from the last manual retry
		t.Error = fmt.Sprintf("gave up after %d attempts: %s", t.Attempts, why)
		d.finishLocked(t, task.StatusFailed, d.p.Now())
		// Nobody waits for this write: evictLocked reads its result.
		d.evicting = append(d.evicting, eviction{t: t, committed: d.persistLocked(t, lastAttempt(t))})
		d.log.Warn("task failed: out of attempts", "task_id", t.ID, "worker_id", t.WorkerID, "attempts", t.Attempts)
		d.emitLocked(events.Event{Type: events.TaskFinished, Time: t.FinishedAt, TaskID: t.ID, WorkerID: t.WorkerID, Attempt: t.Attempts,
			Status: string(task.StatusFailed), Reason: "out_of_attempts", Detail: why})
		return
	}
	workerID := t.WorkerID
	t.Status = task.StatusQueued
	t.WorkerID = ""
	d.queue.push(t, d.tasks.key(t.ID), true)
	d.persistLocked(t, lastAttempt(t))
	d.log.Info("task re-queued", "task_id", t.ID, "worker_id", workerID, "attempts", t.Attempts, "reason", reason)
	d.emitLocked(events.Event{Type: events.TaskRequeued, TaskID: t.ID, WorkerID: workerID, Attempt: t.Attempts, Reason: reason, Detail: why})
}

// killEverywhereLocked tells every connected worker holding a delivery of
// task id to kill it: the one it runs on now, and any that came back
// still running a delivery the master had replaced. One that is away is
// told when it reconnects and lists the task (claimLocked). Each delivery
// keeps its slot until its worker reports it, or one grace has passed
// since (expireDeliveriesLocked), as for a delivery the master gave up:
// not until the task's whole timeout.
func (d *Dispatcher) killEverywhereLocked(id string) {
	for _, s := range d.rotation {
		if h, ok := s.inflight[id]; ok && !h.canceled {
			h.canceled = true
			if h.sent { // one not sent yet gets its grace when it is (Sent)
				h.deadline = min(h.deadline, d.p.Mono()+reportGrace)
			}
			s.send(Message{Cancel: id})
		}
	}
}

// runsOnItsWorkerLocked reports whether t's worker is connected and holds
// t's current delivery.
func (d *Dispatcher) runsOnItsWorkerLocked(t *task.Task) bool {
	s := d.sessionLocked(t.WorkerID)
	if s == nil {
		return false
	}
	h, ok := s.inflight[t.ID]
	return ok && isCurrent(t, s.WorkerID, h.attempt)
}

// holdsLocked reports whether workerID is connected and holds a delivery
// of task id.
func (d *Dispatcher) holdsLocked(workerID, id string) bool {
	s := d.sessionLocked(workerID)
	if s == nil {
		return false
	}
	_, ok := s.inflight[id]
	return ok
}

func (d *Dispatcher) sessionLocked(workerID string) *Session {
	for _, s := range d.rotation {
		if s.WorkerID == workerID {
			return s
		}
	}
	return nil
}

// instanceLocked returns the session of that worker process, or nil.
func (d *Dispatcher) instanceLocked(workerID, instanceID string) *Session {
	if s := d.sessionLocked(workerID); s != nil && s.InstanceID == instanceID {
		return s
	}
	return nil
}
