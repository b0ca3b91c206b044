// Package dispatch is the master's scheduler: it keeps the live tasks, the
// queue and the rotation of connected workers, hands each queued task to
// exactly one worker, round-robin, never beyond a worker's free slots, and
// takes tasks back from workers that vanish.
//
// Every change is written through to the store; a task is acknowledged to a
// client only once it is on disk. Live tasks (queued, running) are kept in
// memory; a final task leaves memory once its final state is committed, and
// is read from the store after that.
//
// Transports (grpcapi, httpapi) call it; it calls only the store. All state
// sits behind one mutex: every step under it is short and in memory, and one
// lock makes "pick a worker, mark the task, count the slot" a single step.
// Waiting for the disk happens outside the lock.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Params are the Dispatcher's dependencies and limits.
type Params struct {
	Log   *slog.Logger
	Store *store.Store
	Now   func() time.Time // injected so tests control time
	NewID func() string    // task IDs
	// Events hears of every task and worker transition, published under the
	// dispatcher's lock; nil publishes nothing.
	Events *events.Hub

	MaxCmdBytes    int
	DefaultTimeout time.Duration // for tasks submitted without one
	MaxTimeout     time.Duration
	MaxAttempts    int           // default deliveries before a task whose workers vanish fails
	WorkerTimeout  time.Duration // a worker not heard from for this long is dropped
	MaxQueued      int           // queued tasks at most; Submit answers ErrFull past it. 0: no limit
	MaxOutputBytes int           // stored per output stream of a result; 0: no limit
}

// Dispatcher owns the live tasks, queue and rotation. It is safe for
// concurrent use.
type Dispatcher struct {
	p   Params
	log *slog.Logger

	keyMu sync.Mutex // serialises submissions with an idempotency key

	mu        sync.Mutex // protects every field below, and each Session's mutable fields
	closed    bool
	tasks     liveTasks                  // live tasks, and final ones until their final write is committed
	waiters   map[string][]chan struct{} // closed when the task becomes final
	keys      map[string]string          // idempotency key -> task ID, for keys used since start
	queue     queue                      // IDs waiting for a worker, oldest first
	rotation  []*Session                 // connected workers in the order they registered
	next      int                        // index in rotation where the search for a free slot starts
	completed map[string]int             // results per worker ID; outlives sessions so counts survive reconnects
	evicting  []eviction                 // final tasks nobody waits for, to drop from memory once committed
	orphans   map[string]time.Time       // tasks running when the master restarted -> when to re-queue them unclaimed
	closedCh  chan struct{}              // closed by Close: wakes waiters
	reserved  int                        // queue places held by submissions waiting for their write
}

type eviction struct {
	id        string
	committed <-chan error
}

// Session is one registered worker stream. The grpcapi handler that
// registered it drains Assignments and Cancels and calls Unregister when its
// stream ends.
type Session struct {
	WorkerID    string
	InstanceID  string
	Slots       int
	ConnectedAt time.Time

	// assignments has room for Slots tasks and the dispatcher never has more
	// than Slots in flight for a session, so a send to it never blocks.
	assignments chan task.Assignment
	cancels     chan string   // task IDs to kill; sent without blocking
	done        chan struct{} // closed by the dispatcher when it ends the session

	// Guarded by Dispatcher.mu:
	inflight map[string]struct{} // task IDs the worker holds a slot for
	lastSeen time.Time           // registration or last heartbeat
	draining bool                // takes no new tasks
}

// Assignments delivers the tasks for this worker, to be sent on its stream.
func (s *Session) Assignments() <-chan task.Assignment { return s.assignments }

// Cancels delivers the IDs of running tasks the worker must kill.
func (s *Session) Cancels() <-chan string { return s.cancels }

// Done is closed when the dispatcher ends the session: the same worker
// reconnected, it timed out, or the master is shutting down.
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
	LastSeen    time.Time
	Draining    bool
	Running     int
	Completed   int
	Next        bool // the next task goes to this worker; none is marked while all are busy or draining
}

