package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
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
