// Package dispatch is the master's scheduler: it keeps the live tasks, the
// queue and the rotation of connected workers, hands each queued task to
// exactly one worker, round-robin, never beyond a worker's free slots, and
// takes tasks back from workers that vanish.
//
// Every change is written through to the store. Live tasks (queued,
// running) are kept in memory; a final task leaves memory once its final
// state is committed, and is read from the store after that.
//
// Transports (grpcapi, httpapi) call it; it calls only the store. All state
// sits behind one mutex, so that "pick a worker, mark the task, count the
// slot" is a single step. The dispatcher lives by these rules:
//
//   - Nothing blocks on a channel, the network or the disk while holding
//     the lock. Messages for a worker go to its session's outbox, which the
//     stream handler drains; writes are queued with store.Apply, which never
//     waits; their commits are waited for after the lock is released.
//   - A client or worker is acknowledged only for what is on disk: a 202 after
//     the task's commit, a report's ack after its result's commit (a retried
//     report waits for the first one's), a task is sent to a worker only after
//     its delivery's commit. A failed write is retried by the store until it
//     lands, never dropped; meanwhile new tasks are refused (ErrUnavailable).
//   - Durations (leases, claim windows, delivery deadlines) come from the
//     monotonic clock (Params.Mono), never from wall time; wall time
//     (Params.Now) only stamps what people read. A wall-clock step moves
//     timestamps and nothing else.
//   - Every delivery of a task is identified uniquely, across master
//     restarts, by (task ID, attempt): the attempt is durable before the
//     worker hears of it, so a restarted master never hands out a number
//     twice. A worker's slot is counted per delivery, and only a result for
//     that delivery frees it.
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
	// Now is the wall clock, in UTC, for the timestamps people read; Mono
	// is a monotonic clock (time since any fixed start) for every duration
	// the dispatcher measures. Both are injected so tests control time.
	Now   func() time.Time
	Mono  func() time.Duration
	NewID func() string // task IDs
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
	orphans   map[string]time.Duration   // running tasks whose worker is away -> when (monotonic) to re-queue them unclaimed
	closedCh  chan struct{}              // closed by Close: wakes waiters
	reserved  int                        // queue places held by submissions waiting for their write
}

