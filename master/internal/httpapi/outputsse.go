package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// outputStream turns a follower's events into the SSE events of
// GET /tasks/{id}/output?follow=true. It holds back a character split
// between chunks until it is whole, and counts, per delivery, how far into
// each stream the follower has been sent, so that the end can fill in
// what the follower has not had from the stored output.
type outputStream struct {
	write     func(string) bool
	announced bool
	attempt   int               // the delivery being followed
	sent      map[int]*[2]int64 // per delivery, the offset of each stream up to which it was sent (or skipped)
	// per delivery, the length of the text sent of each stream, -1 once
	// something was skipped: where to go on in the stored output, whose
	// invalid bytes are U+FFFD, so its offsets are not the stream's
	texts map[int]*[2]int64
	// per delivery, whether the bytes sent of each stream end in bytes
	// that are not UTF-8: the stored output folds such a run with one at
	// the start of the next chunk into a single U+FFFD
	badTail map[int]*[2]bool
	pending [2][]byte // the start of a character not yet whole, per stream of the current delivery
}

func newOutputStream(write func(string) bool) *outputStream {
	return &outputStream{write: write, sent: make(map[int]*[2]int64), texts: make(map[int]*[2]int64), badTail: make(map[int]*[2]bool)}
}

type attemptEvent struct {
	Attempt  int     `json:"attempt"`
	WorkerID *string `json:"worker_id"`
}

type outputEvent struct {
	Attempt int    `json:"attempt"`
	Stream  string `json:"stream"`
	Offset  int64  `json:"offset"`
	Text    string `json:"text"`
}

type skippedEvent struct {
	Attempt int    `json:"attempt"`
	Stream  string `json:"stream"`
	Bytes   int64  `json:"bytes"`
}

type attemptEndEvent struct {
	Attempt  int    `json:"attempt"`
	WorkerID string `json:"worker_id"`
	Outcome  string `json:"outcome"`
	Detail   string `json:"detail"`
}

