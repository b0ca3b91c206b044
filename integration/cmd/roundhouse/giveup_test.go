package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunThatGivesUpNamesTheTask: run submitted a task, followed it, and
// the master went away for longer than reconnectFor. The task may still
// run (the master may come back, its worker runs on): run's last words
// must say which task it was and how to go on with it, whatever the
// error that ended the follow (here: a connection refused, the usual
// error of a master that is down).
func TestRunThatGivesUpNamesTheTask(t *testing.T) {
	oldFor, oldEvery := reconnectFor, reconnectEvery
	reconnectFor, reconnectEvery = 100*time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { reconnectFor, reconnectEvery = oldFor, oldEvery })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.URL.Path == "/tasks/t1/output":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n")
			w.(http.Flusher).Flush()
			// The master stops, and stays down: nothing listens any more.
			go l.Close()
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.SetKeepAlivesEnabled(false) // each try a new connection: refused once l is closed
	srv.Start()
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "run", "--", "x")
	if r.code != exitError {
		t.Fatalf("exit %d, want %d: %.2000s", r.code, exitError, r)
	}
	last := r.stderr[strings.LastIndex(strings.TrimSuffix(r.stderr, "\n"), "\n")+1:]
	if !strings.Contains(last, "task t1 may still run") || !strings.Contains(last, "roundhouse wait t1") {
		t.Fatalf("the last line does not say which task may still run and how to wait for it: %q\n%v", last, r)
	}
}

// TestRunWaitsForAPlaceToFollow: the master has MASTER_MAX_EVENT_STREAMS
// streams open when run starts following the task it submitted, and
// answers the follow 429 ("close one or retry later"). The task is
// submitted and runs: run must follow it once a place is free, not exit 1
// telling the user to try again, which would submit the command twice.
func TestRunWaitsForAPlaceToFollow(t *testing.T) {
	oldFor, oldEvery := reconnectFor, reconnectEvery
	reconnectFor, reconnectEvery = 10*time.Second, 10*time.Millisecond
	t.Cleanup(func() { reconnectFor, reconnectEvery = oldFor, oldEvery })
	var submits, follows atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			submits.Add(1)
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.URL.Path == "/tasks/t1/output":
			if follows.Add(1) <= 2 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"error":"too many event streams are open (MASTER_MAX_EVENT_STREAMS=64); close one or retry later"}`)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n"+
				"event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"hello\\n\"}\n\n"+
				"event: end\ndata: {\"status\":\"failed\",\"exit_code\":3,\"error\":null,\"attempt\":1}\n\n")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "run", "--", "x")
	if r.code != 3 || r.stdout != "hello\n" || submits.Load() != 1 {
		t.Fatalf("want exit 3 and the output of the one task submitted (%d submitted): %v", submits.Load(), r)
	}
	if n := strings.Count(r.stderr, "\n"); n != 1 || !strings.Contains(r.stderr, "MASTER_MAX_EVENT_STREAMS") {
		t.Errorf("want one note that the master is busy, naming why: %q", r.stderr)
	}
}

// TestRunThatIsRefusedTheFollowNamesTheTask: run submitted a task, and the
// master refused its follow (401: the token changed on the master since).
// The task runs on: run's last words must say which it is.
func TestRunThatIsRefusedTheFollowNamesTheTask(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.URL.Path == "/tasks/t1/output":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"missing or wrong API token"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "run", "--", "x")
	last := r.stderr[strings.LastIndex(strings.TrimSuffix(r.stderr, "\n"), "\n")+1:]
	if r.code != exitError || !strings.Contains(last, "task t1 may still run") || !strings.Contains(last, "API token") {
		t.Fatalf("exit %d, last line %q; want exit %d saying why and which task may still run: %v", r.code, last, exitError, r)
	}
}