type eviction struct {
	id        string
	committed <-chan error
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
	if p.Mono == nil {
		start := time.Now()
		p.Mono = func() time.Duration { return time.Since(start) } // time.Since reads the monotonic clock
	}
	return &Dispatcher{
		p:         p,
		log:       p.Log.With("component", "dispatch"),
		tasks:     newLiveTasks(),
		waiters:   make(map[string][]chan struct{}),
		keys:      make(map[string]string),
		completed: make(map[string]int),
		orphans:   make(map[string]time.Duration),
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
	orphaned := 0
	grace := d.p.Mono() + d.p.WorkerTimeout
	for i := range live {
		t := &task.Task{}
		*t = live[i] // a copy: a pointer into live would keep the whole slice in memory
		t.History = histories[t.ID]
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
		if prev, ok, err := d.replay(ctx, s); err != nil || ok {
			return prev, false, err
		}
	}
	// A write that is failing would hold this submission until the disk
	// recovers; say so now instead. What was accepted before stays safe:
	// the store keeps retrying it.
	if err := d.p.Store.WriteErr(); err != nil {
		return task.Task{}, false, fmt.Errorf("%w: the database is not accepting writes (%v); retry later", task.ErrUnavailable, err)
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
	d.reserved--
	if err != nil {
		d.mu.Unlock()
		if errors.Is(err, task.ErrConflict) && s.IdempotencyKey != "" {
			// Another submission with the same key got there first: the
			// unique index decided, and this one is its replay. Keyed
			// submissions never wait for each other otherwise.
			if prev, ok, err := d.replay(ctx, s); err != nil || ok {
				return prev, false, err
			}
		}
		return task.Task{}, false, fmt.Errorf("storing task: %w", err)
	}
	defer d.mu.Unlock()
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

// replay returns the task an earlier submission with s's idempotency key
// created, if there is one; the same key with another command is a conflict.
func (d *Dispatcher) replay(ctx context.Context, s Submission) (task.Task, bool, error) {
	prev, ok, err := d.byKey(ctx, s.IdempotencyKey)
	if err != nil || !ok {
		return task.Task{}, false, err
	}
	if prev.Cmd != s.Cmd {
		return task.Task{}, false, fmt.Errorf("%w: idempotency key %q was already used for another command", task.ErrConflict, s.IdempotencyKey)
	}
	return prev, true, nil
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
		// The delivery keeps its slot until the worker reports the kill. A
		// worker that is away now is told when it comes back and lists the
		// task (claimLocked).
		d.cancelOnLocked(t.WorkerID, id)
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

// Sweep drops workers whose lease expired (no heartbeat within the worker
// timeout: dead, paused or cut off), gives up deliveries that outlived their
// task's timeout plus a grace without a result, re-queues the tasks of
// workers that did not come back to claim them, and forgets final tasks
// that are safely on disk. An owner calls it periodically; tests call it
// after moving the clock. Every duration here is monotonic.
func (d *Dispatcher) Sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.p.Mono()
	expiry := d.p.WorkerTimeout - d.SweepInterval()
	for _, s := range slices.Clone(d.rotation) {
		if silent := now - s.seenMono; silent > expiry {
			d.log.Warn("worker timed out", "worker_id", s.WorkerID, "silent_for", silent.Round(time.Millisecond))
			why := fmt.Sprintf("it sent no heartbeat for %s", silent.Round(time.Second))
			d.emitLocked(events.Event{Type: events.WorkerTimedOut, WorkerID: s.WorkerID, Reason: "timed_out", Detail: why})
			d.endLocked(s, "timed_out", why)
			continue
		}
		d.expireDeliveriesLocked(s, now)
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
			d.takeBackLocked(t, "not_reclaimed", "its worker "+t.WorkerID+" did not come back to claim it in time")
		}
	}
	d.assignLocked()
	d.evictLocked()
}

// expireDeliveriesLocked gives up the deliveries on s whose deadline passed:
// a worker that heartbeats but never reports (or never reads its stream)
// would otherwise pin them, and its slots, forever. The task is re-queued
// or fails, and the worker is told to kill the run, should it still go on.
func (d *Dispatcher) expireDeliveriesLocked(s *Session, now time.Duration) {
	for id, h := range s.inflight {
		if now < h.deadline || !h.sent {
			continue
		}
		t, ok := d.tasks.get(id)
		if !ok || !d.currentLocked(t, s.WorkerID, h) {
			delete(s.inflight, id)
			d.log.Warn("worker never reported a delivery it was told to kill; freeing its slot", "task_id", id, "worker_id", s.WorkerID, "attempt", h.attempt)
			continue
		}
		d.log.Warn("no result within the task's timeout plus grace; giving the delivery up", "task_id", id, "worker_id", s.WorkerID, "attempt", h.attempt)
		// The run may go on: it keeps its slot, and the task goes to another
		// worker, until the worker reports the kill or one more grace passes.
		h.canceled, h.deadline = true, now+reportGrace
		s.send(Message{Cancel: id})
		d.takeBackLocked(t, "no_result", fmt.Sprintf("worker %s sent no result within the task's timeout (%s) plus %s", s.WorkerID, t.Timeout, reportGrace))
	}
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
	// Only a result for the delivery the slot holds frees it: a late result
	// of an older delivery of the same task must not free the slot of the
	// one the worker runs now.
	if s := d.instanceLocked(r.WorkerID, r.InstanceID); s != nil {
		if h, ok := s.inflight[r.TaskID]; ok && (h.attempt == 0 || h.attempt == r.Attempt) {
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
	if a == nil {
		// Every delivery is on disk before it is sent, so this one never
		// was: a confused or forged worker. Its result must not decide a
		// task, nor take the number of a delivery still to come.
		fill()
		d.mu.Unlock()
		d.log.Warn("result refused: no such delivery was sent to this worker", "task_id", r.TaskID, "worker_id", r.WorkerID, "attempt", r.Attempt)
		return false, fmt.Errorf("%w: delivery %d of task %s was never sent to worker %s", task.ErrNotFound, r.Attempt, r.TaskID, r.WorkerID)
	}
	if reported(a) {
		// This delivery's result is already recorded: the worker is retrying
		// a report whose acknowledgement it did not get. The first report's
		// write may not have reached the disk yet; writes land in order, so
		// once a barrier behind it has, the result is there.
		fill()
		dup := a.Duplicate
		d.mu.Unlock()
		return dup, d.p.Store.Flush(ctx)
	}
	code := r.ExitCode
	if r.Canceled && !t.Status.Final() {
		// The master sends a kill only for a task that is final or a
		// delivery it gave up (replaced, or no result in time), never to
		// cancel a task that goes on: this run's end is no result of the
		// task. The delivery is lost, its end noted; should it still be the
		// current one (its worker took it back before the kill landed), the
		// task is taken back, to run again.
		if t.Status == task.StatusRunning && t.WorkerID == r.WorkerID && a.N == t.Attempts {
			d.takeBackLocked(t, "killed", "worker "+r.WorkerID+" killed a delivery the master had given up")
		}
		a.Outcome, a.ExitCode, a.Error, a.FinishedAt = task.OutcomeLost, &code, "killed: the master had given this delivery up", r.FinishedAt
		committed := d.p.Store.Apply(store.Write{Attempt: copyAttempt(a)})
		fill()
		d.mu.Unlock()
		return false, <-committed
	}
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
	if last := lastAttempt(t); last != a && last.Outcome == task.OutcomeRunning {
		// A late result of a lost delivery decided the task: the delivery
		// that replaced it has nothing left to do.
		d.cancelOnLocked(last.WorkerID, t.ID)
	}
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