// Submission is a request for a new task.
type Submission struct {
	Cmd            string
	Timeout        time.Duration // 0: the default
	MaxAttempts    int           // 0: the default
	IdempotencyKey string
}

// New returns a Dispatcher. Call Recover before serving.
func New(p Params) *Dispatcher {
	return &Dispatcher{
		p:         p,
		log:       p.Log.With("component", "dispatch"),
		tasks:     newLiveTasks(),
		waiters:   make(map[string][]chan struct{}),
		keys:      make(map[string]string),
		completed: make(map[string]int),
		orphans:   make(map[string]time.Time),
		closedCh:  make(chan struct{}),
	}
}

// HeartbeatInterval is how often workers are asked to renew their lease:
// four beats fit in one worker timeout, so one lost beat is not a death.
func (d *Dispatcher) HeartbeatInterval() time.Duration { return d.p.WorkerTimeout / 4 }

// SweepInterval is how often the owner must call Sweep. A lease expires one
// interval before the worker timeout, so a silent worker is dropped within
// the timeout however the sweeps fall.
func (d *Dispatcher) SweepInterval() time.Duration { return d.p.WorkerTimeout / 10 }

// Recover loads the live tasks from the store after a start. Queued tasks
// queue again in their order. Tasks that were running stay with their worker
// for one worker timeout: a worker that reconnects still running one keeps
// it (Register); Sweep re-queues the ones nobody claimed.
func (d *Dispatcher) Recover(ctx context.Context) error {
	live, err := d.p.Store.Live(ctx)
	if err != nil {
		return fmt.Errorf("loading live tasks: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	orphaned := 0
	grace := d.p.Now().Add(d.p.WorkerTimeout)
	for i := range live {
		t := &task.Task{}
		*t = live[i]        // a copy: a pointer into live would keep the whole slice in memory
		if t.Attempts > 0 { // Live leaves History out; most queued tasks have none
			full, err := d.p.Store.Get(ctx, t.ID)
			if err != nil {
				return fmt.Errorf("loading task %s: %w", t.ID, err)
			}
			t.History = full.History
		}
		d.tasks.put(t)
		if t.Status == task.StatusRunning {
			d.orphans[t.ID] = grace
			orphaned++
		} else {
			d.queue.pushBack(t.ID)
		}
		if t.IdempotencyKey != "" {
			d.keys[t.IdempotencyKey] = t.ID
		}
	}
	d.log.Info("recovered tasks", "live", len(live), "awaiting_their_worker", orphaned)
	return nil
}

// Submit validates, stores and queues a new task. With an idempotency key
// that was used before it returns that task and created=false instead.
func (d *Dispatcher) Submit(ctx context.Context, s Submission) (t task.Task, created bool, err error) {
	if s, err = d.Normalize(s); err != nil {
		return task.Task{}, false, err
	}
	if s.IdempotencyKey != "" {
		// One keyed submission at a time, so two requests with the same key
		// cannot both create a task.
		d.keyMu.Lock()
		defer d.keyMu.Unlock()
		if prev, ok, err := d.byKey(ctx, s.IdempotencyKey); err != nil || ok {
			if ok && prev.Cmd != s.Cmd {
				return task.Task{}, false, fmt.Errorf("%w: idempotency key %q was already used for another command", task.ErrConflict, s.IdempotencyKey)
			}
			return prev, false, err
		}
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return task.Task{}, false, task.ErrClosed
	}
	// Checked before anything is written, and the place held until the
	// task is queued, so concurrent submissions cannot overshoot the limit.
	if d.queueFullLocked() {
		d.mu.Unlock()
		return task.Task{}, false, fmt.Errorf("%w: %d tasks are waiting for a worker, the most MASTER_MAX_QUEUED allows; retry later", task.ErrFull, d.p.MaxQueued)
	}
	d.reserved++
	nt := &task.Task{
		ID: d.p.NewID(), Cmd: s.Cmd, Status: task.StatusQueued, CreatedAt: d.p.Now(),
		Timeout: s.Timeout, MaxAttempts: s.MaxAttempts, IdempotencyKey: s.IdempotencyKey,
	}
	committed := d.persistLocked(nt, nil)
	d.mu.Unlock()

	// On disk before anyone hears of it: a 202 means the task survives a crash.
	err = <-committed
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reserved--
	if err != nil {
		return task.Task{}, false, fmt.Errorf("storing task: %w", err)
	}
	d.tasks.put(nt)
	if nt.IdempotencyKey != "" {
		d.keys[nt.IdempotencyKey] = nt.ID
	}
	d.queue.pushBack(nt.ID)
	d.log.Debug("task queued", "task_id", nt.ID)
	d.emitLocked(events.Event{Type: events.TaskQueued, Time: nt.CreatedAt, TaskID: nt.ID, Cmd: shorten(nt.Cmd)})
	d.assignLocked()
	return copyTask(nt), true, nil
}

// queueFullLocked reports whether the queue has no room for one more task.
// It costs O(1) whatever the queue holds: a refusal is what an overloaded
// master answers most, and assignments and reports wait for the same lock.
func (d *Dispatcher) queueFullLocked() bool {
	return d.p.MaxQueued > 0 && d.queue.waiting()+d.reserved >= d.p.MaxQueued
}

// compactAt is the fewest stale IDs worth sweeping out of the queue.
const compactAt = 1024

// leftQueueLocked records that a queued task stopped waiting without being
// popped (canceled, reclaimed by its worker, finished by a late result). Call
// it after the task's status changed; finishLocked calls it for every queued
// task it finishes. Its ID stays in the queue, counted stale, until
// assignLocked reaches it; once stale IDs outnumber waiting ones (say, tasks
// canceled while no worker pops) they are swept out at once. A
// sweep costs the queue's length, paid for by the departures that made at
// least half of it stale, so memory follows the waiting tasks.
func (d *Dispatcher) leftQueueLocked() {
	d.queue.left()
	if d.queue.stale >= compactAt && d.queue.stale > d.queue.waiting() {
		d.queue.keep(func(id string) bool {
			st, ok := d.tasks.status(id)
			return ok && st == task.StatusQueued
		})
	}
}

// Normalize checks a submission and fills in the defaults. Submit calls it
// before any work, so its errors are what a submission's mistakes answer.
func (d *Dispatcher) Normalize(s Submission) (Submission, error) {
	if err := task.ValidateCmd(s.Cmd, d.p.MaxCmdBytes); err != nil {
		return s, err
	}
	if s.Timeout == 0 {
		s.Timeout = d.p.DefaultTimeout
	}
	if s.Timeout < time.Second || s.Timeout > d.p.MaxTimeout {
		return s, fmt.Errorf("%w: timeout must be between 1s and %s (MASTER_MAX_TASK_TIMEOUT)", task.ErrInvalid, d.p.MaxTimeout)
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = d.p.MaxAttempts
	}
	if s.MaxAttempts < 1 || s.MaxAttempts > maxAttempts {
		return s, fmt.Errorf("%w: max_attempts must be between 1 and %d", task.ErrInvalid, maxAttempts)
	}
	return s, nil
}

// maxAttempts bounds a task's deliveries, as MASTER_MAX_ATTEMPTS is bounded.
const maxAttempts = 100

func (d *Dispatcher) byKey(ctx context.Context, key string) (task.Task, bool, error) {
	d.mu.Lock()
	id, ok := d.keys[key]
	d.mu.Unlock()
	if ok {
		t, err := d.Get(ctx, id)
		return t, err == nil, err
	}
	t, err := d.p.Store.FindByIdempotencyKey(ctx, key)
	if errors.Is(err, task.ErrNotFound) {
		return task.Task{}, false, nil
	}
	return t, err == nil, err
}

// Get returns a copy of the task with the given ID.
func (d *Dispatcher) Get(ctx context.Context, id string) (task.Task, error) {
	d.mu.Lock()
	t, ok := d.tasks.view(id)
	if ok {
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

// List returns a page of tasks, newest first, as committed to the store.
func (d *Dispatcher) List(ctx context.Context, q Query) (Page, error) {
	if err := d.p.Store.Flush(ctx); err != nil {
		return Page{}, err
	}
	return d.p.Store.List(ctx, q)
}

// Cancel ends a task: a queued one never runs, a running one is killed on
// its worker. A final task cannot be canceled (ErrConflict).
func (d *Dispatcher) Cancel(ctx context.Context, id string) (task.Task, error) {
	d.mu.Lock()
	t, ok := d.tasks.get(id)
	if !ok || t.Status.Final() {
		d.mu.Unlock()
		ft, err := d.Get(ctx, id)
		if err != nil {
			return task.Task{}, err
		}
		return ft, fmt.Errorf("%w: task %s is already %s", task.ErrConflict, id, ft.Status)
	}
	wasOn := ""
	if t.Status == task.StatusRunning {
		wasOn = t.WorkerID
		t.Error = "canceled while running on " + t.WorkerID
		if s := d.sessionLocked(t.WorkerID); s != nil {
			select {
			case s.cancels <- id:
			default:
				d.log.Warn("cancel not delivered: the worker's cancel queue is full", "task_id", id, "worker_id", s.WorkerID)
			}
		}
	} else {
		t.Error = "canceled before it ran"
	}
	d.finishLocked(t, task.StatusCanceled, d.p.Now())
	committed := d.persistLocked(t, nil)
	c := copyTask(t)
	d.emitLocked(events.Event{Type: events.TaskCanceled, Time: t.FinishedAt, TaskID: id, WorkerID: wasOn, Status: string(task.StatusCanceled)})
	d.mu.Unlock()
	d.log.Info("task canceled", "task_id", id, "worker_id", wasOn)
	return c, d.settle(id, <-committed)
}

// Workers lists the connected workers in rotation order.
func (d *Dispatcher) Workers() []WorkerInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]WorkerInfo, 0, len(d.rotation))
	next := d.nextLocked()
	for i, s := range d.rotation {
		out = append(out, WorkerInfo{
			ID:          s.WorkerID,
			Slots:       s.Slots,
			ConnectedAt: s.ConnectedAt,
			LastSeen:    s.lastSeen,
			Draining:    s.draining,
			Running:     len(s.inflight),
			Completed:   d.completed[s.WorkerID],
			Next:        i == next,
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
		// The tasks it still runs move to the new session: not lost, not re-queued.
		for _, id := range r.Running {
			delete(old.inflight, id)
		}
		d.endLocked(old, "replaced", "replaced by a new connection")
	}
	now := d.p.Now()
	s := &Session{
		WorkerID:    r.WorkerID,
		InstanceID:  r.InstanceID,
		Slots:       r.Slots,
		ConnectedAt: now,
		assignments: make(chan task.Assignment, r.Slots),
		cancels:     make(chan string, r.Slots+len(r.Running)),
		done:        make(chan struct{}),
		inflight:    make(map[string]struct{}, r.Slots),
		lastSeen:    now,
	}
	// Tasks the worker is still running hold its slots until it reports them.
	// One that was re-queued meanwhile, and not yet sent elsewhere, stays with
	// this worker instead of running twice.
	for _, id := range r.Running {
		st, live := d.tasks.status(id)
		if !live || st.Final() {
			// Its result got here first, or it was canceled: nobody will
			// report it again, so it holds no slot.
			d.log.Debug("reconnecting worker lists a task that is no longer live", "task_id", id, "worker_id", r.WorkerID)
			continue
		}
		// Only the worker the task was last sent to may claim it: a worker
		// naming a task it was never given would hold it, and a slot, while
		// the task waits or runs elsewhere.
		t, sent := d.tasks.delivered(id)
		if !sent || lastAttempt(t).WorkerID != r.WorkerID || (st == task.StatusRunning && t.WorkerID != r.WorkerID) {
			d.log.Warn("worker claims a task the master did not give it; ignored", "task_id", id, "worker_id", r.WorkerID, "status", st)
			continue
		}
		s.inflight[id] = struct{}{}
		if st == task.StatusRunning {
			delete(d.orphans, id) // claimed after a master restart
			continue
		}
		t.Status = task.StatusRunning
		t.WorkerID = r.WorkerID
		d.leftQueueLocked()
		a := lastAttempt(t)
		a.Outcome, a.Error, a.FinishedAt = task.OutcomeRunning, "", time.Time{}
		d.persistLocked(t, a)
		d.emitLocked(events.Event{Type: events.TaskAssigned, Time: now, TaskID: id, WorkerID: r.WorkerID, Attempt: t.Attempts, Reason: "reclaimed"})
	}
	d.rotation = append(d.rotation, s)
	pos := len(d.rotation) - 1
	d.log.Info("worker joined", "worker_id", r.WorkerID, "slots", r.Slots, "position", pos, "still_running", len(r.Running))
	d.emitLocked(events.Event{Type: events.WorkerJoined, Time: now, WorkerID: r.WorkerID, Slots: r.Slots, Position: &pos})
	d.assignLocked()
	return s, pos, nil
}

// Heartbeat renews a worker's lease. It reports false when the master has
// no session for that worker process, which should then register again.
func (d *Dispatcher) Heartbeat(workerID, instanceID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.instanceLocked(workerID, instanceID)
	if s == nil {
		return false
	}
	s.lastSeen = d.p.Now()
	return true
}

// Drain stops sending tasks to a worker; the tasks it runs stay with it.
func (d *Dispatcher) Drain(workerID, instanceID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.instanceLocked(workerID, instanceID)
	if s == nil {
		return fmt.Errorf("worker %q: %w", workerID, task.ErrNotFound)
	}
	if !s.draining {
		s.draining = true
		running := len(s.inflight)
		d.emitLocked(events.Event{Type: events.WorkerDraining, WorkerID: workerID, Running: &running})
	}
	d.log.Info("worker draining", "worker_id", workerID, "in_flight", len(s.inflight))
	return nil
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
	if s.draining {
		d.endLocked(s, "drained", "it drained and closed its connection")
	} else {
		d.endLocked(s, "disconnected", "its connection closed")
	}
	d.assignLocked()
}

// Sweep drops workers whose lease expired (no heartbeat within the worker
// timeout: dead, paused or cut off) and forgets final tasks that are safely
// on disk. An owner calls it periodically; tests call it after moving the
// clock.
func (d *Dispatcher) Sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.p.Now()
	expiry := d.p.WorkerTimeout - d.SweepInterval()
	for _, s := range slices.Clone(d.rotation) {
		if silent := now.Sub(s.lastSeen); silent > expiry {
			d.log.Warn("worker timed out", "worker_id", s.WorkerID, "silent_for", silent.Round(time.Millisecond))
			why := fmt.Sprintf("it sent no heartbeat for %s", silent.Round(time.Second))
			d.emitLocked(events.Event{Type: events.WorkerTimedOut, Time: now, WorkerID: s.WorkerID, Reason: "timed_out", Detail: why})
			d.endLocked(s, "timed_out", why)
		}
	}
	for id, deadline := range d.orphans {
		if now.Before(deadline) {
			continue
		}
		delete(d.orphans, id)
		if t, ok := d.tasks.get(id); ok && t.Status == task.StatusRunning && !d.heldLocked(id) {
			d.log.Info("no worker claimed a task running before the restart", "task_id", id, "worker_id", t.WorkerID)
			d.takeBackLocked(t, "not_reclaimed", "its worker did not come back after the master restarted")
		}
	}
	d.assignLocked()
	d.evictLocked()
}

// Report records a worker's result for one delivery of a task. The first
// result for a task is final. A result that arrives after the task is final
// (it was re-queued and finished elsewhere) is recorded on its delivery's
// attempt, marked duplicate, and changes nothing else. Report returns once
// the result is on disk, so the worker may forget it.
func (d *Dispatcher) Report(ctx context.Context, r task.Result) (duplicate bool, err error) {
	// The worker bounds its output too, but the master does not rely on a
	// worker's settings for what it stores. Bounding happens before taking
	// d.mu: it copies and checks the UTF-8 of everything the report carries
	// (megabytes per stream, up to the gRPC receive limit), and every
	// submission, assignment and report waits for that lock. It reads only
	// d.p, which never changes after New.
	stdout, outCut := task.Output(r.Stdout, d.maxOutput())
	stderr, errCut := task.Output(r.Stderr, d.maxOutput())
	d.mu.Lock()
	// A freed slot is filled once the result is recorded, so that events
	// tell of the finish before the next assignment on this worker.
	freed := false
	if s := d.instanceLocked(r.WorkerID, r.InstanceID); s != nil {
		if _, ok := s.inflight[r.TaskID]; ok {
			delete(s.inflight, r.TaskID)
			freed = true
		}
	}
	fill := func() {
		if freed {
			d.assignLocked()
		}
	}
	t, live := d.tasks.get(r.TaskID)
	if !live {
		fill()
		freed = false
		d.mu.Unlock()
		ft, err := d.p.Store.Get(ctx, r.TaskID) // final, and already off memory
		if err != nil {
			return false, err
		}
		t = &ft
		d.mu.Lock()
	}
	a := attemptFor(t, r)
	if a.WorkerID == r.WorkerID && a.Outcome != task.OutcomeRunning && a.Outcome != task.OutcomeLost {
		// This delivery's result is already recorded: the worker is retrying
		// a report whose acknowledgement it did not get.
		fill()
		d.mu.Unlock()
		return a.Duplicate, nil
	}
	code := r.ExitCode
	// A canceled task's running delivery ends with this report; that is no
	// duplicate. Any other report for a final task is.
	dup := t.Status.Final() && !(t.Status == task.StatusCanceled && a.Outcome == task.OutcomeRunning)
	a.Outcome, a.ExitCode, a.Error, a.FinishedAt, a.Duplicate = outcomeOf(r), &code, r.Error, r.FinishedAt, dup
	if t.Status.Final() {
		if dup {
			d.log.Warn("duplicate result recorded", "task_id", t.ID, "worker_id", r.WorkerID, "attempt", r.Attempt, "final_worker_id", t.WorkerID)
		}
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a)})
		fill()
		d.mu.Unlock()
		return dup, <-committed
	}
	d.completed[r.WorkerID]++
	t.WorkerID = r.WorkerID
	t.ExitCode = &code
	t.Stdout, t.Stderr = stdout, stderr // bounded above, outside the lock
	t.StdoutCut, t.StderrCut = r.StdoutCut || outCut, r.StderrCut || errCut
	t.Error = r.Error
	if !r.StartedAt.IsZero() {
		t.StartedAt = r.StartedAt
	}
	finished := r.FinishedAt
	if finished.IsZero() {
		finished = d.p.Now()
	}
	d.finishLocked(t, task.Status(a.Outcome), finished) // t may be queued: a result for a delivery the master had taken back
	committed := d.persistLocked(t, a)
	run := finished.Sub(t.StartedAt).Seconds()
	d.emitLocked(events.Event{Type: events.TaskFinished, Time: finished, TaskID: t.ID, WorkerID: r.WorkerID, Attempt: a.N,
		Status: string(t.Status), ExitCode: &code, RunSeconds: &run})
	fill()
	d.mu.Unlock()
	d.log.Info("task finished", "task_id", t.ID, "worker_id", r.WorkerID, "status", t.Status, "exit_code", code)
	return false, d.settle(t.ID, <-committed)
}

