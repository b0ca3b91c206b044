package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// withLive serves the API with live output following the hub, as main does.
type withLive struct {
	*observed
	live *liveout.Buffers
}

func newWithLive(t *testing.T, ringBytes int) withLive {
	t.Helper()
	live := liveout.New(ringBytes)
	o := newObservedWith(t, func(p *Params) {
		p.Events.Observe(live.Observe)
		p.LiveOutput = live
	}, nil)
	t.Cleanup(live.Close) // before srv.Close, which waits for open follows
	return withLive{observed: o, live: live}
}

// outEvent is one SSE event of a follow, its data as a JSON object.
type outEvent struct {
	event string
	data  map[string]any
}

// follow opens GET /tasks/{id}/output?follow=true and sends its events,
// heartbeats left out, on the returned channel, closed at the stream's end.
func follow(t *testing.T, base, id string) <-chan outEvent {
	t.Helper()
	resp, err := http.Get(base + "/tasks/" + id + "/output?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("follow: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan outEvent, 100)
	go func() { // ends with the body
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var cur outEvent
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if cur.event != "" {
					ch <- cur
				}
				cur = outEvent{}
			case strings.HasPrefix(line, "event: "):
				cur.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
					cur.event = "bad data: " + line
				}
			}
		}
	}()
	return ch
}

// expect reads the next event and checks its name and the given fields.
func expect(t *testing.T, ch <-chan outEvent, event string, fields map[string]any) outEvent {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("stream ended; want %s %v", event, fields)
		}
		if e.event != event {
			t.Fatalf("got %s %v; want %s %v", e.event, e.data, event, fields)
		}
		for k, v := range fields {
			if e.data[k] != v {
				t.Fatalf("%s: %s = %#v; want %#v (all: %v)", event, k, e.data[k], v, e.data)
			}
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no event within 10s; want %s %v", event, fields)
	}
	return outEvent{}
}

