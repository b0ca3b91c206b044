// Package dispatch is the master's scheduler: it keeps the live tasks, the
// queue and the rotation of connected workers, hands each queued task to
// exactly one worker, round-robin, never beyond a worker's free slots, and
// takes tasks back from workers that vanish.
//
// Scheduling: a free worker takes the most urgent queued task it can run,
// priority 1 before 5 and oldest first within a priority (strict order: a
// steady stream of urgent tasks starves the others). A task runs only on a
// worker that has every label it requires; among those, each task goes to
// the first one with a free slot in rotation order after the worker that
// got the previous task, so round-robin holds for every kind of task. A
// task with a run time (a delayed run, or a retry waiting out its backoff)
// is scheduled until then, then queued.
//
// The package is laid out by job: dispatch.go the type and its wiring;
// tasks.go and submit.go the calls on tasks; session.go the workers'
// sessions; assign.go assignment; report.go results and retry policies;
// sweep.go restart recovery, leases and the loop (Run) that sweeps; finish.go
// finishing and eviction; queue.go and fifo.go the queue; timers.go the
// scheduled tasks; live.go how live tasks are kept, ids.go how their IDs
// are held, table.go the table of compact queued tasks.
//
// Every change is written through to the store. Live tasks (scheduled,
// queued, running) are kept in memory; a final task leaves memory once its final
// state is committed, and is read from the store after that.
//
// Transports (grpcapi, httpapi) call it; it calls only the store. All state
// sits behind one mutex, so that "pick a worker, mark the task, count the
// slot" is a single step. The dispatcher lives by these rules:
//
//   - Nothing blocks on a channel, the network or the disk while holding
//     the lock. Messages for a worker go to its session's outbox, which the
//     stream handler drains; writes are queued with store.Apply, which never
//     waits; their commits are waited for after the lock is released. The
//     dispatcher logs under the lock, so its logger must not wait for its
//     output either: main's writes through logbuf. Nor is the lock left
//     held by a panic, which the transports recover from: a call that lets
//     go of it to wait and takes it again holds it through a holder.
//   - A client or worker is acknowledged only for what is on disk: a 202 after
//     the task's commit, a report's ack after its result's commit (a retried
//     report waits for the first one's), a task is sent to a worker only after
//     its delivery's commit. (A task submitted while a worker is free and
//     nothing waits is stored running, with its first delivery, in one
//     write: its 202 and its send both wait for that commit.) A failed write is retried by the store until it
//     lands, never dropped; meanwhile new tasks are refused (ErrUnavailable).
//   - Durations (leases, claim windows, delivery deadlines, delays and
//     retry backoffs) come from the monotonic clock (Params.Mono), never
//     from wall time; wall time (Params.Now) only stamps what people read,
//     and, for a scheduled task, the run time a restarted master counts its
//     remaining wait from. A wall-clock step moves timestamps and nothing
//     else.
//   - Every delivery of a task is identified uniquely, across master
//     restarts, by (task ID, attempt): the attempt is durable before the
//     worker hears of it, so a restarted master never hands out a number
//     twice. A worker's slot is counted per delivery, and only a result for
//     that delivery frees it.
package dispatch

