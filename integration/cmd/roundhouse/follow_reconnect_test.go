package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunReconnectSaysEachThingOnce: the master restarts during attempt 2.
// A new follow starts again with the running delivery: its attempt event,
// and, when the live buffer dropped the start of the output, a skipped
// event for bytes run had already printed. run must print nothing twice:
// not the attempt note, and no "skipped" note for bytes it did print.
func TestRunReconnectSaysEachThingOnce(t *testing.T) {
	var follows atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.Method == http.MethodGet && r.URL.Path == "/tasks/t1/output":
			w.Header().Set("Content-Type", "text/event-stream")
			send := func(name, data string) { fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data) }
			if follows.Add(1) == 1 {
				send("attempt", `{"attempt":1,"worker_id":"w1"}`)
				send("attempt_end", `{"attempt":1,"worker_id":"w1","outcome":"lost","detail":"worker w1 timed out"}`)
				send("attempt", `{"attempt":2,"worker_id":"w2"}`)
				send("output", `{"attempt":2,"stream":"stdout","offset":0,"text":"one\n"}`)
				return // the master restarts
			}
			// The new follow: the running delivery from the start of its
			// ring, whose first 4 bytes ("one\n", printed) were dropped.
			send("attempt", `{"attempt":2,"worker_id":"w2"}`)
			send("skipped", `{"attempt":2,"stream":"stdout","bytes":4}`)
			send("output", `{"attempt":2,"stream":"stdout","offset":4,"text":"two\n"}`)
			send("end", `{"status":"succeeded","exit_code":0,"error":null,"attempt":2}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":"no such endpoint: %s %s"}`, r.Method, r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "run", "--", "x")
	if r.code != 0 || r.stdout != "one\ntwo\n" {
		t.Fatalf("want exit 0 and each byte once: %v", r)
	}
	if n := strings.Count(r.stderr, "attempt 2 on w2"); n != 1 {
		t.Errorf("the note of attempt 2 is printed %d times, want once", n)
	}
	if strings.Contains(r.stderr, "skipped") {
		t.Errorf("a skipped note for bytes that were printed")
	}
	if t.Failed() {
		t.Log(r)
	}
}

// TestFollowReconnectsAQuietStream: the master restarts, the follow gets
// the stream back, and no event comes through it (the task waits in the
// queue) for longer than reconnectFor before the master restarts again.
// That second break is a new one: the follow must reconnect again, not
// give up as if it had been failing to connect since the first.
func TestFollowReconnectsAQuietStream(t *testing.T) {
	oldFor, oldEvery := reconnectFor, reconnectEvery
	reconnectFor, reconnectEvery = 200*time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { reconnectFor, reconnectEvery = oldFor, oldEvery })
	var follows atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/t1/output" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		send := func(name, data string) { fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data) }
		switch follows.Add(1) {
		case 1:
			send("attempt", `{"attempt":1,"worker_id":"w1"}`)
			send("attempt_end", `{"attempt":1,"worker_id":"w1","outcome":"lost","detail":"worker w1 timed out"}`)
			// the master restarts
		case 2:
			// Open and quiet for three times reconnectFor; then it restarts.
			select {
			case <-time.After(3 * reconnectFor):
			case <-r.Context().Done():
			}
		default:
			send("attempt", `{"attempt":2,"worker_id":"w2"}`)
			send("output", `{"attempt":2,"stream":"stdout","offset":0,"text":"done\n"}`)
			send("end", `{"status":"succeeded","exit_code":0,"error":null,"attempt":2}`)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "logs", "-f", "t1")
	if r.code != 0 || r.stdout != "done\n" {
		t.Fatalf("want exit 0 and the output of attempt 2 after the second restart: %v", r)
	}
	if n := strings.Count(r.stderr, "lost the output stream"); n != 2 {
		t.Errorf("%d notes of a lost stream, want one per break (2): %s", n, r.stderr)
	}
}

// failingWriter is a stdout that cannot be written (a full disk).
type failingWriter struct{ writes atomic.Int32 }

func (w *failingWriter) Write([]byte) (int, error) {
	w.writes.Add(1)
	return 0, errors.New("no space left on device")
}

// TestStreamsStopWhenTheyCannotPrint: for logs -f and events, a write to
// stdout that fails is no broken stream; reconnecting would only fail
// again, for reconnectFor, with a note of a lost stream each time.
func TestStreamsStopWhenTheyCannotPrint(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		events string // what the master streams
		lost   string // the note of a lost stream
	}{
		{[]string{"logs", "-f", "t1"}, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n" +
			"event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"x\\n\"}\n\n", "lost the output stream"},
		{[]string{"events"}, "id: 1\nevent: task.queued\ndata: {\"seq\":1,\"type\":\"task.queued\",\"task_id\":\"t1\"}\n\n", "lost the event stream"},
	} {
		t.Run(tt.args[0], func(t *testing.T) {
			var conns atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conns.Add(1)
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, tt.events)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			}))
			t.Cleanup(srv.Close)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out failingWriter
			var errb bytes.Buffer
			code := run(ctx, tt.args, strings.NewReader(""), &out, &errb, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="})
			if code != exitError || conns.Load() != 1 || out.writes.Load() != 1 {
				t.Fatalf("exit %d after %d connections and %d writes, want %d after 1 and 1; stderr: %s", code, conns.Load(), out.writes.Load(), exitError, errb.String())
			}
			if !strings.Contains(errb.String(), "no space left on device") || strings.Contains(errb.String(), tt.lost) {
				t.Errorf("stderr should name the write error and no lost stream: %s", errb.String())
			}
		})
	}
}
