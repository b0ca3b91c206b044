package dispatch

import (
	"cmp"
	"container/heap"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// timers holds the scheduled tasks by when they are due, on the monotonic
// clock: a min-heap, so that the next one is found at once and each costs
// O(log n) in and out, a million of them included.
//
// A task that stops being scheduled before it is due (canceled, or decided
// by a late result) leaves its timer behind: popped when due, it is seen
// not to match the task (the task is not scheduled, or for another run
// time) and dropped. stale counts such timers, and they are swept out when
// they outnumber the live ones, so memory follows the scheduled tasks.
// Guarded by Dispatcher.mu.
type timers struct {
	h     timerHeap
	stale int
	seq   uint64 // the seq of the last timer set
}

type timer struct {
	due   time.Duration // monotonic
	runAt int64         // the task's RunAt, Unix nanoseconds: which scheduling of the task this is
	id    string
	// seq orders timers due at the same time (tasks given the same run
	// time) by when they were set, so that they are queued in that order:
	// the heap alone would pop them in any order.
	seq uint64
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	return h[i].due < h[j].due || h[i].due == h[j].due && h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = timer{}
	*h = old[:len(old)-1]
	return t
}

// waiting is the number of live scheduled tasks.
func (ts *timers) waiting() int { return len(ts.h) - ts.stale }

// next returns when the earliest timer is due.
func (ts *timers) next() (time.Duration, bool) {
	if len(ts.h) == 0 {
		return 0, false
	}
	return ts.h[0].due, true
}

// scheduleLocked makes t scheduled until runAt (wall time, for people and
// the store), which is due at due on the monotonic clock. The caller
// works due out from its own reading of the clock, the one its wait counts
// from: a reading here would add the time since then (a restart's, for
// every task it recovers). A due already past (a run time that passed
// while the master was down) is kept as it is. The caller persists t.
func (d *Dispatcher) scheduleLocked(t *task.Task, runAt time.Time, due time.Duration) {
	t.Status = task.StatusScheduled
	t.RunAt = runAt
	d.timers.seq++
	heap.Push(&d.timers.h, timer{due: due, runAt: runAt.UnixNano(), id: t.ID, seq: d.timers.seq})
	if first, _ := d.timers.next(); first == due && d.kick != nil {
		select { // the owner's loop may sleep past it: wake it
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// leftScheduleLocked records that a scheduled task stopped being scheduled
// before its timer fired. Call it after the task's status changed.
func (d *Dispatcher) leftScheduleLocked() {
	d.timers.stale++
	if d.timers.stale >= compactAt && d.timers.stale > d.timers.waiting() {
		keep := d.timers.h[:0]
		for _, tm := range d.timers.h {
			if d.timerLiveLocked(tm) {
				keep = append(keep, tm)
			}
		}
		clear(d.timers.h[len(keep):])
		d.timers.h, d.timers.stale = keep, 0
		heap.Init(&d.timers.h)
	}
}

// timerLiveLocked reports whether tm is the timer of a task that waits for
// it.
func (d *Dispatcher) timerLiveLocked(tm timer) bool {
	st, ok := d.tasks.statusOf(tm.id)
	if !ok || st != task.StatusScheduled {
		return false
	}
	t, _ := d.tasks.view(tm.id)
	return t.RunAt.UnixNano() == tm.runAt
}

// promoteLocked queues the scheduled tasks that are due, by run time and,
// for one run time, in the order they were scheduled, and hands them to
// free workers. Not in the order of their monotonic due times alone: a
// run_at becomes one through two readings, of the wall clock and of the
// monotonic one, and the time between them (nanoseconds, or more should
// the goroutine be preempted) differs from one submission to the next, so
// tasks given the same run_at would be due moments apart, in any order.
func (d *Dispatcher) promoteLocked() {
	now := d.p.Mono()
	var due []timer
	for len(d.timers.h) > 0 && d.timers.h[0].due <= now {
		tm := heap.Pop(&d.timers.h).(timer)
		if !d.timerLiveLocked(tm) {
			d.timers.stale--
			continue
		}
		due = append(due, tm)
	}
	slices.SortFunc(due, func(a, b timer) int { return cmp.Or(cmp.Compare(a.runAt, b.runAt), cmp.Compare(a.seq, b.seq)) })
	for _, tm := range due {
		t, _ := d.tasks.get(tm.id)
		t.Status = task.StatusQueued
		d.tasks.put(t) // compact again if it never ran
		d.queue.push(t, d.tasks.key(t.ID), false)
		d.persistLocked(t, nil)
		d.emitLocked(events.Event{Type: events.TaskQueued, TaskID: t.ID, Cmd: shorten(t.Cmd), Priority: priorityOf(t), Requires: t.Requires, Reason: "due"})
	}
	if len(due) > 0 {
		d.assignLocked()
	}
}
