package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitLivesThroughAMasterRestart: wait has heard from the master, then
// the master goes away (a request answered by a closed connection, then
// 503 while it shuts down) and comes back. The task lives through a
// restart; wait must too, as run does, and exit with the task's code,
// saying once that it lost the master.
func TestWaitLivesThroughAMasterRestart(t *testing.T) {
	oldEvery := reconnectEvery
	reconnectEvery = 10 * time.Millisecond
	t.Cleanup(func() { reconnectEvery = oldEvery })
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/tasks/t1" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		switch gets.Add(1) {
		case 1:
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"running","attempts":1}`)
		case 2: // the master dies with the request open
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		case 3:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"the master is shutting down"}`)
		default:
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"failed","exit_code":3,"attempts":1}`)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "wait", "t1")
	if r.code != 3 {
		t.Fatalf("exit %d, want the task's 3: %v", r.code, r)
	}
	if n := strings.Count(r.stderr, "lost the master while waiting for task t1"); n != 1 {
		t.Errorf("said %d times that it lost the master, want once: %v", n, r)
	}
}

// TestWaitGivesUpOnAMasterThatStaysAway: after reconnectFor without an
// answer, wait ends (exit 1) saying which task may still run; a master
// never reached ends it at once, as before.
func TestWaitGivesUpOnAMasterThatStaysAway(t *testing.T) {
	oldFor, oldEvery := reconnectFor, reconnectEvery
	reconnectFor, reconnectEvery = 100*time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { reconnectFor, reconnectEvery = oldFor, oldEvery })
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gets.Add(1) == 1 {
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"running","attempts":1}`)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"the master is shutting down"}`)
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "wait", "t1")
	last := r.stderr[strings.LastIndex(strings.TrimSuffix(r.stderr, "\n"), "\n")+1:]
	if r.code != exitError || !strings.Contains(last, "task t1 may still run") || gets.Load() < 3 {
		t.Fatalf("exit %d after %d requests, last line %q; want exit %d after trying again, naming the task: %v", r.code, gets.Load(), last, exitError, r)
	}

	srv.Close() // nothing listens: never reached
	began := time.Now()
	r = cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "wait", "t1")
	if r.code != exitError || strings.Contains(r.stderr, "trying again") || time.Since(began) > reconnectFor*10 {
		t.Fatalf("a master never reached: exit %d after %s; want exit %d at once, without trying again: %v", r.code, time.Since(began), exitError, r)
	}
}
