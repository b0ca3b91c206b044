package liveout

// Kind names what a follower is told.
type Kind uint8

// The kinds of Event.
const (
	// KindAttempt: a delivery started (Attempt, WorkerID); its output follows.
	KindAttempt Kind = iota + 1
	// KindOutput: Data was written to Stream at Offset.
	KindOutput
	// KindSkipped: Bytes bytes of Stream from Offset on will not come
	// (dropped by the ring, or never sent by the worker).
	KindSkipped
	// KindAttemptEnd: the delivery ended without deciding the task
	// (Outcome "lost", or the failed outcome of a try with a retry to come).
	KindAttemptEnd
	// KindFinal: the task is final (Status; Attempt is the delivery that
	// decided it, 0 when the event did not say). Nothing follows: the rest
	// of the output is the task's stored output.
	KindFinal
)

// Event is one thing a follower is told, in order.
type Event struct {
	Kind     Kind
	Attempt  int
	WorkerID string
	Stream   Stream
	Offset   int64
	Data     []byte
	Bytes    int64
	Outcome  string
	Detail   string
	Status   string
}

// Follower reads one task's live output from where it starts following.
// It holds no buffer of its own: it keeps offsets into the task's rings and
// reads when it is ready, so a slow follower costs writers nothing, and
// one that fell behind the ring is told what it skipped. Not safe for
// concurrent use; Close it when done.
type Follower struct {
	b      *Buffers
	taskID string
	e      *entry // stays in b.entries while it has followers
	after  int    // waiting for a delivery with an attempt above this
	on     *delivery
	left   *delivery // the delivery last told ended: a reclaim may revive it
	pos    [2]int64
	// first is the stream Next reads first: the other one after a read
	// that took the whole limit, so that a stream that keeps it full does
	// not starve the other one until its ring overflows.
	first Stream
	// stale is the final the task was in when the follow began (-1:
	// none). The caller read the task after, and saw it final or retried
	// by hand (queued again): either way it is not this follow's end.
	stale  int
	done   bool
	closed bool
}

// Follow starts following a task. Register before reading the task's
// status from the dispatcher: a change in between then reaches the
// follower, and is not lost between the read and the registration.
// A follower starts with the running delivery, if any; else it waits for
// the next one.
func (b *Buffers) Follow(taskID string) *Follower {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entryLocked(taskID)
	e.followers++
	f := &Follower{b: b, taskID: taskID, e: e, stale: -1}
	if e.final {
		f.stale = e.finals
	}
	if d := e.current(); d != nil {
		f.after = d.attempt - 1
	} else if n := len(e.deliveries); n > 0 {
		f.after = e.deliveries[n-1].attempt
		// Given up, but its worker may yet reclaim it (Next picks it up
		// again then, as for a follower that saw it end).
		f.left = e.deliveries[n-1]
	}
	return f
}

// Close stops following. Buffers kept only for followers go with the last.
func (f *Follower) Close() {
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	e := f.e
	e.followers--
	if e.followers > 0 {
		return
	}
	if e.current() == nil {
		if b.entries[f.taskID] == e {
			delete(b.entries, f.taskID)
		}
		return
	}
	// A delivery still runs: keep it, and forget what only followers needed.
	for _, d := range e.deliveries[:len(e.deliveries)-1] {
		d.dropRings()
	}
	e.deliveries = e.deliveries[len(e.deliveries)-1:]
}

// Next returns what happened since the last call, with at most about
// limit bytes of output, without waiting. When nothing did, it returns a
// channel that is closed when something does. closed reports that the
// master is shutting down: the follow should end.
func (f *Follower) Next(limit int) (evs []Event, wait <-chan struct{}, closed bool) {
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, nil, true
	}
	e := f.e
	for !f.done && limit > 0 {
		d := f.on
		if d == nil && f.left != nil && !f.left.ended && e.current() == f.left {
			// Reclaimed by its worker after it was given up: it goes on
			// where the follower left it, announced again.
			f.on, d = f.left, f.left
			f.left = nil
			evs = append(evs, Event{Kind: KindAttempt, Attempt: d.attempt, WorkerID: d.workerID})
			continue
		}
		if d == nil {
			for _, c := range e.deliveries {
				if c.attempt > f.after {
					d = c
					break
				}
			}
			if d == nil {
				if f.isFinal() {
					evs = append(evs, Event{Kind: KindFinal, Status: e.finalStatus, Attempt: e.finalAttempt})
					f.done = true
				}
				break
			}
			f.on, f.pos = d, [2]int64{}
			evs = append(evs, Event{Kind: KindAttempt, Attempt: d.attempt, WorkerID: d.workerID})
			continue
		}
		progressed := false
		for i := range d.rings {
			s := (int(f.first) + i) % len(d.rings)
			st := Stream(s)
			if d.rings[s] == nil {
				if d.ended && f.pos[s] < d.ends[s] {
					evs = append(evs, Event{Kind: KindSkipped, Attempt: d.attempt, Stream: st, Offset: f.pos[s], Bytes: d.ends[s] - f.pos[s]})
					f.pos[s] = d.ends[s]
					progressed = true
				}
				continue
			}
			skipped, data := d.rings[s].read(f.pos[s], limit)
			if skipped > 0 {
				evs = append(evs, Event{Kind: KindSkipped, Attempt: d.attempt, Stream: st, Offset: f.pos[s], Bytes: skipped})
				f.pos[s] += skipped
				progressed = true
			}
			if len(data) > 0 {
				evs = append(evs, Event{Kind: KindOutput, Attempt: d.attempt, Stream: st, Offset: f.pos[s], Data: data})
				f.pos[s] += int64(len(data))
				limit -= len(data)
				progressed = true
				if limit <= 0 {
					f.first = 1 - st
					break
				}
			}
		}
		if progressed {
			continue
		}
		switch {
		case d.ended:
			evs = append(evs, Event{Kind: KindAttemptEnd, Attempt: d.attempt, WorkerID: d.workerID, Outcome: d.outcome, Detail: d.detail})
			f.after, f.on, f.left = d.attempt, nil, d
			continue
		case f.isFinal():
			// The delivery that was running when the task became final: its
			// rest is in the stored output, which the caller sends.
			evs = append(evs, Event{Kind: KindFinal, Status: e.finalStatus, Attempt: e.finalAttempt})
			f.done = true
		}
		break
	}
	if len(evs) == 0 && !f.done {
		if e.changed == nil {
			e.changed = make(chan struct{})
		}
		e.waited = true
		return nil, e.changed, false
	}
	return evs, nil, false
}

// isFinal reports whether the task is final since the follow began.
func (f *Follower) isFinal() bool { return f.e.final && f.e.finals != f.stale }