func (d *Dispatcher) maxOutput() int {
	if d.p.MaxOutputBytes <= 0 {
		return math.MaxInt
	}
	return d.p.MaxOutputBytes
}

// Close ends every session and refuses new work. Reports are still
// accepted, so results arriving during shutdown are kept; the store is
// closed by its owner after the transports have stopped.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	close(d.closedCh)
	for _, s := range d.rotation {
		close(s.done)
	}
	d.rotation = nil
}

// endLocked takes s out of the rotation, closes it and re-queues the tasks
// it was running, oldest first at the head of the queue: they were accepted
// before anything queued now. A task that has used up its attempts fails.
//
// reason is a short code for events and metrics (disconnected, drained,
// replaced, timed_out); why says the same for people.
func (d *Dispatcher) endLocked(s *Session, reason, why string) {
	i := slices.Index(d.rotation, s)
	d.rotation = slices.Delete(d.rotation, i, i+1)
	if i < d.next {
		d.next--
	}
	if d.next >= len(d.rotation) {
		d.next = 0
	}
	close(s.done)
	d.log.Info("worker left", "worker_id", s.WorkerID, "why", why, "in_flight", len(s.inflight))
	d.emitLocked(events.Event{Type: events.WorkerLeft, WorkerID: s.WorkerID, Reason: reason, Detail: why})

	var lost []*task.Task
	for id := range s.inflight {
		if t, ok := d.tasks.get(id); ok && t.Status == task.StatusRunning && t.WorkerID == s.WorkerID {
			lost = append(lost, t)
		}
	}
	slices.SortFunc(lost, func(a, b *task.Task) int { return b.CreatedAt.Compare(a.CreatedAt) })
	for _, t := range lost { // newest first, each to the front: oldest ends up first
		d.takeBackLocked(t, "worker_"+reason, "worker "+s.WorkerID+" was lost: "+why)
	}
}

