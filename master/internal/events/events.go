// Package events is the master's in-process event hub: the dispatcher
// publishes what happens to tasks and workers, and readers (the SSE stream
// of GET /events, metrics) follow it.
//
// Publishing never blocks the dispatcher. Each subscriber has a bounded
// buffer; one that falls behind is cut off and told so (Subscription.Lagged),
// rather than slowing dispatch. A ring of recent events lets a reader that
// reconnects resume after the last event it saw (SSE's Last-Event-ID).
package events

import (
	"sync"
	"time"
)

// Type names an event. The names are part of the API (GET /events).
type Type string

// The event types.
const (
	WorkerJoined   Type = "worker.joined"    // worker_id, slots, position
	WorkerDraining Type = "worker.draining"  // worker_id, running
	WorkerTimedOut Type = "worker.timed_out" // worker_id, reason (how long it was silent); worker.left follows
	WorkerLeft     Type = "worker.left"      // worker_id, reason: disconnected, drained, replaced, timed_out
	TaskQueued     Type = "task.queued"      // task_id, cmd, priority, requires; reason "due" when a scheduled task's time came (it was counted when submitted)
	TaskScheduled  Type = "task.scheduled"   // task_id, cmd, priority, requires, run_at; reason "delayed" (submitted with run_at or delay) or "retry" (attempt failed, detail says how; worker_id, attempt, status, exit_code of that run)
	TaskAssigned   Type = "task.assigned"    // task_id, worker_id, attempt, wait_seconds; reason "reclaimed" when its worker kept it across a reconnect
	TaskFinished   Type = "task.finished"    // task_id, worker_id, attempt, status, exit_code, run_seconds; reason "out_of_attempts" when it failed for lost workers
	TaskRequeued   Type = "task.requeued"    // task_id, worker_id (the one lost), attempt, reason, detail
	TaskCanceled   Type = "task.canceled"    // task_id, worker_id (if it was running), status
	TaskRetried    Type = "task.retried"     // task_id, status (as it was), attempt: a final task was queued again by hand (POST /tasks/{id}/retry)
)

// Event is one thing that happened. Seq increases by one per event for the
// life of the hub, from 1 or from the number given to StartAfter.
type Event struct {
	Seq         uint64            `json:"seq"`
	Time        time.Time         `json:"time"`
	Type        Type              `json:"type"`
	TaskID      string            `json:"task_id,omitempty"`
	WorkerID    string            `json:"worker_id,omitempty"`
	Attempt     int               `json:"attempt,omitempty"`
	Status      string            `json:"status,omitempty"`
	ExitCode    *int              `json:"exit_code,omitempty"`
	Reason      string            `json:"reason,omitempty"` // a short code, fit for a metric label
	Detail      string            `json:"detail,omitempty"` // the same, for people
	Cmd         string            `json:"cmd,omitempty"`
	Slots       int               `json:"slots,omitempty"`
	Position    *int              `json:"position,omitempty"` // place in the rotation, from 0
	Running     *int              `json:"running,omitempty"`
	WaitSeconds *float64          `json:"wait_seconds,omitempty"` // queued -> assigned
	RunSeconds  *float64          `json:"run_seconds,omitempty"`  // started -> finished
	Priority    int               `json:"priority,omitempty"`
	Requires    map[string]string `json:"requires,omitempty"`
	RunAt       *time.Time        `json:"run_at,omitempty"` // when a scheduled task will be queued
}

// Hub fans events out to subscribers. The zero value is not usable; call
// NewHub. A nil *Hub drops everything, so publishers need no checks.
type Hub struct {
	bufSize   int
	observers []func(Event) // called synchronously by Publish; set before use

	mu     sync.Mutex // protects every field below
	seq    uint64
	ring   []Event // the last len(ring) events once full; ring[next] is the oldest
	next   int
	full   bool
	subs   map[*Subscription]struct{}
	closed bool
}

