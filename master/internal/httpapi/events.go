package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// streamWriteTimeout bounds each write to an event stream. The server's
// WriteTimeout would end a long-lived stream, so the stream moves its own
// deadline forward before every write instead.
const streamWriteTimeout = 30 * time.Second

// streamEvents serves GET /events as Server-Sent Events: each dispatcher
// event as `id:` (its seq), `event:` (its type) and `data:` (its JSON), a
// comment every heartbeat so proxies and readers see the stream is alive.
// Last-Event-ID (or ?last_event_id=, for clients that cannot set headers)
// resumes after that event; when events in between are no longer kept, a
// `gap` event says so and the client should reload its state.
func (a *api) streamEvents(w http.ResponseWriter, r *http.Request) {
	// A misspelt parameter (?last_id=) would otherwise stream from now on,
	// quietly, instead of resuming.
	if err := checkQuery(r, "last_event_id"); err != nil {
		a.writeError(w, err)
		return
	}
	// Two headers would leave it to chance which event the stream resumes
	// after; refused, as a query parameter given twice is.
	if n := len(r.Header.Values("Last-Event-ID")); n > 1 {
		a.writeError(w, fmt.Errorf("%w: Last-Event-ID is given %d times; send it once", task.ErrInvalid, n))
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id")
	}
	var after uint64
	resume := lastID != ""
	if resume {
		var err error
		if after, err = strconv.ParseUint(lastID, 10, 64); err != nil {
			a.writeError(w, fmt.Errorf("%w: Last-Event-ID must be an event's id, a whole number", task.ErrInvalid))
			return
		}
	}
	if !a.acquireStream() {
		a.writeError(w, fmt.Errorf("%w (MASTER_MAX_EVENT_STREAMS=%d); close one or retry later", errTooManyStreams, a.maxStreams))
		return
	}
	// The place is held by this handler, not by a subscription: a reader
	// that lags is resubscribed below and keeps it; any return frees it.
	defer a.releaseStream()
	sub, backlog, gap := a.events.Subscribe(after, resume)
	defer func() { sub.Close() }()

	write := startSSE(w)
	// sendBatch writes what a (re)subscription starts with.
	sendBatch := func(gap bool, backlog []events.Event) bool {
		if gap && !write(gapEvent(a.events.Seq())) {
			return false
		}
		for _, e := range backlog {
			if !write(formatEvent(e)) {
				return false
			}
			after = e.Seq
		}
		return true
	}
	// With no backlog, an id says where the stream starts: a reader that
	// loses it before any event came resumes from there, not from
	// whenever it is back (SSE sets the last event ID from an id line
	// without data too).
	start := "retry: 2000\n: roundhouse events\n\n"
	if len(backlog) == 0 {
		start = fmt.Sprintf("retry: 2000\nid: %d\n: roundhouse events\n\n", sub.Start())
	}
	if !write(start) || !sendBatch(gap, backlog) {
		return
	}
	tick := time.NewTicker(a.heartbeat)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				if !sub.Lagged() {
					return // the master is shutting down
				}
				// This reader fell behind; pick up from the ring where it
				// left off, or tell it what it missed.
				sub, backlog, gap = a.events.Subscribe(after, true)
				if !sendBatch(gap, backlog) {
					return
				}
				continue
			}
			if !write(formatEvent(e)) {
				return
			}
			after = e.Seq
		case <-tick.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// startSSE answers 200 with a Server-Sent Events stream and returns the
// function that writes to it: each write is flushed at once and has
// streamWriteTimeout to go through (the server's WriteTimeout would end a
// long stream; a moving deadline drops only a client that stops reading).
// It reports whether the write went through.
func startSSE(w http.ResponseWriter) (write func(string) bool) {
	rc := http.NewResponseController(w)
	// The stream reads nothing more from the client; the server's
	// ReadTimeout has no business with it.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	noSniff(h)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	return func(s string) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
			return false
		}
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
}

// acquireStream takes a place for one more event stream, or reports that
// none is free. Each stream holds a goroutine and a subscription buffer
// until its client leaves, so without a bound a client could open them
// until the master runs out of memory.
func (a *api) acquireStream() bool {
	if a.maxStreams <= 0 {
		return true
	}
	// Compare-and-swap rather than add-then-undo: an add past the limit,
	// even briefly, would refuse a concurrent request that fits.
	for {
		n := a.streams.Load()
		if n >= a.maxStreams {
			return false
		}
		if a.streams.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// releaseStream gives back a place taken by acquireStream.
func (a *api) releaseStream() {
	if a.maxStreams > 0 {
		a.streams.Add(-1)
	}
}

func formatEvent(e events.Event) string {
	data, _ := json.Marshal(e) // plain fields: cannot fail
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data)
}

// gapEvent tells a reader that events up to last may have been missed. It
// has no id, so the reader's Last-Event-ID stays where it was.
func gapEvent(last uint64) string {
	return fmt.Sprintf("event: gap\ndata: {\"type\":\"gap\",\"last_seq\":%d}\n\n", last)
}