// takeBackLocked ends the running delivery of t as lost and re-queues t at
// the head of the queue, or fails it when it has used up its attempts.
// reason is a short code for events and metrics; why is for people.
func (d *Dispatcher) takeBackLocked(t *task.Task, reason, why string) {
	d.loseAttemptLocked(t, why)
	if t.Attempts >= t.MaxAttempts {
		t.Error = fmt.Sprintf("gave up after %d attempts: %s", t.Attempts, why)
		d.finishLocked(t, task.StatusFailed, d.p.Now())
		// Nobody waits for this write: evictLocked reads its result.
		d.evicting = append(d.evicting, eviction{id: t.ID, committed: d.persistLocked(t, lastAttempt(t))})
		d.log.Warn("task failed: out of attempts", "task_id", t.ID, "worker_id", t.WorkerID, "attempts", t.Attempts)
		d.emitLocked(events.Event{Type: events.TaskFinished, Time: t.FinishedAt, TaskID: t.ID, WorkerID: t.WorkerID, Attempt: t.Attempts,
			Status: string(task.StatusFailed), Reason: "out_of_attempts", Detail: why})
		return
	}
	workerID := t.WorkerID
	t.Status = task.StatusQueued
	t.WorkerID = ""
	d.queue.pushFront(t.ID)
	d.persistLocked(t, lastAttempt(t))
	d.log.Info("task re-queued", "task_id", t.ID, "worker_id", workerID, "attempts", t.Attempts, "reason", reason)
	d.emitLocked(events.Event{Type: events.TaskRequeued, TaskID: t.ID, WorkerID: workerID, Attempt: t.Attempts, Reason: reason, Detail: why})
}

