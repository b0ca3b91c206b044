package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// outputJSON is GET /tasks/{id}/output without follow (the README's Live output section).
type outputJSON struct {
	TaskID          string  `json:"task_id"`
	Status          string  `json:"status"`
	Attempt         int     `json:"attempt"`   // the delivery the output belongs to; 0 when none ran
	WorkerID        *string `json:"worker_id"` // null when none ran
	Live            bool    `json:"live"`      // read from the live buffer of a running delivery
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	StdoutOffset    int64   `json:"stdout_offset"` // where stdout starts in the delivery's stream
	StderrOffset    int64   `json:"stderr_offset"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

// getOutput serves GET /tasks/{id}/output: what there is now, or with
// follow=true the output as it arrives, as Server-Sent Events, until the
// task is final.
func (a *api) getOutput(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "follow"); err != nil {
		a.writeError(w, err)
		return
	}
	follow, err := followParam(r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	id, err := taskID(r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	if follow {
		a.followOutput(w, r, id)
		return
	}
	t, err := a.d.Get(r.Context(), id)
	if err != nil {
		a.writeError(w, err)
		return
	}
	if t.Status == task.StatusRunning {
		if snap, ok := a.live.Snapshot(id); ok {
			out := outputJSON{TaskID: id, Status: string(t.Status), Attempt: snap.Attempt, WorkerID: nonEmpty(snap.WorkerID), Live: true}
			out.Stdout, out.StdoutOffset = liveText(snap.Streams[liveout.Stdout])
			out.Stderr, out.StderrOffset = liveText(snap.Streams[liveout.Stderr])
			out.StdoutTruncated, out.StderrTruncated = snap.Streams[liveout.Stdout].Gaps, snap.Streams[liveout.Stderr].Gaps
			writeJSON(w, http.StatusOK, out)
			return
		}
	}
	// Final, or between attempts (the last result, if any), or running
	// with nothing live yet.
	n := finalAttempt(t)
	out := outputJSON{TaskID: id, Status: string(t.Status), Attempt: n, Stdout: t.Stdout, Stderr: t.Stderr,
		StdoutTruncated: t.StdoutCut, StderrTruncated: t.StderrCut}
	if n > 0 {
		out.WorkerID = nonEmpty(t.WorkerID)
	}
	writeJSON(w, http.StatusOK, out)
}

// followParam reads ?follow=: true, false, 1 or 0; absent is false.
func followParam(r *http.Request) (bool, error) {
	v, ok := r.URL.Query()["follow"]
	if !ok {
		return false, nil
	}
	switch v[0] {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%w: follow must be true, false, 1 or 0", task.ErrInvalid)
}

// liveText is a live stream's bytes as text, and the offset it starts at:
// a character cut at the start by the ring is left out (the offset moves
// past it), one not yet whole at the end is left for later, and invalid
// bytes become U+FFFD.
func liveText(s liveout.StreamSnapshot) (string, int64) {
	data, off := s.Data, s.Offset
	if off > 0 { // the ring may have cut a character: its tail is no text
		i := 0
		for i < len(data) && i < utf8.UTFMax-1 && !utf8.RuneStart(data[i]) {
			i++
		}
		data, off = data[i:], off+int64(i)
	}
	return strings.ToValidUTF8(string(data[:wholeRunes(data)]), "\uFFFD"), off
}

// wholeRunes is how much of p ends on a whole character: p without a
// trailing, incomplete UTF-8 sequence that more bytes could complete.
func wholeRunes(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return i
			}
			break
		}
	}
	return len(p)
}

// finalAttempt is the delivery a task's stored output belongs to: the one
// whose result decided it (a late result of an earlier delivery can), as
// far as the task's history tells, else its last delivery. A cancel decides
// a task without a result: its last delivery is the one it ended (an
// earlier delivery may have been canceled too, before a retry by hand).
func finalAttempt(t task.Task) int {
	if t.Status.Final() && t.Status != task.StatusCanceled {
		for i := len(t.History) - 1; i >= 0; i-- {
			if h := t.History[i]; !h.Duplicate && h.Outcome == task.Outcome(t.Status) {
				return h.N
			}
		}
	}
	return t.Attempts
}

// storedAttempt is the delivery whose result t's stored output is, 0 for
// none: its latest result kept since a retry by hand (which drops the
// output). A lost delivery keeps none, nor does a duplicate result.
func storedAttempt(t task.Task) int {
	for i := len(t.History) - 1; i >= 0; i-- {
		h := t.History[i]
		if h.N <= t.AttemptBase {
			break
		}
		switch h.Outcome {
		case task.OutcomeSucceeded, task.OutcomeFailed, task.OutcomeTimedOut:
			if !h.Duplicate {
				return h.N
			}
		}
	}
	return 0
}

// outputChunk bounds the text of one output event (on a character
// boundary), so a reader never needs to hold a huge line of the stream.
const outputChunk = 32 << 10

// followOutput serves a follow: see the README's Live output section for the events.
func (a *api) followOutput(w http.ResponseWriter, r *http.Request, id string) {
	if !a.acquireStream() {
		a.writeError(w, fmt.Errorf("%w (MASTER_MAX_EVENT_STREAMS=%d); close one or retry later", errTooManyStreams, a.maxStreams))
		return
	}
	defer a.releaseStream()
	// Registered before the task is read: a change in between (the task
	// goes final, a delivery starts) reaches the follower rather than
	// falling between the read and the registration.
	f := a.live.Follow(id)
	defer f.Close()
	t, err := a.d.Get(r.Context(), id)
	if err != nil {
		a.writeError(w, err)
		return
	}
	// A follower that stops reading is dropped after streamWriteTimeout;
	// only its own handler waits meanwhile.
	write := startSSE(w)
	o := newOutputStream(write)
	if !write(": roundhouse output\n\n") {
		return
	}
	if t.Status.Final() {
		o.finish(t, 0)
		return
	}
	tick := time.NewTicker(a.heartbeat)
	defer tick.Stop()
	for {
		evs, wait, closed := f.Next(outputChunk)
		if closed {
			return // the master is shutting down
		}
		for _, e := range evs {
			if e.Kind == liveout.KindFinal {
				// The dispatcher published the change under its lock, so
				// this read sees the task final; it must not fail because
				// the client left at this very moment.
				ft, err := a.d.Get(context.WithoutCancel(r.Context()), id)
				if err != nil {
					a.log.Error("reading a final task for its follower", "task_id", id, "err", err)
					return
				}
				o.finish(ft, e.Attempt)
				return
			}
			if e.Kind == liveout.KindAttemptEnd && e.Outcome != "lost" {
				// A failed try with a retry to come: its result, kept
				// as the task's output until the next, has what the
				// worker wrote last, whose chunks raced that result
				// and were refused once the try had ended.
				if t, err := a.d.Get(r.Context(), id); err == nil && storedAttempt(t) == e.Attempt && !o.fill(t, e.Attempt) {
					return
				}
			}
			if !o.send(e) {
				return
			}
		}
		if wait == nil {
			continue
		}
		select {
		case <-wait:
		case <-tick.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}