type endEvent struct {
	Status          string  `json:"status"`
	ExitCode        *int    `json:"exit_code"`
	Error           *string `json:"error"`
	Attempt         int     `json:"attempt"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

func (o *outputStream) event(name string, v any) bool {
	data, _ := json.Marshal(v) // plain fields: cannot fail
	return o.write(fmt.Sprintf("event: %s\ndata: %s\n\n", name, data))
}

func (o *outputStream) offsets(attempt int) *[2]int64 { return at(o.sent, attempt) }

func at(m map[int]*[2]int64, attempt int) *[2]int64 {
	p := m[attempt]
	if p == nil {
		p = new([2]int64)
		m[attempt] = p
	}
	return p
}

// send writes what e tells; false when the client is gone.
func (o *outputStream) send(e liveout.Event) bool {
	switch e.Kind {
	case liveout.KindAttempt:
		if !o.flush() {
			return false
		}
		o.announced, o.attempt = true, e.Attempt
		o.offsets(e.Attempt)
		return o.event("attempt", attemptEvent{Attempt: e.Attempt, WorkerID: nonEmpty(e.WorkerID)})
	case liveout.KindOutput:
		s := e.Stream
		start := e.Offset - int64(len(o.pending[s]))
		data := append(o.pending[s], e.Data...)
		cut := wholeRunes(data)
		o.pending[s] = append([]byte(nil), data[cut:]...)
		return o.text(e.Attempt, s, start, data[:cut])
	case liveout.KindSkipped:
		if !o.flushStream(e.Stream) {
			return false
		}
		o.offsets(e.Attempt)[e.Stream] = e.Offset + e.Bytes
		at(o.texts, e.Attempt)[e.Stream] = -1
		return o.event("skipped", skippedEvent{Attempt: e.Attempt, Stream: e.Stream.String(), Bytes: e.Bytes})
	case liveout.KindAttemptEnd:
		if !o.flush() {
			return false
		}
		return o.event("attempt_end", attemptEndEvent{Attempt: e.Attempt, WorkerID: e.WorkerID, Outcome: e.Outcome, Detail: e.Detail})
	}
	return true
}

// text sends the bytes p of stream s starting at off, as UTF-8, and
// counts them as sent.
func (o *outputStream) text(attempt int, s liveout.Stream, off int64, p []byte) bool {
	if len(p) == 0 {
		return true
	}
	o.offsets(attempt)[s] = off + int64(len(p))
	text := strings.ToValidUTF8(string(p), "\uFFFD")
	bad := o.badTail[attempt]
	if bad == nil {
		bad = new([2]bool)
		o.badTail[attempt] = bad
	}
	if n := at(o.texts, attempt); n[s] >= 0 {
		n[s] += int64(len(text))
		// strings.ToValidUTF8 of the whole stream, as stored, makes one
		// U+FFFD of a run of invalid bytes that spans two chunks.
		if r, size := utf8.DecodeRune(p); bad[s] && r == utf8.RuneError && size == 1 {
			n[s] -= int64(len("\uFFFD"))
		}
	}
	r, size := utf8.DecodeLastRune(p)
	bad[s] = r == utf8.RuneError && size == 1
	return o.event("output", outputEvent{Attempt: attempt, Stream: s.String(), Offset: off, Text: text})
}

// flushStream sends a character that will not be completed (the stream
// skips, or the delivery ends) as what it is: invalid, so U+FFFD.
func (o *outputStream) flushStream(s liveout.Stream) bool {
	p := o.pending[s]
	o.pending[s] = nil
	if len(p) == 0 {
		return true
	}
	return o.text(o.attempt, s, o.offsets(o.attempt)[s], p)
}

func (o *outputStream) flush() bool {
	return o.flushStream(liveout.Stdout) && o.flushStream(liveout.Stderr)
}

// finish ends the follow of final task t: an attempt event if none was
// sent, then what of the stored output the follower has not had (past
// the offsets sent of the deciding delivery, attempt, or t's own guess
// when 0), then end.
func (o *outputStream) finish(t task.Task, attempt int) {
	if attempt == 0 {
		attempt = finalAttempt(t)
	}
	if !o.announced && attempt > 0 {
		if !o.event("attempt", attemptEvent{Attempt: attempt, WorkerID: nonEmpty(t.WorkerID)}) {
			return
		}
	}
	if !o.fill(t, attempt) {
		return
	}
	o.event("end", endEvent{Status: string(t.Status), ExitCode: t.ExitCode, Error: nonEmpty(t.Error), Attempt: attempt,
		StdoutTruncated: t.StdoutCut, StderrTruncated: t.StderrCut})
}

// fill sends what of t's stored output, the result of delivery attempt,
// the follower has not had, and counts it as sent. A held-back partial
// character is dropped: the stored output has it whole (or as U+FFFD).
func (o *outputStream) fill(t task.Task, attempt int) bool {
	o.pending = [2][]byte{}
	sent, texts := o.offsets(attempt), at(o.texts, attempt)
	for s, stored := range [2]string{t.Stdout, t.Stderr} {
		upTo := sent[s]
		if texts[s] >= 0 { // all of it sent as text: that much of the stored text
			upTo = texts[s]
		}
		from := int(min(upTo, int64(len(stored))))
		for from < len(stored) && !utf8.RuneStart(stored[from]) {
			from++
		}
		for from < len(stored) {
			to := min(from+outputChunk, len(stored))
			for to < len(stored) && !utf8.RuneStart(stored[to]) {
				to--
			}
			if !o.event("output", outputEvent{Attempt: attempt, Stream: liveout.Stream(s).String(), Offset: int64(from), Text: stored[from:to]}) {
				return false
			}
			from = to
		}
		n := int64(len(stored))
		sent[s] = max(sent[s], n)
		if texts[s] >= 0 {
			texts[s] = max(texts[s], n)
		}
	}
	return true
}