// NewHub returns a hub that keeps the last history events for resuming and
// gives each subscriber a buffer of buffer events.
func NewHub(history, buffer int) *Hub {
	return &Hub{bufSize: buffer, ring: make([]Event, history), subs: make(map[*Subscription]struct{})}
}

// StartAfter makes the first event's number n+1. The master starts each
// process after its start time in milliseconds × 1000, or after the range
// the previous process reserved in the database if that is higher, so
// numbers keep growing across restarts (below 2^53, for JavaScript, until
// the year 2255), whatever the clock did in between:
// a client that resumes with a number from an earlier process gets a gap,
// not a silent jump over the new process's first events. Call it before
// the first Publish.
func (h *Hub) StartAfter(n uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq = n
}

// Observe registers fn to be called with every event, synchronously and in
// order, by the publishing goroutine (which may hold the dispatcher's lock):
// fn must be quick and must not call back into the publisher. It is for
// readers that must not miss anything, such as metrics. Call it before the
// first Publish.
func (h *Hub) Observe(fn func(Event)) { h.observers = append(h.observers, fn) }

// Subscription is one reader's view of the hub.
type Subscription struct {
	h      *Hub
	c      chan Event
	start  uint64 // the last event published when it began; set once, under h.mu
	lagged bool   // set before c is closed when the reader fell behind
}

// Start is the number of the last event published when the subscription
// began: the backlog ends with it, and C delivers the events after it. A
// reader with no backlog that resumes after Start misses nothing.
func (s *Subscription) Start() uint64 { return s.start }

// C delivers events in order. It is closed when the reader fell behind
// (Lagged reports true), when Close is called, or when the hub closes.
func (s *Subscription) C() <-chan Event { return s.c }

// Lagged reports whether C was closed because the reader fell behind and
// events were dropped for it. Call it after C is closed.
func (s *Subscription) Lagged() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.lagged
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if _, ok := s.h.subs[s]; ok {
		delete(s.h.subs, s)
		close(s.c)
	}
}

// Publish stamps e with the next sequence number, tells the observers, and
// hands it to every subscriber without waiting for any of them.
func (h *Hub) Publish(e Event) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.seq++
	e.Seq = h.seq
	for _, fn := range h.observers {
		fn(e)
	}
	if len(h.ring) > 0 {
		h.ring[h.next] = e
		h.next = (h.next + 1) % len(h.ring)
		h.full = h.full || h.next == 0
	}
	for s := range h.subs {
		select {
		case s.c <- e:
		default: // it fell behind: cut it off rather than wait or skip silently
			s.lagged = true
			delete(h.subs, s)
			close(s.c)
		}
	}
}

// Subscribe starts a subscription. With resume set, it first returns the
// kept events after the one numbered after; gap reports that some events in
// between are no longer kept (the reader must resynchronise). Nothing is
// missed or repeated between the backlog and C.
func (h *Hub) Subscribe(after uint64, resume bool) (s *Subscription, backlog []Event, gap bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s = &Subscription{h: h, c: make(chan Event, h.bufSize), start: h.seq}
	if h.closed {
		close(s.c)
		return s, nil, false
	}
	h.subs[s] = struct{}{}
	if !resume || after >= h.seq {
		return s, nil, resume && after > h.seq // a number from before a restart
	}
	kept := h.keptLocked()
	if len(kept) == 0 || kept[0].Seq > after+1 {
		gap = true
	}
	for _, e := range kept {
		if e.Seq > after {
			backlog = append(backlog, e)
		}
	}
	return s, backlog, gap
}

// Seq returns the number of the last event published.
func (h *Hub) Seq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

func (h *Hub) keptLocked() []Event {
	if !h.full {
		return append([]Event(nil), h.ring[:h.next]...)
	}
	return append(append([]Event(nil), h.ring[h.next:]...), h.ring[:h.next]...)
}

// Close ends every subscription and drops later events, so that open
// streams end when the master shuts down.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.c)
	}
}
