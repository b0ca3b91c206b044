// Package dispatch is the master's scheduler: it keeps the tasks, the queue
// and the rotation of connected workers, and hands each queued task to
// exactly one worker, round-robin, never beyond a worker's free slots.
//
// Transports (grpcapi, httpapi) call it; it calls nothing above it. All state
// sits behind one mutex: every operation is short and in memory, and one lock
// makes "pick a worker, mark the task, count the slot" a single step.
package dispatch

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Params are the Dispatcher's dependencies and limits.
type Params struct {
	Log         *slog.Logger
	Now         func() time.Time // injected so tests control time
	NewID       func() string    // task IDs
	MaxCmdBytes int
}

// Dispatcher owns tasks, queue and rotation. It is safe for concurrent use.
type Dispatcher struct {
	log         *slog.Logger
	now         func() time.Time
	newID       func() string
	maxCmdBytes int

	mu       sync.Mutex // protects every field below, and each Session's inflight
	closed   bool
	tasks    map[string]*task.Task
	queue    queue                   // IDs waiting for a worker, oldest first
	rotation []*Session              // connected workers in the order they registered
	next     int                     // index in rotation where the search for a free slot starts
	stats    map[string]*workerStats // by worker ID; outlives sessions so counts survive reconnects
}

type workerStats struct {
	completed  int
	duplicates int
}

// Session is one registered worker stream. The grpcapi handler that
// registered it drains Assignments and calls Unregister when its stream ends.
type Session struct {
	WorkerID    string
	InstanceID  string
	Slots       int
	ConnectedAt time.Time

	// assignments has room for Slots tasks and the dispatcher never has more
	// than Slots in flight for a session, so a send to it never blocks.
	assignments chan task.Assignment
	done        chan struct{} // closed by the dispatcher when it ends the session

	inflight map[string]struct{} // task IDs the worker holds a slot for; guarded by Dispatcher.mu
}

// Assignments delivers the tasks for this worker, to be sent on its stream.
func (s *Session) Assignments() <-chan task.Assignment { return s.assignments }

// Done is closed when the dispatcher ends the session: the same worker
// reconnected on a new stream, or the master is shutting down.
func (s *Session) Done() <-chan struct{} { return s.done }

// Registration is what a worker says when it connects.
type Registration struct {
	WorkerID   string
	InstanceID string
	Slots      int
	Running    []string // tasks still running on the worker from an earlier session
}

// WorkerInfo is a worker as the API shows it.
type WorkerInfo struct {
	ID          string
	Slots       int
	ConnectedAt time.Time
	Running     int
	Completed   int
}

// New returns an empty Dispatcher.
func New(p Params) *Dispatcher {
	return &Dispatcher{
		log:         p.Log.With("component", "dispatch"),
		now:         p.Now,
		newID:       p.NewID,
		maxCmdBytes: p.MaxCmdBytes,
		tasks:       make(map[string]*task.Task),
		stats:       make(map[string]*workerStats),
	}
}

// Submit accepts a command, queues it and assigns it if a worker is free.
func (d *Dispatcher) Submit(cmd string) (task.Task, error) {
	if err := task.ValidateCmd(cmd, d.maxCmdBytes); err != nil {
		return task.Task{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return task.Task{}, task.ErrClosed
	}
	t := &task.Task{ID: d.newID(), Cmd: cmd, Status: task.StatusQueued, CreatedAt: d.now()}
	d.tasks[t.ID] = t
	d.queue.pushBack(t.ID)
	d.log.Debug("task queued", "task_id", t.ID)
	d.assignLocked()
	return *t, nil
}

// Get returns a copy of the task with the given ID.
func (d *Dispatcher) Get(id string) (task.Task, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.tasks[id]
	if !ok {
		return task.Task{}, fmt.Errorf("task %q: %w", id, task.ErrNotFound)
	}
	return *t, nil
}

// Workers lists the connected workers in rotation order.
func (d *Dispatcher) Workers() []WorkerInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]WorkerInfo, 0, len(d.rotation))
	for _, s := range d.rotation {
		out = append(out, WorkerInfo{
			ID:          s.WorkerID,
			Slots:       s.Slots,
			ConnectedAt: s.ConnectedAt,
			Running:     len(s.inflight),
			Completed:   d.statsLocked(s.WorkerID).completed,
		})
	}
	return out
}

// Register adds a worker at the end of the rotation and returns its session
// and its 0-based place in the rotation. A reconnect from the same process
// (same instance ID) replaces its stale session; another process claiming a
// connected worker's ID gets ErrConflict.
func (d *Dispatcher) Register(r Registration) (*Session, int, error) {
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
		d.endLocked(old)
	}
	s := &Session{
		WorkerID:    r.WorkerID,
		InstanceID:  r.InstanceID,
		Slots:       r.Slots,
		ConnectedAt: d.now(),
		assignments: make(chan task.Assignment, r.Slots),
		done:        make(chan struct{}),
		inflight:    make(map[string]struct{}, r.Slots),
	}
	// Tasks the worker is still running hold its slots until it reports them.
	// One that was re-queued meanwhile, and not yet sent elsewhere, stays with
	// this worker instead of running twice.
	for _, id := range r.Running {
		s.inflight[id] = struct{}{}
		if t, ok := d.tasks[id]; ok && t.Status == task.StatusQueued {
			t.Status = task.StatusRunning
			t.WorkerID = r.WorkerID
		}
	}
	d.rotation = append(d.rotation, s)
	pos := len(d.rotation) - 1
	d.log.Info("worker joined", "worker_id", r.WorkerID, "slots", r.Slots, "position", pos, "still_running", len(r.Running))
	d.assignLocked()
	return s, pos, nil
}

