package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
