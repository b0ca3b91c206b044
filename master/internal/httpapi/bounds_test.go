package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
)

// MASTER_MAX_QUEUED is "queued tasks at most": a retry by hand queues a
// task as a submission does, so while the queue is full it must be refused
// (429 with Retry-After) and leave the task final, not push the queue past
// its bound.
func TestRetryRespectsMaxQueued(t *testing.T) {
	srv, d := newServerOn(t, func(p *dispatch.Params) { p.MaxQueued = 1 }, func(*Params) {})
	_, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo a"}`)
	a := m["id"].(string)
	if code, _, m := do(t, http.MethodDelete, srv.URL+"/tasks/"+a, ""); code != http.StatusOK {
		t.Fatalf("DELETE = %d %v", code, m)
	}
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo b"}`); code != http.StatusAccepted {
		t.Fatalf("POST b = %d %v", code, m)
	}
	// The queue is full now: a new task is refused.
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo c"}`); code != http.StatusTooManyRequests {
		t.Fatalf("POST c with a full queue = %d %v, want 429", code, m)
	}
	code, hdr, m := do(t, http.MethodPost, srv.URL+"/tasks/"+a+"/retry", "")
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Errorf("POST /tasks/{id}/retry with a full queue = %d %v, want 429 with Retry-After", code, m)
	}
	if n := queued(t, d); n > 1 {
		t.Errorf("%d tasks queued, MASTER_MAX_QUEUED is 1", n)
	}
}

// A status filter that names the same status many times is still a filter
// of at most six statuses: not a 500 from the database's bound on query
// parameters. (It fits in a request line under MASTER_MAX_HEADER_BYTES'
// upper bound, 1 MiB.)
func TestListRepeatedStatusIsNoServerError(t *testing.T) {
	srv, _ := newServer(t, nil)
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo a"}`); code != http.StatusAccepted {
		t.Fatalf("POST = %d %v", code, m)
	}
	status := strings.TrimSuffix(strings.Repeat("queued,", 40000), ",")
	code, _, m := do(t, http.MethodGet, srv.URL+"/tasks?status="+status, "")
	if code != http.StatusOK {
		t.Fatalf("GET /tasks?status=queued,queued,... (40000 times) = %d %v, want 200 with the queued task", code, m)
	}
	if ts, _ := m["tasks"].([]any); len(ts) != 1 {
		t.Fatalf("listed %v, want the one queued task", m["tasks"])
	}
}
