// Package liveout keeps the live output of running deliveries: one bounded
// ring per output stream of each task's current delivery, fed by the
// workers' StreamOutput chunks, read by followers at their own pace.
//
// Live output is a view, not the record: the final output still comes in
// the worker's result and is stored by the dispatcher. So the buffers are
// bounded and lossy by design: per delivery, each stream keeps its last
// Max bytes; a follower that falls behind is told how many bytes it missed
// (absolute offsets make that exact) instead of slowing anyone down.
//
// Memory: rings exist only for the current delivery of running tasks (and,
// while someone follows the task, for the delivery before it, until the
// next one starts), each growing with its output up to Max bytes. So the
// master holds at most running deliveries × 2 × Max bytes of live output.
//
// Lifecycle comes from the dispatcher's event hub (Observe): an assignment
// starts a delivery, a requeue or a retry ends it, a final status drops the
// task. The mutex is a leaf lock: Observe runs under the dispatcher's lock
// (and the hub's), so under Buffers.mu nothing blocks on a channel, does
// I/O or calls out; followers are woken by closing a channel.
package liveout

import (
	"sync"
	"sync/atomic"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// Stream names an output stream.
type Stream uint8

// The streams.
const (
	Stdout Stream = 0
	Stderr Stream = 1
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// maxDeliveries bounds the deliveries remembered per followed task (small
// records, no rings but the latest two): enough for a follower that is a
// little behind to be told of each re-run in order.
const maxDeliveries = 8

// maxOffset bounds a chunk's offset, so that offset+len never overflows.
const maxOffset = 1 << 60

// Chunk is a run of bytes one delivery wrote to one stream, as a worker
// sent it.
type Chunk struct {
	TaskID   string
	WorkerID string
	Attempt  int
	Stream   Stream
	Offset   int64
	Data     []byte
}

// Buffers holds the live output of every running delivery and the
// followers of tasks. Use New.
type Buffers struct {
	max      int
	received atomic.Uint64 // bytes of chunks taken, for metrics

	mu      sync.Mutex // protects entries, closed and everything reachable from entries
	entries map[string]*entry
	closed  bool
}

// entry is what is kept for one task: its deliveries while one runs or
// someone follows it, and the wake-up channel of its followers.
type entry struct {
	deliveries   []*delivery // oldest first; the last is current unless ended or final
	final        bool
	finalStatus  string
	finalAttempt int
	finals       int // times it went final while followed: a follower knows which final it came after
	followers    int
	changed      chan struct{} // made when a follower waits, closed on the next change: most tasks have none
	waited       bool          // someone holds changed: close it on the next change
}

// delivery is one run of a task on a worker, by (attempt, worker).
type delivery struct {
	attempt  int
	workerID string
	ended    bool // by a requeue or a retry: another delivery may follow
	outcome  string
	detail   string
	rings    [2]*ring // nil until the stream's first chunk, and once dropped
	ends     [2]int64 // where each stream ended, kept when the rings go
}

// New returns Buffers keeping at most maxBytes per stream of a delivery.
func New(maxBytes int) *Buffers {
	return &Buffers{max: maxBytes, entries: make(map[string]*entry)}
}

// Received is the number of live output bytes taken from workers so far.
func (b *Buffers) Received() uint64 { return b.received.Load() }

// Observe follows the dispatcher's events; register it with
// events.Hub.Observe. It is quick and never blocks: it runs under the
// dispatcher's lock.
func (b *Buffers) Observe(e events.Event) {
	switch e.Type {
	case events.TaskAssigned:
		b.start(e.TaskID, e.Attempt, e.WorkerID, e.Reason == "reclaimed")
	case events.TaskRequeued:
		b.end(e.TaskID, e.Attempt, "lost", e.Detail)
	case events.TaskScheduled:
		if e.Reason == "retry" { // a failed attempt with another to come
			b.end(e.TaskID, e.Attempt, e.Status, e.Detail)
		}
	case events.TaskFinished, events.TaskCanceled:
		b.final(e.TaskID, e.Status, e.Attempt)
	}
}

func (b *Buffers) entryLocked(id string) *entry {
	e := b.entries[id]
	if e == nil {
		e = &entry{}
		b.entries[id] = e
	}
	return e
}

// notify wakes the followers waiting on e.
func (e *entry) notify() {
	if e.waited {
		close(e.changed)
		e.changed, e.waited = nil, false
	}
}

// current is e's running delivery, or nil.
func (e *entry) current() *delivery {
	if e.final || len(e.deliveries) == 0 {
		return nil
	}
	if d := e.deliveries[len(e.deliveries)-1]; !d.ended {
		return d
	}
	return nil
}

func (b *Buffers) start(id string, attempt int, workerID string, reclaimed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entryLocked(id)
	if n := len(e.deliveries); reclaimed && n > 0 && e.deliveries[n-1].attempt == attempt && !e.final {
		// The worker kept the run across a reconnect: the same delivery,
		// and the output it sends goes on where it was.
		d := e.deliveries[n-1]
		d.workerID, d.ended, d.outcome, d.detail = workerID, false, "", ""
		e.notify()
		return
	}
	// Only the new delivery keeps rings: the one before was kept for
	// followers still reading it, and they are told what they skipped.
	for _, d := range e.deliveries {
		d.dropRings()
		if !d.ended {
			d.ended, d.outcome = true, "lost" // no event said so; a new delivery means it is over
		}
	}
	// The rings come with the first chunk (Append): most tasks print little
	// or nothing, and this runs for every assignment, under the
	// dispatcher's lock.
	e.deliveries = append(e.deliveries, &delivery{attempt: attempt, workerID: workerID})
	if len(e.deliveries) > maxDeliveries {
		e.deliveries = e.deliveries[len(e.deliveries)-maxDeliveries:]
	}
	e.final, e.finalStatus, e.finalAttempt = false, "", 0 // a final task retried by hand runs again
	e.notify()
}

func (d *delivery) dropRings() {
	for s, r := range d.rings {
		if r != nil {
			d.ends[s] = r.end
			d.rings[s] = nil
		}
	}
}

// end ends the current delivery, if it is attempt, with outcome.
func (b *Buffers) end(id string, attempt int, outcome, detail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[id]
	if e == nil {
		return
	}
	d := e.current()
	if d == nil || d.attempt != attempt {
		return
	}
	d.ended, d.outcome, d.detail = true, outcome, detail
	for s, r := range d.rings {
		if r != nil {
			d.ends[s] = r.end
		}
	}
	if e.followers == 0 {
		delete(b.entries, id) // nobody reads it: nothing to keep until the next delivery
		return
	}
	e.notify()
}

// final drops a task's buffers: its output is now the stored one.
func (b *Buffers) final(id, status string, attempt int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[id]
	if e == nil {
		return
	}
	if e.followers == 0 {
		delete(b.entries, id)
		return
	}
	for _, d := range e.deliveries {
		d.dropRings()
	}
	e.final, e.finalStatus, e.finalAttempt = true, status, attempt
	e.finals++
	e.notify()
}

// Append keeps c if it belongs to the current delivery of its task, from
// the worker that holds it; it reports whether it did. Anything else (a
// delivery given up, a task final or unknown, a late chunk) is dropped:
// only the current delivery's output is live. A resent range is taken
// once; a jump in offsets leaves a gap that followers are told of.
func (b *Buffers) Append(c Chunk) bool {
	if c.Stream > Stderr || c.Offset < 0 || c.Offset > maxOffset || len(c.Data) == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[c.TaskID]
	if e == nil {
		return false
	}
	d := e.current()
	if d == nil || d.attempt != c.Attempt || d.workerID != c.WorkerID {
		return false
	}
	r := d.rings[c.Stream]
	if r == nil {
		r = newRing(b.max)
		d.rings[c.Stream] = r
	}
	if n := r.write(c.Offset, c.Data); n > 0 {
		b.received.Add(uint64(n))
		e.notify()
	}
	return true
}

// StreamSnapshot is what the live buffer holds of one stream.
type StreamSnapshot struct {
	Offset int64  // where Data starts in the stream
	Data   []byte // the bytes held from Offset on, gaps left out
	Gaps   bool   // bytes are missing before Offset or within Data
}

// Snapshot is the live output of a running delivery.
type Snapshot struct {
	Attempt  int
	WorkerID string
	Streams  [2]StreamSnapshot // by Stream
}

// Snapshot returns the live output of the task's running delivery; ok is
// false when none runs (or none is known here).
func (b *Buffers) Snapshot(taskID string) (s Snapshot, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[taskID]
	if e == nil {
		return s, false
	}
	d := e.current()
	if d == nil {
		return s, false
	}
	s.Attempt, s.WorkerID = d.attempt, d.workerID
	for i, r := range d.rings {
		if r == nil {
			continue // nothing came on this stream yet
		}
		ss := &s.Streams[i]
		pos := int64(0)
		first := true
		for {
			skipped, data := r.read(pos, b.max)
			pos += skipped
			ss.Gaps = ss.Gaps || skipped > 0
			if len(data) == 0 {
				break
			}
			if first {
				ss.Offset, first = pos, false
			}
			ss.Data = append(ss.Data, data...)
			pos += int64(len(data))
		}
		if first {
			ss.Offset = pos
		}
	}
	return s, true
}

// Close wakes every follower and ends them (Next reports closed): the
// master is shutting down, and open follows must not hold it.
func (b *Buffers) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, e := range b.entries {
		e.notify()
	}
}
