package dispatch

import (
	"container/heap"
	"slices"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// queue holds the tasks waiting for a worker, indexed so that the assign
// step never scans it: one fifo per class (a priority and a set of
// required labels), the classes of each priority listed apart. The most
// urgent task a free worker can run is then the oldest head among the
// classes of the most urgent priority that have an eligible free worker:
// a walk over the classes (at most the priorities times the distinct
// requirement sets queued), never over the tasks, so the step costs the
// same with a thousand or a million queued.
//
// Order within a priority is the order tasks were queued in, by entry.seq:
// a task queued at the back gets the next number, one put back at the front
// (its worker was lost) a number below every other, since it was accepted
// before anything waiting now.
//
// A class leaves the index once it holds no ID. Guarded by Dispatcher.mu.
type queue struct {
	classes map[classKey]*class
	levels  [task.MaxPriority][]*class // the same classes, by priority: levels[0] is priority 1

	n, stale   int                   // IDs in every fifo, and how many are stale
	byPriority [task.MaxPriority]int // waiting tasks by priority
	back       int64                 // the seq of the last ID pushed at the back
	front      int64                 // the seq of the last ID pushed at the front (negative)
}

// class is the tasks of one priority that require the same labels.
type class struct {
	priority int
	key      string            // labels.String(requires): "" for none
	requires map[string]string // shared with the tasks; never changed
	q        fifo

	// eligible are the indexes in the rotation of the workers that have
	// every label in requires, as of rotation generation gen: worked out
	// again only when workers join or leave, so that a class nobody can
	// serve costs the assign step nothing.
	eligible []int
	gen      uint64
}

type classKey struct {
	priority int
	key      string
}

// len is the number of IDs in the queue, stale ones included.
func (q *queue) len() int { return q.n }

// waiting is the number of tasks that wait in the queue.
func (q *queue) waiting() int { return q.n - q.stale }

// priorityOf is t's priority, the default for a task made without one.
func priorityOf(t *task.Task) int {
	if t.Priority < task.MinPriority || t.Priority > task.MaxPriority {
		return task.DefaultPriority
	}
	return t.Priority
}

func keyOf(t *task.Task) classKey { return classKey{priorityOf(t), labels.String(t.Requires)} }

// classOf returns t's class, made if it has none yet.
func (q *queue) classOf(t *task.Task) *class {
	k := keyOf(t)
	if c, ok := q.classes[k]; ok {
		return c
	}
	if q.classes == nil {
		q.classes = make(map[classKey]*class)
	}
	c := &class{priority: k.priority, key: k.key, requires: t.Requires}
	q.classes[k] = c
	q.levels[k.priority-1] = append(q.levels[k.priority-1], c)
	return c
}

// push queues t, whose key is k, at the back of its class, or at the front.
func (q *queue) push(t *task.Task, k taskKey, front bool) {
	c := q.classOf(t)
	if front {
		q.front--
		c.q.pushFront(entry{key: k, seq: q.front})
	} else {
		q.back++
		c.q.pushBack(entry{key: k, seq: q.back})
	}
	q.n++
	q.byPriority[c.priority-1]++
}

// take removes the i-th ID of c from the front (0: its head), a waiting
// task's, and returns it.
func (q *queue) take(c *class, i int) entry {
	e := c.q.removeAt(i)
	q.n--
	q.byPriority[c.priority-1]--
	q.dropIfEmpty(c)
	return e
}

// remove takes the ID of t, whose key is k, out of its class: t stopped
// waiting without being popped, and goes on (its worker came back holding
// it). Left there, stale, the ID would stand for t again were t queued
// again later (its retry policy), at the place it had, not at the back.
// It costs t's distance from the nearer end of its class (fifo.find): a
// task put back at the front, or queued again at the back, is at one end
// (after a master restart, where Recover queued it by creation, it may be
// anywhere; a worker's return, rare, pays once). A task queued has one ID
// in the queue (Retry sweeps out those of a final task before it queues it
// again), so the one found is its own.
func (q *queue) remove(t *task.Task, k taskKey) {
	c := q.classes[keyOf(t)]
	if c == nil {
		return // cannot happen: a queued task's ID is in its class
	}
	if i := c.q.find(k); i >= 0 {
		q.take(c, i)
	}
}

// popStale removes the head of c, one counted stale by left.
func (q *queue) popStale(c *class) {
	c.q.popStale()
	q.n--
	q.stale--
	q.dropIfEmpty(c)
}

// left records that t, whose ID is in the queue, stopped waiting without
// being popped, and returns its class.
func (q *queue) left(t *task.Task) *class {
	c := q.classes[keyOf(t)]
	if c == nil {
		return nil // cannot happen: a queued task's ID is in its class
	}
	c.q.left()
	q.stale++
	q.byPriority[c.priority-1]--
	return c
}

// keep compacts c (see fifo.keep) and counts what it dropped.
func (q *queue) keep(c *class, ok func(k taskKey) bool) {
	n, stale := c.q.n, c.q.stale
	c.q.keep(ok)
	q.n -= n - c.q.n
	q.stale -= stale
	q.dropIfEmpty(c)
}

func (q *queue) dropIfEmpty(c *class) {
	if c.q.n > 0 {
		return
	}
	delete(q.classes, classKey{c.priority, c.key})
	lv := q.levels[c.priority-1]
	for i, o := range lv {
		if o == c {
			last := len(lv) - 1
			lv[i] = lv[last]
			lv[last] = nil
			q.levels[c.priority-1] = lv[:last]
			return
		}
	}
}

// clean pops the stale heads of c, so that its head, if any, is a waiting
// task. waits tells whether a task still waits.
func (q *queue) clean(c *class, waits func(k taskKey) bool) {
	for c.q.n > 0 {
		if e, _ := c.q.peek(); waits(e.key) {
			return
		}
		q.popStale(c) // drops c from the index once it is empty
	}
}

// waitingForLocked says what a live task t waits for, or "" when it waits
// for nothing but its turn.
func (d *Dispatcher) waitingForLocked(t *task.Task) string {
	switch t.Status {
	case task.StatusScheduled:
		return "its run time, " + t.RunAt.Format(time.RFC3339)
	case task.StatusQueued:
	default:
		return ""
	}
	if len(d.rotation) == 0 {
		return "no worker is connected"
	}
	if len(t.Requires) > 0 && d.eligibleLocked(t.Requires) == 0 {
		why := "no connected worker has " + labels.String(t.Requires)
		if missing := d.missingLocked(t.Requires); len(missing) < len(t.Requires) {
			why += "; the nearest lacks " + strings.Join(missing, ",")
		}
		return why
	}
	if d.takingLocked(t.Requires) == 0 {
		if len(t.Requires) == 0 {
			return "every connected worker is draining"
		}
		return "every connected worker with " + labels.String(t.Requires) + " is draining"
	}
	return ""
}

// takingLocked counts the connected workers that have every label in
// requires and take new tasks (are not draining).
func (d *Dispatcher) takingLocked(requires map[string]string) int {
	n := 0
	for _, s := range d.rotation {
		if !s.draining && labels.Satisfies(s.Labels, requires) {
			n++
		}
	}
	return n
}

// eligibleLocked counts the connected workers that have every label in
// requires.
func (d *Dispatcher) eligibleLocked(requires map[string]string) int {
	n := 0
	for _, s := range d.rotation {
		if labels.Satisfies(s.Labels, requires) {
			n++
		}
	}
	return n
}

// missingLocked returns the pairs of requires that the closest connected
// worker (the one that has the most of them) lacks: what a person must add
// for the task to run.
func (d *Dispatcher) missingLocked(requires map[string]string) []string {
	best := labels.Missing(nil, requires)
	for _, s := range d.rotation {
		if m := labels.Missing(s.Labels, requires); len(m) < len(best) {
			best = m
		}
	}
	return best
}

// Backlog is what waits in the master, for GET /queue, /metrics and the
// dashboard.
type Backlog struct {
	Queued     int                   // tasks waiting for a worker
	ByPriority [task.MaxPriority]int // of Queued, by priority: [0] is priority 1
	Scheduled  int                   // tasks waiting for their run time
	NextRunAt  time.Time             // the run time of the scheduled task due first; zero with none
	// Groups has one entry per requirement set with queued tasks, the most
	// tasks first: how many wait, how many connected workers could run
	// them, and, when none can, why (WaitingFor).
	Groups []Group
}

// Group is the queued tasks that require the same labels.
type Group struct {
	Requires   map[string]string // nil: any worker
	Queued     int
	Eligible   int    // connected workers with every required label
	WaitingFor string // set when no connected worker can run them
}

// Backlog counts what waits now. It costs the classes of the queue, not
// its tasks.
func (d *Dispatcher) Backlog() Backlog {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := Backlog{Queued: d.queue.waiting(), ByPriority: d.queue.byPriority, Scheduled: d.timers.waiting()}
	b.NextRunAt = d.nextRunAtLocked()
	groups := map[string]*Group{}
	var keys []string
	for _, c := range d.queue.classes {
		g := groups[c.key]
		if g == nil {
			g = &Group{Requires: c.requires, Eligible: d.eligibleLocked(c.requires)}
			probe := task.Task{Status: task.StatusQueued, Requires: c.requires}
			g.WaitingFor = d.waitingForLocked(&probe) // also when every eligible worker drains
			groups[c.key] = g
			keys = append(keys, c.key)
		}
		g.Queued += c.q.waiting()
	}
	for _, k := range keys {
		if g := groups[k]; g.Queued > 0 {
			b.Groups = append(b.Groups, *g)
		}
	}
	slices.SortFunc(b.Groups, func(x, y Group) int {
		if x.Queued != y.Queued {
			return y.Queued - x.Queued
		}
		return strings.Compare(labels.String(x.Requires), labels.String(y.Requires))
	})
	return b
}

// nextRunAtLocked returns the run time of the scheduled task that is due
// first: the heap's top, once stale timers there are dropped.
func (d *Dispatcher) nextRunAtLocked() time.Time {
	for len(d.timers.h) > 0 {
		if tm := d.timers.h[0]; d.timerLiveLocked(tm) {
			return time.Unix(0, tm.runAt).UTC()
		}
		heap.Pop(&d.timers.h)
		d.timers.stale--
	}
	return time.Time{}
}