func expectClosed(t *testing.T, ch <-chan outEvent) {
	t.Helper()
	select {
	case e, ok := <-ch:
		if ok {
			t.Fatalf("got %s %v after end; want the stream closed", e.event, e.data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream stayed open after end")
	}
}

// start registers worker id, submits cmd and waits for its delivery.
func (w withLive) start(t *testing.T, workerID, cmd string) (*dispatch.Session, task.Assignment) {
	t.Helper()
	s, _, err := w.d.Register(t.Context(), dispatch.Registration{WorkerID: workerID, InstanceID: "i-" + workerID, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	return s, w.submit(t, s, cmd)
}

// submit submits cmd and waits for its delivery to s, the only free worker.
func (w withLive) submit(t *testing.T, s *dispatch.Session, cmd string) task.Assignment {
	t.Helper()
	status, _, body := do(t, http.MethodPost, w.srv.URL+"/tasks", `{"cmd":"`+cmd+`"}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST /tasks: %d %v", status, body)
	}
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	return a
}

func (w withLive) report(t *testing.T, s *dispatch.Session, a task.Assignment, stdout string) {
	t.Helper()
	now := time.Now()
	if _, err := w.d.Report(t.Context(), task.Result{TaskID: a.ID, WorkerID: s.WorkerID, InstanceID: s.InstanceID, Attempt: a.Attempt,
		Stdout: []byte(stdout), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
}

func line(a task.Assignment, worker string, off int, text string) liveout.Chunk {
	return liveout.Chunk{TaskID: a.ID, WorkerID: worker, Attempt: a.Attempt, Stream: liveout.Stdout, Offset: int64(off), Data: []byte(text)}
}

// Each line reaches the follower while the task runs, before its result.
func TestFollowOutputLive(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "for i in 1 2 3; do echo $i; sleep 0.2; done")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w1"})
	off := 0
	for _, text := range []string{"1\n", "2\n", "3\n"} {
		if !w.live.Append(line(a, "w1", off, text)) {
			t.Fatalf("chunk %q refused", text)
		}
		// Seen before the next line is even written, and before the result.
		expect(t, ch, "output", map[string]any{"attempt": 1.0, "stream": "stdout", "offset": float64(off), "text": text})
		off += len(text)
	}
	// Without follow: the live buffer.
	code, _, body := do(t, http.MethodGet, w.srv.URL+"/tasks/"+a.ID+"/output", "")
	if code != 200 || body["live"] != true || body["stdout"] != "1\n2\n3\n" || body["status"] != "running" || body["attempt"] != 1.0 || body["worker_id"] != "w1" {
		t.Fatalf("GET output of a running task = %d %v", code, body)
	}
	w.report(t, s, a, "1\n2\n3\n")
	// All of it came live: nothing to fill in.
	expect(t, ch, "end", map[string]any{"status": "succeeded", "exit_code": 0.0, "attempt": 1.0, "error": nil})
	expectClosed(t, ch)

	code, _, body = do(t, http.MethodGet, w.srv.URL+"/tasks/"+a.ID+"/output", "")
	if code != 200 || body["live"] != false || body["stdout"] != "1\n2\n3\n" || body["status"] != "succeeded" {
		t.Fatalf("GET output of a final task = %d %v", code, body)
	}
}

// What did not come live comes from the stored output before end: none of
// it, the rest of a stream, and a character split between chunks.
func TestFollowOutputFillsInFromStoredOutput(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0})
	w.report(t, s, a, "a\nb\n")
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "a\nb\n"})
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)

	a2 := w.submit(t, s, "echo")
	ch = follow(t, w.srv.URL, a2.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w1"})
	w.live.Append(line(a2, "w1", 0, "héllo"[:2])) // "h" and half of "é"
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "h"})
	w.live.Append(line(a2, "w1", 2, "héllo"[2:4])) // the rest of "é", and "l"
	expect(t, ch, "output", map[string]any{"offset": 1.0, "text": "él"})
	w.report(t, s, a2, "héllo\n")
	expect(t, ch, "output", map[string]any{"offset": 4.0, "text": "lo\n"})
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)

	// A follow of a final task: attempt, its stored output, end.
	ch = follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w1"})
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "a\nb\n"})
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)
}

// A lost worker's delivery ends with attempt_end, and the re-run is a new
// attempt the follower is told of.
func TestFollowOutputAcrossAReRun(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w1"})
	w.live.Append(line(a, "w1", 0, "first\n"))
	expect(t, ch, "output", map[string]any{"text": "first\n"})
	// The worker comes back as a new session without the task: its
	// delivery is lost, and the task goes to the new session.
	s2, _, err := w.d.Register(t.Context(), dispatch.Registration{WorkerID: "w1", InstanceID: s.InstanceID, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	a2, ok := nextTask(s2)
	if !ok || a2.ID != a.ID || a2.Attempt != 2 {
		t.Fatalf("re-run = %+v, %v", a2, ok)
	}
	expect(t, ch, "attempt_end", map[string]any{"attempt": 1.0, "worker_id": "w1", "outcome": "lost"})
	expect(t, ch, "attempt", map[string]any{"attempt": 2.0, "worker_id": "w1"})
	if w.live.Append(line(a, "w1", 6, "stale\n")) {
		t.Error("a chunk of the lost delivery was kept")
	}
	w.live.Append(line(a2, "w1", 0, "second\n"))
	expect(t, ch, "output", map[string]any{"attempt": 2.0, "offset": 0.0, "text": "second\n"})
	w.report(t, s2, a2, "second\n")
	expect(t, ch, "end", map[string]any{"status": "succeeded", "attempt": 2.0})
	expectClosed(t, ch)
}

// A follower that reads nothing holds up neither the chunks nor the result.
func TestFollowerThatNeverReadsDoesNotStopTheTask(t *testing.T) {
	w := newWithLive(t, 4096)
	s, a := w.start(t, "w1", "yes")
	resp, err := http.Get(w.srv.URL + "/tasks/" + a.ID + "/output?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	chunk := strings.Repeat("y\n", 16<<10)
	for i := range 256 { // 8 MiB, far beyond what the connection buffers
		if !w.live.Append(line(a, "w1", i*len(chunk), chunk)) {
			t.Fatalf("chunk %d refused", i)
		}
	}
	w.report(t, s, a, "y\n")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := w.d.Wait(ctx, a.ID)
	if err != nil || got.Status != task.StatusSucceeded {
		t.Fatalf("task = %v, %v; want succeeded", got.Status, err)
	}
}

func TestOutputRequestErrors(t *testing.T) {
	w := newWithLive(t, 4096)
	_, a := w.start(t, "w1", "echo")
	tests := []struct {
		name string
		path string
		want int
	}{
		{"unknown task", "/tasks/no-such-task/output", http.StatusNotFound},
		{"unknown task, follow", "/tasks/no-such-task/output?follow=true", http.StatusNotFound},
		{"bad follow", "/tasks/" + a.ID + "/output?follow=maybe", http.StatusBadRequest},
		{"empty follow", "/tasks/" + a.ID + "/output?follow=", http.StatusBadRequest},
		{"unknown parameter", "/tasks/" + a.ID + "/output?tail=10", http.StatusBadRequest},
		{"bad ID", "/tasks/a.b/output", http.StatusBadRequest},
		{"follow=0", "/tasks/" + a.ID + "/output?follow=0", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := do(t, http.MethodGet, w.srv.URL+tt.path, "")
			if code != tt.want {
				t.Fatalf("GET %s = %d %v, want %d", tt.path, code, body, tt.want)
			}
			if code != http.StatusOK && body["error"] == nil {
				t.Errorf("no error message: %v", body)
			}
		})
	}
}

func TestFinalAttempt(t *testing.T) {
	attempt := func(n int, o task.Outcome, dup bool) task.Attempt {
		return task.Attempt{N: n, Outcome: o, Duplicate: dup}
	}
	tests := []struct {
		name string
		t    task.Task
		want int
	}{
		{"succeeded on its last delivery", task.Task{Status: task.StatusSucceeded, Attempts: 2,
			History: []task.Attempt{attempt(1, task.OutcomeLost, false), attempt(2, task.OutcomeSucceeded, false)}}, 2},
		{"decided by a late result of an earlier delivery", task.Task{Status: task.StatusSucceeded, Attempts: 2,
			History: []task.Attempt{attempt(1, task.OutcomeSucceeded, false), attempt(2, task.OutcomeSucceeded, true)}}, 1},
		{"canceled on its second run, after a canceled first", task.Task{Status: task.StatusCanceled, Attempts: 2,
			History: []task.Attempt{attempt(1, task.OutcomeCanceled, false), attempt(2, task.OutcomeRunning, false)}}, 2},
		{"running", task.Task{Status: task.StatusRunning, Attempts: 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := finalAttempt(tt.t); got != tt.want {
				t.Errorf("finalAttempt = %d, want %d", got, tt.want)
			}
		})
	}
}
