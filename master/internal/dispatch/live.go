package dispatch

import (
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// liveTasks holds the dispatcher's live tasks. A task that is queued and
// has never been sent to a worker (nearly all of them when a backlog builds
// up) is kept as a queuedTask: what it takes to send it, a fifth of the size
// of a task.Task, so that a million queued tasks fit in a few hundred MiB. It
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
}

// queuedTask is a task as Submit creates it: every field not here is zero.
type queuedTask struct {
	cmd         string
	key         string // idempotency key
	created     int64  // Unix nanoseconds, in UTC as the store keeps it
	timeout     time.Duration
	maxAttempts int32
}

func newLiveTasks() liveTasks {
	return liveTasks{full: make(map[string]*task.Task), queued: make(map[string]*queuedTask)}
}

// compactable reports whether t holds nothing a queuedTask would drop.
func compactable(t *task.Task) bool {
	return t.Status == task.StatusQueued && t.Attempts == 0 && t.WorkerID == "" && t.ExitCode == nil &&
		t.Stdout == "" && t.Stderr == "" && !t.StdoutCut && !t.StderrCut && t.Error == "" &&
		t.AssignedAt.IsZero() && t.StartedAt.IsZero() && t.FinishedAt.IsZero() && len(t.History) == 0 &&
		t.CreatedAt.Equal(createdAt(t.CreatedAt.UnixNano())) && t.MaxAttempts == int(int32(t.MaxAttempts))
}

// createdAt is the inverse of CreatedAt.UnixNano(): the same instant, in
// UTC and without a monotonic reading, as the store returns every time.
func createdAt(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func (q *queuedTask) task(id string) *task.Task {
	return &task.Task{ID: id, Cmd: q.cmd, Status: task.StatusQueued, CreatedAt: createdAt(q.created),
		Timeout: q.timeout, MaxAttempts: int(q.maxAttempts), IdempotencyKey: q.key}
}

// put adds t, keeping it compact when it can. The caller hands t over.
func (l *liveTasks) put(t *task.Task) {
	if compactable(t) {
		delete(l.full, t.ID)
		l.queued[t.ID] = &queuedTask{cmd: t.Cmd, key: t.IdempotencyKey, created: t.CreatedAt.UnixNano(), timeout: t.Timeout, maxAttempts: int32(t.MaxAttempts)}
		return
	}
	delete(l.queued, t.ID)
	l.full[t.ID] = t
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
	delete(l.queued, id)
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

func (l *liveTasks) del(id string) {
	delete(l.full, id)
	delete(l.queued, id)
}

func (l *liveTasks) len() int { return len(l.full) + len(l.queued) }

// status returns the task's status without expanding a compact one.
func (l *liveTasks) status(id string) (task.Status, bool) {
	if t, ok := l.full[id]; ok {
		return t.Status, true
	}
	if _, ok := l.queued[id]; ok {
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
