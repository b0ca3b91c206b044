package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// Submission is a request for a new task.
type Submission struct {
	Cmd            string
	Timeout        time.Duration // 0: the default
	MaxAttempts    int           // 0: the default
	IdempotencyKey string

	Priority int               // 1 (most urgent) to 5; 0: task.DefaultPriority
	Requires map[string]string // labels a worker must have to run it
	// RunAt or Delay (not both) make a delayed run: the task is scheduled
	// until then. A RunAt in the past queues it at once.
	RunAt time.Time
	Delay time.Duration
	// RetryOn (failed, timed_out) runs the task again after those outcomes,
	// up to MaxAttempts, waiting Backoff (0: 1s) doubled each time with
	// jitter, at most MaxBackoff (0: 5m).
	RetryOn    []task.Outcome
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Submit validates, stores and queues a new task. With an idempotency key
// that was used before it returns that task and created=false instead.
func (d *Dispatcher) Submit(ctx context.Context, s Submission) (t task.Task, created bool, err error) {
	req := requestOf(s) // before Normalize fills in the defaults
	if s, err = d.Normalize(s); err != nil {
		return task.Task{}, false, err
	}
	if s.IdempotencyKey != "" {
		if prev, ok, err := d.replay(ctx, s, req); err != nil || ok {
			return prev, false, err
		}
	}
	// A write that is failing would hold this submission until the disk
	// recovers; say so now instead. What was accepted before stays safe:
	// the store keeps retrying it.
	if err := d.p.Store.WriteErr(); err != nil {
		return task.Task{}, false, fmt.Errorf("%w: the database is not accepting writes (%v); retry later", task.ErrUnavailable, err)
	}

	l := holder{mu: &d.mu}
	l.lock()
	defer l.release()
	if d.closed {
		return task.Task{}, false, task.ErrClosed
	}
	// Checked before anything is written, and the place held until the
	// task is queued, so concurrent submissions cannot overshoot the limit.
	if d.queueFullLocked() {
		return task.Task{}, false, fmt.Errorf("%w: %d tasks are queued or scheduled, the most MASTER_MAX_QUEUED allows; retry later", task.ErrFull, d.p.MaxQueued)
	}
	now, mono := d.p.Now(), d.p.Mono()
	nt := &task.Task{
		ID: d.p.NewID(), Cmd: s.Cmd, Status: task.StatusQueued, CreatedAt: now,
		Timeout: s.Timeout, MaxAttempts: s.MaxAttempts, IdempotencyKey: s.IdempotencyKey,
		Priority: s.Priority, Requires: s.Requires, RetryOn: s.RetryOn, Backoff: s.Backoff, MaxBackoff: s.MaxBackoff,
	}
	// The wait is measured on the monotonic clock from now; RunAt says
	// when that is for people and for a restarted master.
	wait := s.Delay
	switch {
	case s.Delay > 0:
		nt.RunAt = now.Add(s.Delay)
	case !s.RunAt.IsZero():
		nt.RunAt = s.RunAt.UTC()
		wait = s.RunAt.Sub(now)
	}
	if wait > 0 {
		nt.Status = task.StatusScheduled
	}
	if s.IdempotencyKey != "" {
		r := req // not &req, which would put req on the heap for every submission
		r.RunAt = nt.RunAt
		nt.Request = &r
	}
	if idx := d.straightLocked(nt); idx >= 0 {
		return d.submitStraight(&l, nt, idx)
	}
	d.reserved++
	committed := d.writeLocked(store.Insert, nt, nil, store.Insert) // a new row: no upsert
	l.unlock()

	// On disk before anyone hears of it: a 202 means the task survives a crash.
	err = <-committed
	l.lock()
	d.reserved--
	if err != nil {
		l.unlock()
		if errors.Is(err, task.ErrConflict) && s.IdempotencyKey != "" {
			// Another submission with the same key got there first: the
			// unique index decided, and this one is its replay. Keyed
			// submissions never wait for each other otherwise.
			if prev, ok, err := d.replay(ctx, s, req); err != nil || ok {
				return prev, false, err
			}
		}
		return task.Task{}, false, fmt.Errorf("storing task: %w", err)
	}
	c := copyTask(nt) // put hands nt over
	if nt.IdempotencyKey != "" {
		d.keys[nt.IdempotencyKey] = nt.ID
	}
	ev := events.Event{Type: events.TaskQueued, Time: nt.CreatedAt, TaskID: nt.ID, Cmd: shorten(nt.Cmd), Priority: nt.Priority, Requires: nt.Requires}
	if nt.Status == task.StatusScheduled {
		// Counted from the submission: the wait for the commit is part of it.
		d.scheduleLocked(nt, nt.RunAt, mono+wait)
		if d.debug() {
			d.log.Debug("task scheduled", "task_id", nt.ID, "run_at", nt.RunAt)
		}
		runAt := c.RunAt // not &c.RunAt, which would put c on the heap for every submission
		ev.Type, ev.Reason, ev.RunAt = events.TaskScheduled, "delayed", &runAt
	} else {
		d.queue.push(nt, d.tasks.key(nt.ID), false)
		if d.debug() {
			d.log.Debug("task queued", "task_id", nt.ID)
		}
	}
	d.tasks.put(nt)
	d.emitLocked(ev)
	d.assignLocked()
	if st, _ := d.tasks.statusOf(c.ID); st == task.StatusQueued || st == task.StatusScheduled {
		c.WaitingFor = d.waitingForLocked(&c)
		if st == task.StatusQueued && len(c.Requires) > 0 && d.eligibleLocked(c.Requires) == 0 {
			d.log.Warn("task queued that no connected worker can run", "task_id", c.ID, "waiting_for", c.WaitingFor)
		}
	}
	return c, true, nil
}

// straightLocked returns the index in the rotation of the worker that new
// task t can go to at once, or -1. Only while nothing waits for a worker:
// no queued task, and no submission still being written (which may be more
// urgent). Not with an idempotency key, whose insert may be refused by the
// unique index in favour of another submission's.
func (d *Dispatcher) straightLocked(t *task.Task) int {
	if t.Status != task.StatusQueued || t.IdempotencyKey != "" || d.queue.waiting() > 0 || d.reserved > 0 {
		return -1
	}
	return d.findLocked(t.Requires, t.ID)
}

// submitStraight sends new task t to the worker at idx in the rotation, as
// assignLocked would once it was queued, but in one write rather than two:
// its row is inserted running, with its first delivery, so that its
// dispatch waits for one commit instead of the insert's and then the
// delivery's (on an idle cluster, the most of its queued-to-started time).
// Called with d.mu held, as l; it unlocks it. As in Submit, the task is answered
// once its row is on disk, as it was submitted (queued); the worker gets it
// then too, the stream's wait for the commit passed on from here. Its
// events are published as it is assigned, as every assignment's are: they
// tell of the dispatcher's state, which runs a commit ahead of the disk.
func (d *Dispatcher) submitStraight(l *holder, t *task.Task, idx int) (task.Task, bool, error) {
	accepted := copyTask(t)
	s := d.rotation[idx]
	d.next = (idx + 1) % len(d.rotation)
	if d.debug() {
		d.log.Debug("task queued", "task_id", t.ID)
	}
	d.emitLocked(events.Event{Type: events.TaskQueued, Time: t.CreatedAt, TaskID: t.ID, Cmd: shorten(t.Cmd), Priority: t.Priority, Requires: t.Requires})
	ready := make(chan error, 1)
	committed, assigned := d.deliverLocked(t, s, store.Insert, ready)
	d.assignedLocked(assigned)
	d.tasks.put(t) // running: kept as it is, not compacted
	l.unlock()

	err := <-committed
	if err != nil {
		// Only a store that is closing refuses such a write: the task
		// never existed. Its hold goes, and the stream that was to send
		// it ends with this error, as for any delivery not stored.
		l.lock()
		if h, ok := s.inflight[t.ID]; ok && h.attempt == 1 {
			delete(s.inflight, t.ID)
		}
		d.tasks.del(t.ID)
		l.unlock()
		ready <- err
		return task.Task{}, false, fmt.Errorf("storing task: %w", err)
	}
	ready <- nil
	return accepted, true, nil
}

// replay returns the task an earlier submission with s's idempotency key
// created, if there is one. The same key with a request that asks for
// anything else is a conflict, which names the fields that differ: a
// replay that silently dropped a new priority or run time would leave the
// client believing it was taken. req says which of s's fields its sender
// left to the defaults (requestOf).
func (d *Dispatcher) replay(ctx context.Context, s Submission, req task.Request) (task.Task, bool, error) {
	prev, ok, err := d.byKey(ctx, s.IdempotencyKey)
	if err != nil || !ok {
		return task.Task{}, false, err
	}
	if diff := differences(&prev, s, req); len(diff) > 0 {
		return task.Task{}, false, fmt.Errorf("%w: idempotency key %q was already used for another request (task %s); fields that differ: %s. Send the same request to get that task, or use a new key",
			task.ErrConflict, s.IdempotencyKey, prev.ID, strings.Join(diff, ", "))
	}
	return prev, true, nil
}

// requestOf reads, from a submission not yet normalized, which fields it
// left to the master's settings; Submit adds the run time.
func requestOf(s Submission) task.Request {
	return task.Request{DefaultTimeout: s.Timeout == 0, DefaultMaxAttempts: s.MaxAttempts == 0}
}

// differences names, as POST /tasks calls them, the fields in which
// submission s (normalized: defaults applied as Submit applies them now;
// req says which it had to) asks for something other than what task t
// was submitted with. A field both requests left out agrees whatever the
// master's setting was then and is now.
func differences(t *task.Task, s Submission, req task.Request) []string {
	var diff []string
	add := func(differ bool, field string) {
		if differ {
			diff = append(diff, field)
		}
	}
	r := t.Request // nil for a task stored before the master kept requests
	add(t.Cmd != s.Cmd, "cmd")
	add(t.Timeout != s.Timeout && !(r != nil && r.DefaultTimeout && req.DefaultTimeout), "timeout")
	add(t.MaxAttempts != s.MaxAttempts && !(r != nil && r.DefaultMaxAttempts && req.DefaultMaxAttempts), "max_attempts")
	add(priorityOf(t) != s.Priority, "priority")
	add(!maps.Equal(t.Requires, s.Requires), "requires")
	runAt, known := submittedRunAt(t)
	if known {
		// Submit set the run time to CreatedAt+Delay from the same reading
		// of the clock, or to run_at as given; both kept to the nanosecond,
		// in memory and on disk, so the comparison is exact.
		want, field := s.RunAt, "run_at"
		if s.Delay > 0 {
			want, field = t.CreatedAt.Add(s.Delay), "delay"
		}
		add(!runAt.Equal(want), field)
	}
	// Outcomes as a set: their order changes nothing.
	sameOn := len(t.RetryOn) == len(s.RetryOn)
	for _, o := range s.RetryOn {
		sameOn = sameOn && slices.Contains(t.RetryOn, o)
	}
	add(!sameOn, "retry_on")
	if len(t.RetryOn) > 0 && len(s.RetryOn) > 0 {
		// Without a policy on one side retry_on says it all: backoffs
		// apply only with it.
		add(t.Backoff != s.Backoff, "backoff")
		add(t.MaxBackoff != s.MaxBackoff, "max_backoff")
	}
	return diff
}

// submittedRunAt returns the run time t was submitted with (zero for
// none), and whether it is known: always for a task that kept its request
// (task.Request). For one stored before, RunAt is still it unless a retry
// under its retry policy replaced it with the retry's time or a retry by
// hand cleared it, which cannot have happened to a task that has not run,
// nor, after its runs, to one without a policy that was never retried by
// hand. (Such a task canceled before it ran and then retried by hand has
// lost its run_at too, and nothing tells it apart.)
func submittedRunAt(t *task.Task) (time.Time, bool) {
	if t.Request != nil {
		return t.Request.RunAt, true
	}
	return t.RunAt, t.AttemptBase == 0 && (t.Attempts == 0 || len(t.RetryOn) == 0)
}

// queueFullLocked reports whether the queue has no room for one more task.
// It costs O(1) whatever the queue holds: a refusal is what an overloaded
// master answers most, and assignments and reports wait for the same lock.
func (d *Dispatcher) queueFullLocked() bool {
	return d.p.MaxQueued > 0 && d.queue.waiting()+d.timers.waiting()+d.reserved >= d.p.MaxQueued
}

// compactAt is the fewest stale IDs worth sweeping out of the queue.
const compactAt = 1024

// leftQueueLocked records that a queued task stopped waiting without being
// popped and is final (canceled, finished by a late result). Call it after
// the task's status changed; finishLocked calls it for every queued task it
// finishes. (A task its worker reclaims goes on: queue.remove takes its ID
// out instead.) Its ID stays in the queue, counted stale, until
// assignLocked reaches it; once stale IDs outnumber waiting ones (say, tasks
// canceled while no worker pops) in its class, they are swept out at once. A
// sweep costs the class's length, paid for by the departures that made at
// least half of it stale, so memory follows the waiting tasks.
func (d *Dispatcher) leftQueueLocked(t *task.Task) {
	c := d.queue.left(t)
	if c != nil && c.q.stale >= compactAt && c.q.stale > c.q.waiting() {
		d.queue.keep(c, func(k taskKey) bool {
			st, ok := d.tasks.status(k)
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
	return normalizeSchedule(s)
}

// Bounds of the scheduling fields.
const (
	maxDelay          = 366 * 24 * time.Hour // how far ahead a run may be scheduled
	defaultBackoff    = time.Second
	defaultMaxBackoff = 5 * time.Minute
	minBackoff        = 10 * time.Millisecond
	maxBackoff        = 24 * time.Hour
)

// normalizeSchedule checks and completes the priority, requirements, run
// time and retry policy of a submission.
func normalizeSchedule(s Submission) (Submission, error) {
	if s.Priority == 0 {
		s.Priority = task.DefaultPriority
	}
	if s.Priority < task.MinPriority || s.Priority > task.MaxPriority {
		return s, fmt.Errorf("%w: priority must be between %d (most urgent) and %d", task.ErrInvalid, task.MinPriority, task.MaxPriority)
	}
	if err := labels.Validate(s.Requires); err != nil {
		return s, fmt.Errorf("%w: requires: %v", task.ErrInvalid, err)
	}
	if len(s.Requires) == 0 {
		s.Requires = nil
	} else {
		s.Requires = maps.Clone(s.Requires) // the caller's map must not change the task
	}
	switch {
	case !s.RunAt.IsZero() && s.Delay != 0:
		return s, fmt.Errorf("%w: give run_at or delay, not both", task.ErrInvalid)
	case s.Delay < 0 || s.Delay > maxDelay:
		return s, fmt.Errorf("%w: delay must be between 0s and %s", task.ErrInvalid, maxDelay)
	case !s.RunAt.IsZero() && !task.Keepable(s.RunAt):
		return s, fmt.Errorf("%w: run_at must be a time after 1970 and before %s", task.ErrInvalid, task.LastTime.Format(time.RFC3339))
	}
	if len(s.RetryOn) == 0 {
		if s.Backoff != 0 || s.MaxBackoff != 0 {
			return s, fmt.Errorf("%w: backoff and max_backoff apply only with retry_on, which is not set", task.ErrInvalid)
		}
		s.RetryOn = nil
		return s, nil
	}
	var on []task.Outcome
	for _, o := range s.RetryOn {
		if !slices.Contains(task.Retryable, o) {
			return s, fmt.Errorf("%w: retry_on: %q is not an outcome that can be retried; use failed, timed_out", task.ErrInvalid, o)
		}
		if !slices.Contains(on, o) {
			on = append(on, o)
		}
	}
	s.RetryOn = on
	if s.Backoff == 0 {
		s.Backoff = defaultBackoff
		if s.MaxBackoff != 0 {
			// a max_backoff under the default is the first wait too; one
			// under the least backoff is refused as the max_backoff it is
			s.Backoff = max(min(defaultBackoff, s.MaxBackoff), minBackoff)
		}
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = max(defaultMaxBackoff, s.Backoff)
	}
	switch {
	case s.Backoff < minBackoff || s.Backoff > maxBackoff:
		return s, fmt.Errorf("%w: backoff must be between %s and %s", task.ErrInvalid, minBackoff, maxBackoff)
	case s.MaxBackoff < s.Backoff || s.MaxBackoff > maxBackoff:
		return s, fmt.Errorf("%w: max_backoff must be between backoff (%s) and %s", task.ErrInvalid, s.Backoff, maxBackoff)
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
	if err == nil {
		// The key's row has no history: a replay answers the task as Get
		// does, whole.
		t, err = d.Get(ctx, t.ID)
	}
	if errors.Is(err, task.ErrNotFound) {
		return task.Task{}, false, nil
	}
	return t, err == nil, err
}

// debug says whether debug lines are logged. The hot paths ask before
// logging one: its arguments, boxed into a slice of interfaces, are
// allocated before the logger can say it drops the line.
func (d *Dispatcher) debug() bool {
	return d.log.Enabled(context.Background(), slog.LevelDebug)
}