// heldLocked reports whether a connected worker holds a slot for the task.
func (d *Dispatcher) heldLocked(id string) bool {
	return slices.ContainsFunc(d.rotation, func(s *Session) bool { _, ok := s.inflight[id]; return ok })
}

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
		d.persistLocked(t, lastAttempt(t))
		s.inflight[t.ID] = struct{}{}
		s.assignments <- task.Assignment{ID: t.ID, Cmd: t.Cmd, Timeout: t.Timeout, Attempt: t.Attempts}
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

// Stats are counts for gauges.
type Stats struct {
	Queued  int // live tasks waiting for a worker
	Running int // tasks a worker holds
	Workers int // connected workers
}

// Stats counts the live tasks and workers now.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	// The queue counts the tasks waiting in it exactly, at no cost, and a
	// backlog can be millions of them; only the full tasks (running ones,
	// and the few re-queued or being finished) are walked for Running.
	return Stats{Queued: d.queue.waiting(), Running: d.tasks.running(), Workers: len(d.rotation)}
}

// emitLocked publishes e, stamped with the dispatcher's clock unless it
// carries the time of the transition already.
func (d *Dispatcher) emitLocked(e events.Event) {
	if d.p.Events == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.p.Now()
	}
	d.p.Events.Publish(e)
}

