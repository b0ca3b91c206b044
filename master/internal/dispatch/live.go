package dispatch

import (
	"maps"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// liveTasks holds the dispatcher's live tasks. A task that is queued or
// scheduled and has never been sent to a worker (nearly all of them when a
// backlog builds up) is kept as a queuedTask: what it takes to send it, a
// fifth of the size of a task.Task, so that a million queued tasks fit in a
// few hundred MiB. It
// becomes a full task.Task the first time the dispatcher takes it to
// change it (get), so callers change *task.Task as they always did.
//
// Guarded by Dispatcher.mu.
type liveTasks struct {
	full map[string]*task.Task // every other live task, and final ones not yet forgotten
	// By task ID. Pointers, not values: a map's table holds its slots
	// inline and doubles as it grows, so large values would be paid up to
	// twice over.
	queued map[string]*queuedTask
	// sets interns the requirements of compact tasks: a backlog of a
	// million tasks that require the same labels holds one map of them.
	sets map[string]*reqSet
}

// queuedTask is a task as Submit creates it: every field not here is zero.
// It is 48 bytes, a size class of its own: what most tasks lack is behind
// extra, so that a million plain queued tasks cost no more for it.
type queuedTask struct {
	cmd         string
	created     int64 // Unix nanoseconds, in UTC as the store keeps it
	timeout     time.Duration
	maxAttempts int32
	priority    int8
	scheduled   bool
	extra       *queuedExtra // nil: no idempotency key, requirements, run time or retry policy, as most tasks
}

// queuedExtra is what few compact tasks have.
type queuedExtra struct {
	key        string  // idempotency key
	requires   *reqSet // nil: none
	runAt      int64   // Unix nanoseconds, as created
	retryOn    []task.Outcome
	backoff    time.Duration
	maxBackoff time.Duration
}

// reqSet is one set of required labels, shared by the compact tasks that
// require it; refs counts them.
type reqSet struct {
	key    string
	labels map[string]string // never changed
	refs   int
}

func newLiveTasks() liveTasks {
	return liveTasks{full: make(map[string]*task.Task), queued: make(map[string]*queuedTask), sets: make(map[string]*reqSet)}
}

// compactable reports whether t holds nothing a queuedTask would drop.
func compactable(t *task.Task) bool {
	return (t.Status == task.StatusQueued || t.Status == task.StatusScheduled) && t.Attempts == 0 && t.WorkerID == "" && t.ExitCode == nil &&
		t.Stdout == "" && t.Stderr == "" && !t.StdoutCut && !t.StderrCut && t.Error == "" &&
		t.AssignedAt.IsZero() && t.StartedAt.IsZero() && t.FinishedAt.IsZero() && len(t.History) == 0 &&
		t.CreatedAt.Equal(createdAt(t.CreatedAt.UnixNano())) && t.MaxAttempts == int(int32(t.MaxAttempts)) &&
		t.Priority >= 0 && t.Priority <= task.MaxPriority && t.AttemptBase == 0 && t.WaitingFor == "" &&
		(t.RunAt.IsZero() || t.RunAt.Equal(createdAt(t.RunAt.UnixNano()))) &&
		(t.Requires == nil || len(t.Requires) > 0) && (t.RetryOn == nil || len(t.RetryOn) > 0)
}

// createdAt is the inverse of CreatedAt.UnixNano(): the same instant, in
// UTC and without a monotonic reading, as the store returns every time.
func createdAt(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func (q *queuedTask) task(id string) *task.Task {
	t := &task.Task{ID: id, Cmd: q.cmd, Status: task.StatusQueued, CreatedAt: createdAt(q.created),
		Timeout: q.timeout, MaxAttempts: int(q.maxAttempts), Priority: int(q.priority)}
	if q.scheduled {
		t.Status = task.StatusScheduled
	}
	if x := q.extra; x != nil {
		t.IdempotencyKey = x.key
		if x.requires != nil {
			t.Requires = maps.Clone(x.requires.labels)
		}
		if x.runAt != 0 {
			t.RunAt = createdAt(x.runAt)
		}
		t.RetryOn, t.Backoff, t.MaxBackoff = slices.Clone(x.retryOn), x.backoff, x.maxBackoff
	}
	return t
}

// put adds t, keeping it compact when it can. The caller hands t over.
func (l *liveTasks) put(t *task.Task) {
	l.drop(t.ID)
	if !compactable(t) {
		l.full[t.ID] = t
		return
	}
	q := &queuedTask{cmd: t.Cmd, created: t.CreatedAt.UnixNano(), timeout: t.Timeout,
		maxAttempts: int32(t.MaxAttempts), priority: int8(t.Priority), scheduled: t.Status == task.StatusScheduled}
	if t.IdempotencyKey != "" || len(t.Requires) > 0 || !t.RunAt.IsZero() || t.RetryOn != nil || t.Backoff != 0 || t.MaxBackoff != 0 {
		x := &queuedExtra{key: t.IdempotencyKey, retryOn: t.RetryOn, backoff: t.Backoff, maxBackoff: t.MaxBackoff}
		if !t.RunAt.IsZero() {
			x.runAt = t.RunAt.UnixNano()
		}
		if len(t.Requires) > 0 {
			key := labels.String(t.Requires)
			rs := l.sets[key]
			if rs == nil {
				rs = &reqSet{key: key, labels: maps.Clone(t.Requires)}
				l.sets[key] = rs
			}
			rs.refs++
			x.requires = rs
		}
		q.extra = x
	}
	l.queued[t.ID] = q
}

func (q *queuedTask) extraRequires() *reqSet {
	if q.extra == nil {
		return nil
	}
	return q.extra.requires
}

// drop removes the task, compact or full, releasing its requirements.
func (l *liveTasks) drop(id string) {
	if q, ok := l.queued[id]; ok {
		if rs := q.extraRequires(); rs != nil {
			if rs.refs--; rs.refs == 0 {
				delete(l.sets, rs.key)
			}
		}
		delete(l.queued, id)
	}
	delete(l.full, id)
}

// get returns the task to change it: a compact one becomes a full one.
func (l *liveTasks) get(id string) (*task.Task, bool) {
	if t, ok := l.full[id]; ok {
		return t, true
	}
	q, ok := l.queued[id]
	if !ok {
		return nil, false
	}
	t := q.task(id)
	l.drop(id)
	l.full[id] = t
	return t, true
}

// delivered returns the task to change it if it was ever sent to a worker,
// or false. A compact task never was, and stays compact.
func (l *liveTasks) delivered(id string) (*task.Task, bool) {
	t, ok := l.full[id]
	if !ok || len(t.History) == 0 {
		return nil, false
	}
	return t, true
}

// view returns a copy of the task, to read it, leaving a compact one compact.
func (l *liveTasks) view(id string) (task.Task, bool) {
	if t, ok := l.full[id]; ok {
		return copyTask(t), true
	}
	if q, ok := l.queued[id]; ok {
		return *q.task(id), true
	}
	return task.Task{}, false
}

func (l *liveTasks) del(id string) { l.drop(id) }

func (l *liveTasks) len() int { return len(l.full) + len(l.queued) }

// status returns the task's status without expanding a compact one.
func (l *liveTasks) status(id string) (task.Status, bool) {
	if t, ok := l.full[id]; ok {
		return t.Status, true
	}
	if q, ok := l.queued[id]; ok {
		if q.scheduled {
			return task.StatusScheduled, true
		}
		return task.StatusQueued, true
	}
	return "", false
}

// running returns how many live tasks are running. Compact tasks are all
// queued, so only the full ones are looked at.
func (l *liveTasks) running() int {
	n := 0
	for _, t := range l.full {
		if t.Status == task.StatusRunning {
			n++
		}
	}
	return n
}