// Unregister removes a session whose stream ended and re-queues the tasks it
// held that no other worker has finished or taken over. It is a no-op for a
// session the dispatcher already ended.
func (d *Dispatcher) Unregister(s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.rotation, s) {
		return
	}
	d.log.Info("worker left", "worker_id", s.WorkerID, "in_flight", len(s.inflight))
	d.endLocked(s)
	d.assignLocked()
}

// Report records a worker's result for a task. The first result for a task
// is final; a later one (the task was re-queued and also ran elsewhere) is a
// duplicate: counted, logged, and changes nothing.
func (d *Dispatcher) Report(r task.Result) (duplicate bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.tasks[r.TaskID]
	if !ok {
		return false, fmt.Errorf("task %q: %w", r.TaskID, task.ErrNotFound)
	}
	if s := d.sessionLocked(r.WorkerID); s != nil && s.InstanceID == r.InstanceID {
		delete(s.inflight, r.TaskID)
		defer d.assignLocked() // a slot is free again
	}
	st := d.statsLocked(r.WorkerID)
	if t.Status.Final() {
		st.duplicates++
		d.log.Warn("duplicate result ignored", "task_id", t.ID, "worker_id", r.WorkerID, "first_worker_id", t.WorkerID)
		return true, nil
	}
	st.completed++
	t.WorkerID = r.WorkerID
	code := r.ExitCode
	t.ExitCode = &code
	t.Stdout = strings.ToValidUTF8(string(r.Stdout), "\uFFFD")
	t.Stderr = strings.ToValidUTF8(string(r.Stderr), "\uFFFD")
	t.StdoutCut, t.StderrCut = r.StdoutCut, r.StderrCut
	t.Error = r.Error
	if !r.StartedAt.IsZero() {
		t.StartedAt = r.StartedAt
	}
	t.FinishedAt = r.FinishedAt
	if t.FinishedAt.IsZero() {
		t.FinishedAt = d.now()
	}
	t.Status = task.StatusFailed
	if r.ExitCode == 0 && r.Error == "" {
		t.Status = task.StatusSucceeded
	}
	d.log.Info("task finished", "task_id", t.ID, "worker_id", r.WorkerID, "status", t.Status, "exit_code", code)
	return false, nil
}

// Close ends every session and refuses new work; in-flight reports are still
// accepted so that results arriving during shutdown are kept.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, s := range d.rotation {
		close(s.done)
	}
	d.rotation = nil
}

// endLocked takes s out of the rotation, closes it and re-queues the tasks it
// was running, oldest first at the head of the queue: they were accepted
// before anything queued now.
func (d *Dispatcher) endLocked(s *Session) {
	i := slices.Index(d.rotation, s)
	d.rotation = slices.Delete(d.rotation, i, i+1)
	if i < d.next {
		d.next--
	}
	if d.next >= len(d.rotation) {
		d.next = 0
	}
	close(s.done)

	var requeue []*task.Task
	for id := range s.inflight {
		if t, ok := d.tasks[id]; ok && t.Status == task.StatusRunning && t.WorkerID == s.WorkerID {
			requeue = append(requeue, t)
		}
	}
	slices.SortFunc(requeue, func(a, b *task.Task) int { return b.CreatedAt.Compare(a.CreatedAt) })
	for _, t := range requeue { // newest first, each to the front: oldest ends up first
		t.Status = task.StatusQueued
		t.WorkerID = ""
		d.queue.pushFront(t.ID)
		d.log.Info("task re-queued", "task_id", t.ID, "worker_id", s.WorkerID, "attempts", t.Attempts)
	}
}

// assignLocked sends queued tasks to workers with free slots, in rotation
// order, until either runs out.
func (d *Dispatcher) assignLocked() {
	for {
		id, ok := d.queue.peek()
		if !ok {
			return
		}
		t := d.tasks[id]
		if t.Status != task.StatusQueued { // reclaimed by its reconnecting worker
			d.queue.pop()
			continue
		}
		s := d.pickLocked()
		if s == nil {
			return
		}
		d.queue.pop()
		t.Status = task.StatusRunning
		t.WorkerID = s.WorkerID
		t.Attempts++
		t.AssignedAt = d.now()
		t.StartedAt = t.AssignedAt // until the worker reports when it really started
		s.inflight[t.ID] = struct{}{}
		s.assignments <- task.Assignment{ID: t.ID, Cmd: t.Cmd, Attempt: t.Attempts}
		d.log.Info("task assigned", "task_id", t.ID, "worker_id", s.WorkerID, "attempt", t.Attempts)
	}
}

// pickLocked returns the next worker in the rotation with a free slot and
// moves the rotation past it, or nil when every worker is busy.
func (d *Dispatcher) pickLocked() *Session {
	n := len(d.rotation)
	for i := range n {
		idx := (d.next + i) % n
		if s := d.rotation[idx]; len(s.inflight) < s.Slots {
			d.next = (idx + 1) % n
			return s
		}
	}
	return nil
}

func (d *Dispatcher) sessionLocked(workerID string) *Session {
	for _, s := range d.rotation {
		if s.WorkerID == workerID {
			return s
		}
	}
	return nil
}

func (d *Dispatcher) statsLocked(workerID string) *workerStats {
	st, ok := d.stats[workerID]
	if !ok {
		st = &workerStats{}
		d.stats[workerID] = st
	}
	return st
}