// maxEventCmd bounds the command an event carries: the stream shows what a
// task is, GET /tasks/{id} has all of it.
const maxEventCmd = 200

func shorten(cmd string) string {
	if len(cmd) <= maxEventCmd {
		return cmd
	}
	cut := maxEventCmd
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut] + "…"
}

// finishLocked makes t final and wakes whoever waits for it. A task that
// was queued leaves the queue here, so no caller can forget to count it out.
func (d *Dispatcher) finishLocked(t *task.Task, st task.Status, at time.Time) {
	wasQueued := t.Status == task.StatusQueued
	t.Status = st
	t.FinishedAt = at
	if wasQueued {
		d.leftQueueLocked() // after the status changed, as it asks
	}
	for _, ch := range d.waiters[t.ID] {
		close(ch)
	}
	delete(d.waiters, t.ID)
}

// persistLocked queues t (and attempt a, if any) for the store. Snapshots
// are passed, since the store writes them later. Writes leave in the order
// they are made, so the store always converges on the memory's state.
func (d *Dispatcher) persistLocked(t *task.Task, a *task.Attempt) <-chan error {
	snap := copyTask(t)
	snap.History = nil
	w := store.Write{Task: &snap}
	if a != nil {
		w.Attempt = copyAttempt(a)
	}
	return d.p.Store.Apply(w)
}

