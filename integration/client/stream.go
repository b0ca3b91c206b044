package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Output is GET /tasks/{id}/output: what there is of a task's output now,
// from the live buffer of a running delivery or the stored final output
// (the README's Live output section).
type Output struct {
	TaskID          string  `json:"task_id"`
	Status          string  `json:"status"`
	Attempt         int     `json:"attempt"` // 0 when no delivery has run
	WorkerID        *string `json:"worker_id"`
	Live            bool    `json:"live"` // read from a running delivery's live buffer
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	StdoutOffset    int64   `json:"stdout_offset"` // where Stdout starts in the delivery's stream
	StderrOffset    int64   `json:"stderr_offset"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

// Output returns what there is of a task's output now.
func (c *Client) Output(ctx context.Context, id string) (Output, error) {
	var o Output
	err := c.do(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id)+"/output", nil, http.StatusOK, &o)
	return o, err
}

// OutputEvent is one event of GET /tasks/{id}/output?follow=true. Type is
// the SSE event name; which other fields are set depends on it:
//
//	attempt      Attempt, WorkerID: a delivery started
//	output       Attempt, Stream, Offset, Text: bytes arrived
//	skipped      Attempt, Stream, Bytes: bytes the follower will not get
//	attempt_end  Attempt, WorkerID, Outcome, Detail: a delivery ended without deciding the task
//	end          Status, ExitCode, Error, Attempt, *Truncated: the task is final; the stream ends
type OutputEvent struct {
	Type     string `json:"-"`
	Attempt  int    `json:"attempt"`
	WorkerID string `json:"worker_id,omitempty"`
	Stream   string `json:"stream,omitempty"` // stdout or stderr
	Offset   int64  `json:"offset,omitempty"`
	Text     string `json:"text,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	Outcome  string `json:"outcome,omitempty"` // lost, failed, ...
	Detail   string `json:"detail,omitempty"`

	Status          string  `json:"status,omitempty"`
	ExitCode        *int    `json:"exit_code,omitempty"`
	Error           *string `json:"error,omitempty"`
	StdoutTruncated bool    `json:"stdout_truncated,omitempty"`
	StderrTruncated bool    `json:"stderr_truncated,omitempty"`

	Raw json.RawMessage `json:"-"` // the event's data as the master sent it, fields this struct lacks included
}

// The output events of the README's Live output section.
const (
	OutputAttempt    = "attempt"
	OutputText       = "output"
	OutputSkipped    = "skipped"
	OutputAttemptEnd = "attempt_end"
	OutputEnd        = "end"
)

// ErrStreamEnded is returned by a follow whose stream closed before its
// last event: the master went away or restarted.
var ErrStreamEnded = errors.New("the master closed the stream early")

// FollowOutput follows a task's output (GET /tasks/{id}/output?follow=true)
// and calls fn with each event, in order, until the end event, after which
// it returns nil. An error from fn stops it and is returned; so is ctx's
// error, and ErrStreamEnded when the stream closes before the end. Unknown
// events are skipped, so a newer master may add some.
func (c *Client) FollowOutput(ctx context.Context, id string, fn func(OutputEvent) error) error {
	path := "/tasks/" + url.PathEscape(id) + "/output?follow=true"
	return c.stream(ctx, path, "", func(ev sseEvent) (bool, error) {
		switch ev.name {
		case OutputAttempt, OutputText, OutputSkipped, OutputAttemptEnd, OutputEnd:
		default:
			return false, nil
		}
		oe := OutputEvent{Type: ev.name, Raw: json.RawMessage(ev.data)}
		if err := json.Unmarshal([]byte(ev.data), &oe); err != nil {
			return false, fmt.Errorf("GET %s: event %s: %w", path, ev.name, err)
		}
		if err := fn(oe); err != nil {
			return false, err
		}
		return oe.Type == OutputEnd, nil
	})
}

