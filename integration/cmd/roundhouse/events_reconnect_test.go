package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// TestEventsReconnectsAQuietStream: the master accepts GET /events (200,
// its "retry:" and comment) but no event happens before it restarts. The
// stream did break after it was open, so events must reconnect, as the
// README says, not exit 1 as if the master had never been reached.
func TestEventsReconnectsAQuietStream(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 2000\n: roundhouse events\n\n")
		w.(http.Flusher).Flush()
		if conns.Add(1) == 1 {
			return // a quiet cluster; then the master restarts
		}
		fmt.Fprint(w, "id: 1\nevent: task.queued\ndata: {\"seq\":1,\"type\":\"task.queued\",\"task_id\":\"t1\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	_, errs := eventsUntil(t, srv.URL, `"task_id":"t1"`)
	if !strings.Contains(errs, "lost the event stream") {
		t.Errorf("stderr lacks the reconnect note: %s", errs)
	}
}

// eventsUntil runs `roundhouse events --json` against the master at api
// until its output holds want (failing the test if it ends first, or after
// 10 s), then stops it as Ctrl-C does, and returns what it printed.
func eventsUntil(t *testing.T, api, want string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb localcluster.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "--json"}, strings.NewReader(""), &out, &errb, []string{"ROUNDHOUSE_API=" + api, "MASTER_API_TOKEN="})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case code := <-done:
			t.Fatalf("events ended before printing %s: exit %d, stderr: %s", want, code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after the reconnect; stderr: %s", want, errb.String())
		}
	}
	cancel()
	if code := <-done; code != exitInterrupted {
		t.Fatalf("exit %d, want %d", code, exitInterrupted)
	}
	return out.String(), errb.String()
}

// TestEventsReconnectWaitsForAPlace: the master restarts, and as every
// follower reconnects at once the first try gets 429 (too many streams
// open, "retry later"). The stream broke after it was open: events must
// go on trying, as for a refused connection, and resume where it left off.
func TestEventsReconnectWaitsForAPlace(t *testing.T) {
	oldFor, oldEvery := reconnectFor, reconnectEvery
	reconnectFor, reconnectEvery = 10*time.Second, 10*time.Millisecond
	t.Cleanup(func() { reconnectFor, reconnectEvery = oldFor, oldEvery })
	var conns atomic.Int32
	var resumedFrom atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch conns.Add(1) {
		case 1:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "retry: 2000\n\nid: 1\nevent: task.queued\ndata: {\"seq\":1,\"type\":\"task.queued\",\"task_id\":\"t1\"}\n\n")
			return // the master restarts
		case 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"too many event streams are open (MASTER_MAX_EVENT_STREAMS=64); close one or retry later"}`)
			return
		}
		resumedFrom.Store(r.Header.Get("Last-Event-ID"))
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 2000\n\nid: 2\nevent: task.queued\ndata: {\"seq\":2,\"type\":\"task.queued\",\"task_id\":\"t2\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	eventsUntil(t, srv.URL, `"task_id":"t2"`) // not given up on the 429
	if got := resumedFrom.Load(); got != "1" {
		t.Errorf("resumed with Last-Event-ID %q, want 1", got)
	}
}

// TestEventsResumesFromWhereTheStreamStarted: the master says where the
// stream starts (an id line before any event), no event comes, and the
// stream breaks. events must reconnect with that id as Last-Event-ID, so
// the master sends what was published meanwhile (or says gap), not
// reconnect as a new reader that silently misses it.
func TestEventsResumesFromWhereTheStreamStarted(t *testing.T) {
	oldEvery := reconnectEvery
	reconnectEvery = 10 * time.Millisecond
	t.Cleanup(func() { reconnectEvery = oldEvery })
	var conns atomic.Int32
	var resumedFrom atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		if conns.Add(1) == 1 {
			fmt.Fprint(w, "retry: 2000\nid: 5\n: roundhouse events\n\n")
			return // quiet, then the master restarts
		}
		resumedFrom.Store(r.Header.Get("Last-Event-ID"))
		fmt.Fprint(w, "retry: 2000\n: roundhouse events\n\nid: 6\nevent: task.queued\ndata: {\"seq\":6,\"type\":\"task.queued\",\"task_id\":\"t6\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	out, _ := eventsUntil(t, srv.URL, `"task_id":"t6"`)
	if got := resumedFrom.Load(); got != "5" {
		t.Errorf("resumed with Last-Event-ID %q, want 5, where the first stream started", got)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
		t.Errorf("want the one event printed, got %q", out)
	}
}