// settle is called by whoever waited for the commit of a task's final
// state: once that is on disk, the task leaves memory, and the store
// answers for it from then on.
func (d *Dispatcher) settle(id string, err error) error {
	if err != nil {
		d.log.Error("storing a final task failed; keeping it in memory", "task_id", id, "err", err)
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgetLocked(id)
	return nil
}

func (d *Dispatcher) forgetLocked(id string) {
	t, ok := d.tasks.get(id)
	if !ok || !t.Status.Final() {
		return
	}
	d.tasks.del(id)
	if t.IdempotencyKey != "" { // byKey asks the store from now on
		delete(d.keys, t.IdempotencyKey)
	}
}

// evictLocked drops from memory the final tasks whose final write is on
// disk. A failed write keeps the task in memory, so it stays readable.
func (d *Dispatcher) evictLocked() {
	keep := d.evicting[:0]
	for _, e := range d.evicting {
		select {
		case err := <-e.committed:
			if err != nil {
				d.log.Error("storing a final task failed; keeping it in memory", "task_id", e.id, "err", err)
				continue
			}
			d.forgetLocked(e.id)
		default:
			keep = append(keep, e)
		}
	}
	clear(d.evicting[len(keep):])
	d.evicting = keep
}

func (d *Dispatcher) loseAttemptLocked(t *task.Task, why string) {
	if a := lastAttempt(t); a != nil && a.Outcome == task.OutcomeRunning {
		a.Outcome, a.Error, a.FinishedAt = task.OutcomeLost, why, d.p.Now()
	}
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

// attemptFor returns the delivery a result answers, by its number. A result
// naming a delivery the master has no record of (it cannot have sent it)
// gets a record of its own, so that nothing a worker reports goes unseen.
func attemptFor(t *task.Task, r task.Result) *task.Attempt {
	for i := range t.History {
		if t.History[i].N == r.Attempt {
			return &t.History[i]
		}
	}
	// Running until this result ends it: with no outcome it would pass for
	// a delivery already reported, and the result would be dropped.
	t.History = append(t.History, task.Attempt{TaskID: t.ID, N: r.Attempt, WorkerID: r.WorkerID, Outcome: task.OutcomeRunning, AssignedAt: r.StartedAt})
	return lastAttempt(t)
}

func lastAttempt(t *task.Task) *task.Attempt {
	if len(t.History) == 0 {
		return nil
	}
	return &t.History[len(t.History)-1]
}

func copyTask(t *task.Task) task.Task {
	c := *t
	c.History = slices.Clone(t.History)
	return c
}

func copyAttempt(a *task.Attempt) *task.Attempt {
	c := *a
	return &c
}