// Event is one event of GET /events (see the README's table). Raw is the
// event's JSON as the master sent it, fields this struct lacks included.
type Event struct {
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Type     string            `json:"type"` // e.g. task.assigned; "gap" when events were missed; "" for where a stream starts (Seq only)
	TaskID   string            `json:"task_id,omitempty"`
	WorkerID string            `json:"worker_id,omitempty"`
	Attempt  int               `json:"attempt,omitempty"`
	Status   string            `json:"status,omitempty"`
	ExitCode *int              `json:"exit_code,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Detail   string            `json:"detail,omitempty"`
	Cmd      string            `json:"cmd,omitempty"`
	Slots    int               `json:"slots,omitempty"`
	Position *int              `json:"position,omitempty"`
	Running  *int              `json:"running,omitempty"`
	Priority int               `json:"priority,omitempty"`
	Requires map[string]string `json:"requires,omitempty"`
	RunAt    *time.Time        `json:"run_at,omitempty"`
	LastSeq  uint64            `json:"last_seq,omitempty"` // of a gap: events up to here may be missed

	Raw json.RawMessage `json:"-"`
}

// Events follows GET /events and calls fn with each event until ctx ends
// (then it returns ctx's error), fn returns an error (returned), or the
// stream breaks (ErrStreamEnded, or the read's error). lastID, when not
// empty, resumes after that event (Last-Event-ID); a caller that reconnects
// passes the Seq of the last event it saw. fn is also called with an Event
// that has only Seq set (Type "", Raw nil) when the master says where a
// stream starts without an event to send: a reconnect resumes after it.
func (c *Client) Events(ctx context.Context, lastID string, fn func(Event) error) error {
	return c.stream(ctx, "/events", lastID, func(ev sseEvent) (bool, error) {
		if ev.name == "" { // an id alone: the position of a stream with nothing to send yet
			n, err := strconv.ParseUint(ev.id, 10, 64)
			if err != nil {
				return false, nil
			}
			return false, fn(Event{Seq: n})
		}
		e := Event{Raw: json.RawMessage(ev.data)}
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			return false, fmt.Errorf("GET /events: event %s: %w", ev.name, err)
		}
		if e.Type == "" {
			e.Type = ev.name
		}
		return false, fn(e)
	})
}

// streamIdle is how long a stream may stay silent before the client gives
// up on it. The master sends a heartbeat comment every 15 s (by default)
// on an idle stream, so a longer silence means it is gone without a word:
// a vanished host or a cut network, which TCP alone would take minutes to
// notice. A variable for tests only.
var streamIdle = 60 * time.Second

// sseEvent is one Server-Sent Event: its name ("message" when unnamed),
// its data lines joined by newlines, and its id.
type sseEvent struct {
	name, data, id string
}

// stream reads the Server-Sent Events of a GET until handle says the last
// has come (nil), returns an error, ctx ends, or the stream breaks.
func (c *Client) stream(ctx context.Context, path, lastID string, handle func(sseEvent) (last bool, err error)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errIdle := fmt.Errorf("GET %s: no word from the master for %s", path, streamIdle)
	idle := time.AfterFunc(streamIdle, func() { cancel(errIdle) })
	defer idle.Stop()
	// The time handle takes is the caller's, not the master's silence: a
	// caller blocked writing its own output (a pager paused by its reader)
	// must not end a stream whose master is there.
	call := func(ev sseEvent) (bool, error) {
		idle.Stop()
		defer idle.Reset(streamIdle)
		return handle(ev)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	// The usual timeout bounds a whole request, body included; a stream
	// lasts as long as it lasts, bounded by streamIdle instead.
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return streamErr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return newAPIError(http.MethodGet, path, resp, body)
	}
	r := bufio.NewReader(resp.Body)
	var ev sseEvent
	var data []string
	for {
		// ReadString, not a Scanner: one output event may carry tens of
		// KiB of text on one line.
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				return streamErr(ctx, ErrStreamEnded)
			}
			return streamErr(ctx, err)
		}
		idle.Reset(streamIdle)
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" { // the end of an event
			if data == nil {
				// An id without data is no event, but moves the
				// stream's last event ID (where a stream starts).
				if ev.id != "" {
					if _, err := call(sseEvent{id: ev.id}); err != nil {
						return err
					}
				}
				ev = sseEvent{}
				continue
			}
			ev.data = strings.Join(data, "\n")
			if ev.name == "" {
				ev.name = "message"
			}
			last, err := call(ev)
			if err != nil || last {
				return err
			}
			ev, data = sseEvent{}, nil
			continue
		}
		if strings.HasPrefix(line, ":") { // a comment: a heartbeat
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "data":
			data = append(data, value)
		case "id":
			ev.id = value
		}
	}
}

// streamErr prefers the reason the stream's context ended, if it did: the
// caller's cancellation or the idle timeout, rather than the read error
// they caused.
func streamErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return err
}
