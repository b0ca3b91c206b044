package dispatch

import (
	"hash/maphash"
	"maps"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// liveTasks holds the dispatcher's live tasks. A task that is queued or
// scheduled and has never been sent to a worker (nearly all of them when a
// backlog builds up) is kept as a queuedTask: its creation time and a
// pointer to its shape (what it takes to send it), which tasks submitted
// alike share, held with its key in a table: 32 bytes a slot, so that a
// million queued tasks cost tens of MiB, not hundreds
// (BenchmarkQueuedMemory). It becomes a full task.Task the first time the
// dispatcher takes it to change it (get), so callers change *task.Task as
// they always did.
//
// The table, the map of full tasks and the queue's fifos hold an ID as a
// taskKey (see ids.go): 16 bytes and no pointer, where the string would
// cost 48 more bytes on the heap and be scanned by every GC cycle.
//
// Guarded by Dispatcher.mu.
type liveTasks struct {
	ids  idTable
	full map[taskKey]*task.Task // every other live task, and final ones not yet forgotten
	// By task ID. Values, not pointers: a queuedTask is as small as the
	// pointer plus the object it would point to. Not a Go map: see
	// compactTable.
	queued compactTable
	// sets interns the requirements of compact tasks: a backlog of a
	// million tasks that require the same labels holds one map of them.
	sets map[string]*reqSet
	// shapes caches the last shapes made, so that tasks submitted alike
	// (the same command, timeout, attempts, priority; nothing extra) share
	// one: a cache, not an index, so it costs nothing to keep up when tasks
	// leave, and a backlog of distinct commands costs what it did before.
	shapes [shapeCache]*queuedShape
}

// shapeCache is the number of shapes cached, a power of two: room for the
// few kinds of task a backlog is usually made of.
const shapeCache = 64

// queuedTask is a task as Submit creates it: every field not here, or in
// its shape, is zero.
type queuedTask struct {
	shape   *queuedShape
	created int64 // Unix nanoseconds, in UTC as the store keeps it
}

// queuedShape is what a compact task holds besides its ID and creation
// time; never changed once made, so tasks can share it.
type queuedShape struct {
	cmd         string
	timeout     time.Duration
	maxAttempts int32
	priority    int8
	scheduled   bool
	extra       *queuedExtra // nil: no idempotency key, requirements, run time, retry policy or request, as most tasks
}

// queuedExtra is what few compact tasks have. A shape with one is never
// shared.
type queuedExtra struct {
	key        string  // idempotency key
	requires   *reqSet // nil: none
	runAt      int64   // Unix nanoseconds, as created
	retryOn    []task.Outcome
	backoff    time.Duration
	maxBackoff time.Duration
	req        *task.Request // never changed: shared with the task
}

// reqSet is one set of required labels, shared by the compact tasks that
// require it; refs counts them.
type reqSet struct {
	key    string
	labels map[string]string // never changed
	refs   int
}

func newLiveTasks() liveTasks {
	return liveTasks{ids: newIDTable(), full: make(map[taskKey]*task.Task), queued: newCompactTable(), sets: make(map[string]*reqSet)}
}

// compactable reports whether t holds nothing a queuedTask would drop.
func compactable(t *task.Task) bool {
	return (t.Status == task.StatusQueued || t.Status == task.StatusScheduled) && t.Attempts == 0 && t.WorkerID == "" && t.ExitCode == nil &&
		t.Stdout == "" && t.Stderr == "" && !t.StdoutCut && !t.StderrCut && t.Error == "" &&
		t.AssignedAt.IsZero() && t.StartedAt.IsZero() && t.FinishedAt.IsZero() && len(t.History) == 0 &&
		t.CreatedAt.Equal(createdAt(t.CreatedAt.UnixNano())) && t.MaxAttempts == int(int32(t.MaxAttempts)) &&
		t.Priority >= 0 && t.Priority <= task.MaxPriority && t.AttemptBase == 0 && t.RetriedAt.IsZero() && t.WaitingFor == "" &&
		(t.RunAt.IsZero() || t.RunAt.Equal(createdAt(t.RunAt.UnixNano()))) &&
		(t.Requires == nil || len(t.Requires) > 0) && (t.RetryOn == nil || len(t.RetryOn) > 0)
}

// createdAt is the inverse of CreatedAt.UnixNano(): the same instant, in
// UTC and without a monotonic reading, as the store returns every time.
func createdAt(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func (q queuedTask) task(id string) *task.Task {
	sh := q.shape
	t := &task.Task{ID: id, Cmd: sh.cmd, Status: task.StatusQueued, CreatedAt: createdAt(q.created),
		Timeout: sh.timeout, MaxAttempts: int(sh.maxAttempts), Priority: int(sh.priority)}
	if sh.scheduled {
		t.Status = task.StatusScheduled
	}
	if x := sh.extra; x != nil {
		t.IdempotencyKey = x.key
		if x.requires != nil {
			t.Requires = maps.Clone(x.requires.labels)
		}
		if x.runAt != 0 {
			t.RunAt = createdAt(x.runAt)
		}
		t.RetryOn, t.Backoff, t.MaxBackoff = slices.Clone(x.retryOn), x.backoff, x.maxBackoff
		t.Request = x.req
	}
	return t
}

// key returns the key of id, giving it one if it is new. Every task in
// the live tasks or the queue has one.
func (l *liveTasks) key(id string) taskKey { return l.ids.key(id) }

// id returns the ID k stands for: a live task's, or one whose task left
// memory while k stayed in the queue ("" for an alias, see idTable).
func (l *liveTasks) id(k taskKey) string { return l.ids.id(k) }

// put adds t, keeping it compact when it can. The caller hands t over.
func (l *liveTasks) put(t *task.Task) {
	k := l.ids.key(t.ID)
	l.drop(k)
	if !compactable(t) {
		l.full[k] = t
		return
	}
	sh := queuedShape{cmd: t.Cmd, timeout: t.Timeout, maxAttempts: int32(t.MaxAttempts), priority: int8(t.Priority),
		scheduled: t.Status == task.StatusScheduled}
	if t.IdempotencyKey != "" || len(t.Requires) > 0 || !t.RunAt.IsZero() || t.RetryOn != nil || t.Backoff != 0 || t.MaxBackoff != 0 || t.Request != nil {
		x := &queuedExtra{key: t.IdempotencyKey, retryOn: t.RetryOn, backoff: t.Backoff, maxBackoff: t.MaxBackoff, req: t.Request}
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
		sh.extra = x
		own := new(queuedShape) // made here only: &sh would put every shape on the heap, shared or not
		*own = sh
		l.queued.set(k, queuedTask{shape: own, created: t.CreatedAt.UnixNano()})
		return
	}
	l.queued.set(k, queuedTask{shape: l.shared(sh), created: t.CreatedAt.UnixNano()})
}

// shared returns a shape equal to sh (which has no extra), the cached one
// if there is one.
func (l *liveTasks) shared(sh queuedShape) *queuedShape {
	slot := &l.shapes[maphash.String(l.ids.seed, sh.cmd)&(shapeCache-1)]
	if c := *slot; c != nil && *c == sh {
		return c
	}
	p := new(queuedShape) // not &sh, which would move sh to the heap on a hit too
	*p = sh
	*slot = p
	return p
}

func (q queuedTask) requires() *reqSet {
	if q.shape.extra == nil {
		return nil
	}
	return q.shape.extra.requires
}

// drop removes the task, compact or full, releasing its requirements. Its
// key stays: the task is being put again, or del forgets the key.
func (l *liveTasks) drop(k taskKey) {
	if q, ok := l.queued.get(k); ok {
		if rs := q.requires(); rs != nil {
			if rs.refs--; rs.refs == 0 {
				delete(l.sets, rs.key)
			}
		}
		l.queued.del(k)
	}
	delete(l.full, k)
}

// get returns the task to change it: a compact one becomes a full one.
func (l *liveTasks) get(id string) (*task.Task, bool) {
	k, ok := l.ids.lookup(id)
	if !ok {
		return nil, false
	}
	if t, ok := l.full[k]; ok {
		return t, true
	}
	q, ok := l.queued.get(k)
	if !ok {
		return nil, false
	}
	t := q.task(id)
	l.drop(k)
	l.full[k] = t
	return t, true
}

// delivered returns the task to change it if it was ever sent to a worker,
// or false. A compact task never was, and stays compact.
func (l *liveTasks) delivered(id string) (*task.Task, bool) {
	k, ok := l.ids.lookup(id)
	if !ok {
		return nil, false
	}
	t, ok := l.full[k]
	if !ok || len(t.History) == 0 {
		return nil, false
	}
	return t, true
}

// view returns a copy of the task, to read it, leaving a compact one compact.
func (l *liveTasks) view(id string) (task.Task, bool) {
	k, ok := l.ids.lookup(id)
	if !ok {
		return task.Task{}, false
	}
	if t, ok := l.full[k]; ok {
		return copyTask(t), true
	}
	if q, ok := l.queued.get(k); ok {
		return *q.task(id), true
	}
	return task.Task{}, false
}

// del removes the task and forgets its key.
func (l *liveTasks) del(id string) {
	if k, ok := l.ids.lookup(id); ok {
		l.drop(k)
		l.ids.forget(id, k)
	}
}

func (l *liveTasks) len() int { return len(l.full) + l.queued.len() }

// status returns the task's status without expanding a compact one.
func (l *liveTasks) status(k taskKey) (task.Status, bool) {
	if t, ok := l.full[k]; ok {
		return t.Status, true
	}
	if q, ok := l.queued.get(k); ok {
		if q.shape.scheduled {
			return task.StatusScheduled, true
		}
		return task.StatusQueued, true
	}
	return "", false
}

// statusOf is status by ID.
func (l *liveTasks) statusOf(id string) (task.Status, bool) {
	k, ok := l.ids.lookup(id)
	if !ok {
		return "", false
	}
	return l.status(k)
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