import (
	"log/slog"
	"math/rand/v2"
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
	// Rand returns a number in [0, 1), for the jitter of retry backoffs;
	// nil uses math/rand/v2.
	Rand func() float64
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

// holder is d.mu as one call holds it, for the calls that let go of it to
// wait (for a commit, a read off disk) and take it again. Deferred,
// release lets go of it should the call panic while it holds it: both
// transports recover a handler's panic and go on serving, and a lock left
// held would hang every later call instead. Each call has its own.
type holder struct {
	mu *sync.Mutex
	on bool
}

func (h *holder) lock()   { h.mu.Lock(); h.on = true }
func (h *holder) unlock() { h.on = false; h.mu.Unlock() }

// release unlocks if the call still holds the lock: deferred once, right
// after the first lock.
func (h *holder) release() {
	if h.on {
		h.unlock()
	}
}

// Dispatcher owns the live tasks, queue and rotation. It is safe for
// concurrent use.
type Dispatcher struct {
	p   Params
	log *slog.Logger

	mu       sync.Mutex // protects every field below, and each Session's mutable fields
	closed   bool
	tasks    liveTasks                  // live tasks, and final ones until their final write is committed
	waiters  map[string][]chan struct{} // closed when the task becomes final
	keys     map[string]string          // idempotency key -> task ID, for keys used since start
	queue    queue                      // IDs waiting for a worker, oldest first
	rotation []*Session                 // connected workers in the order they registered
	// rotationGen counts changes of the rotation, so classes know when
	// to work out their eligible workers again.
	rotationGen uint64
	next        int                      // index in rotation where the search for a free slot starts
	completed   map[string]int           // results per worker ID; outlives sessions so counts survive reconnects
	evicting    []eviction               // final tasks nobody waits for, to drop from memory once committed
	orphans     map[string]time.Duration // running tasks whose worker is away -> when (monotonic) to re-queue them unclaimed
	// unended are the runs that were still going on, their end unreported,
	// when the master last stopped, and that are no task's current
	// delivery: the newest run of a final task (store.Unended), and a run
	// from before a retry by hand of a live one (its history). Each ends
	// lost unless its worker comes back holding it by the deadline
	// (monotonic), as orphans do for live tasks. By delivery: a live task
	// may have more than one.
	unended map[Delivery]unendedRun
	// diskOnly counts the writes queued for tasks off memory (a late
	// result, an unended run's end): Retry, which reads such a task
	// without the lock, reads it again should one have come meanwhile.
	diskOnly uint64
	closedCh chan struct{}  // closed by Close: wakes waiters
	reserved int            // queue places held by submissions waiting for their write
	timers   timers         // scheduled tasks by when they are due
	kick     chan struct{}  // cap 1: a timer earlier than any before was set; wakes Run
	rand     func() float64 // in [0, 1), for the jitter of retry backoffs
}

type eviction struct {
	t         *task.Task // as it was made final: forgetLocked
	committed <-chan error
}

// WorkerInfo is a worker as the API shows it.
type WorkerInfo struct {
	ID          string
	Slots       int
	Labels      map[string]string
	ConnectedAt time.Time
	LastSeen    time.Time
	Draining    bool
	Running     int
	Completed   int
	Next        bool // the next task goes to this worker; none is marked while all are busy or draining
}

// New returns a Dispatcher. Call Recover before serving.
func New(p Params) *Dispatcher {
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
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
		unended:   make(map[Delivery]unendedRun),
		closedCh:  make(chan struct{}),
		kick:      make(chan struct{}, 1),
		rand:      p.Rand,
	}
}

// HeartbeatInterval is how often workers are asked to renew their lease:
// four beats fit in one worker timeout, so one lost beat is not a death.
func (d *Dispatcher) HeartbeatInterval() time.Duration { return d.p.WorkerTimeout / 4 }

// ClaimWindow is how long the tasks of a worker whose connection closed
// wait for it to come back and claim them before they are queued again:
// half a worker timeout. A worker that lives reconnects at once (its first
// retry waits at most 100 ms), so half leaves it ample room on a loaded
// machine, while the task of a worker that died, whose connection closes
// with it, runs again within about half the time a silent worker's takes
// (issue 6: within 10 s, the default timeout). After a master restart the
// workers first wait out their backoff, up to WORKER_RECONNECT_MAX, so the
// tasks the disk calls running wait a whole worker timeout (Recover).
func (d *Dispatcher) ClaimWindow() time.Duration { return d.p.WorkerTimeout / 2 }

// SweepInterval is how often the owner must call Sweep. A lease expires one
// interval before the worker timeout, so a silent worker is dropped within
// the timeout however the sweeps fall.
func (d *Dispatcher) SweepInterval() time.Duration { return d.p.WorkerTimeout / 10 }

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
			Labels:      s.Labels,
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

// Close ends every session and refuses new work. Reports are still
// accepted, so results arriving during shutdown are kept; the store is
// closed by its owner after the transports have stopped. Calls after the
// first do nothing.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	close(d.closedCh)
	for _, s := range d.rotation {
		close(s.done)
	}
	d.rotation = nil
	d.rotationGen++
}

// Closed is closed by Close: long-lived calls (a worker's Report stream)
// end with it, so that the master's shutdown need not wait for them.
func (d *Dispatcher) Closed() <-chan struct{} { return d.closedCh }

// Stats are counts for gauges.
type Stats struct {
	Queued     int                   // live tasks waiting for a worker
	ByPriority [task.MaxPriority]int // of Queued, by priority: [0] is priority 1
	Scheduled  int                   // live tasks waiting for their run time
	Running    int                   // tasks a worker holds
	Workers    int                   // connected workers
}

// Stats counts the live tasks and workers now.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	// The queue counts the tasks waiting in it exactly, at no cost, and a
	// backlog can be millions of them; only the full tasks (running ones,
	// and the few re-queued or being finished) are walked for Running.
	return Stats{Queued: d.queue.waiting(), ByPriority: d.queue.byPriority, Scheduled: d.timers.waiting(),
		Running: d.tasks.running(), Workers: len(d.rotation)}
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
