package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
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
