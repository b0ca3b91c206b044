package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func TestCancelEndpoint(t *testing.T) {
	srv, _ := newServer(t, nil)
	_, _, created := do(t, "POST", srv.URL+"/tasks", `{"cmd":"sleep 60"}`)
	id := created["id"].(string)
	code, _, body := do(t, "DELETE", srv.URL+"/tasks/"+id, "")
	if code != 200 || body["status"] != "canceled" {
		t.Fatalf("DELETE queued task = %d %v", code, body)
	}
	code, _, body = do(t, "DELETE", srv.URL+"/tasks/"+id, "")
	if code != http.StatusConflict || !strings.Contains(body["error"].(string), "already canceled") {
		t.Fatalf("DELETE canceled task = %d %v, want 409", code, body)
	}
	if code, _, _ := do(t, "DELETE", srv.URL+"/tasks/nope", ""); code != 404 {
		t.Fatalf("DELETE unknown = %d", code)
	}
}

func TestWaitParam(t *testing.T) {
	srv, d := newServer(t, nil)
	s, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The "worker" answers the task the moment it gets it.
	go func() {
		a, _ := nextTask(s)
		d.Report(context.Background(), task.Result{TaskID: a.ID, WorkerID: "w", InstanceID: "i", Attempt: a.Attempt, Stdout: []byte("hi\n")})
	}()
	code, _, body := do(t, "POST", srv.URL+"/tasks?wait=5s", `{"cmd":"echo hi"}`)
	if code != 202 || body["status"] != "succeeded" || body["stdout"] != "hi\n" {
		t.Fatalf("POST ?wait = %d %v, want the finished task", code, body)
	}
	// Nobody reports this one: the wait ends with the task still running.
	_, _, body = do(t, "POST", srv.URL+"/tasks", `{"cmd":"echo later"}`)
	code, _, body = do(t, "GET", srv.URL+"/tasks/"+body["id"].(string)+"?wait=50ms", "")
	if code != 200 || body["status"] != "running" {
		t.Fatalf("GET ?wait on a waiting task = %d %v", code, body)
	}
	for _, bad := range []string{"soon", "-1s", "10m"} {
		if code, _, _ := do(t, "GET", srv.URL+"/tasks/x?wait="+bad, ""); code != 400 {
			t.Errorf("wait=%s: %d, want 400", bad, code)
		}
	}
}

// A client that goes away ends its POST /tasks?wait= at once. net/http
// cancels a request's context when its client goes only once the handler
// has read the body to its end; decode reads a body of known length into a
// buffer of that length, and must still read it to its end.
func TestPostWaitEndsWhenTheClientGoesAway(t *testing.T) {
	returned := make(chan struct{})
	// A wait far longer than the test's deadline, and short enough that a
	// failure ends: the server's Close waits for the handler.
	o := newObservedWith(t, func(p *Params) { p.MaxWait = time.Minute }, func(s *http.Server) {
		api := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			api.ServeHTTP(w, r)
			if r.Method == http.MethodPost {
				close(returned)
			}
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", o.srv.URL+"/tasks?wait=1m", strings.NewReader(`{"cmd":"true"}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.ContentLength <= 0 {
		t.Fatalf("request with Content-Length %d: this test is about a body of known length", req.ContentLength)
	}
	answered := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	// No worker: once the task is queued, the handler waits for it to end.
	for deadline := time.Now().Add(10 * time.Second); o.d.Stats().Queued == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the task was never queued")
		}
	}
	cancel()
	if err := <-answered; err == nil {
		t.Fatal("the client's request was answered, want it canceled")
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("POST /tasks?wait=1m went on waiting 10s after its client went away")
	}
}

func TestIdempotencyKeyHeader(t *testing.T) {
	srv, _ := newServer(t, nil)
	code, _, first := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"echo once"}`, "order-42")
	if code != 202 {
		t.Fatalf("first = %d", code)
	}
	code, hdr, again := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"echo once"}`, "order-42")
	if code != 200 || again["id"] != first["id"] || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay = %d %v, want 200 with the same task", code, again)
	}
	if code, _, _ := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"echo twice"}`, "order-42"); code != 409 {
		t.Fatalf("same key, other cmd = %d, want 409", code)
	}
	// Every field counts, a default given as good as left out.
	code, hdr, again = doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"echo once","priority":3,"timeout":"1h"}`, "order-42")
	if code != 200 || again["id"] != first["id"] || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay with the defaults given = %d %v, want 200 with the same task", code, again)
	}
	code, _, body := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"echo once","priority":1,"delay":"1m"}`, "order-42")
	if msg, _ := body["error"].(string); code != 409 || !strings.Contains(msg, `idempotency key "order-42"`) || !strings.Contains(msg, "fields that differ: priority, delay.") {
		t.Fatalf("same key, other priority and delay = %d %v, want 409 naming the key and both fields", code, body)
	}
	if code, _, _ := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"x"}`, "has space"); code != 400 {
		t.Fatalf("bad key = %d, want 400", code)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/tasks", strings.NewReader(`{"cmd":"x"}`))
	req.Header["Idempotency-Key"] = []string{""} // sent, empty
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("empty key = %d, want 400", resp.StatusCode)
	}
}

// A replay answers "that task" (README): the task as GET /tasks/{id} shows
// it. Once the task was final and off memory, the replay read it by its key
// without its history, and answered "history": [] for a task that ran.
func TestIdempotentReplayIsTheTaskAsGETShowsIt(t *testing.T) {
	srv, d := newServer(t, nil)
	s, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	code, _, first := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"exit 2"}`, "order-7")
	if code != 202 {
		t.Fatalf("first = %d %v", code, first)
	}
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	now := time.Now()
	if _, err := d.Report(context.Background(), task.Result{TaskID: a.ID, WorkerID: "w", InstanceID: "i", Attempt: 1, ExitCode: 2, StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	_, _, got := do(t, "GET", srv.URL+"/tasks/"+a.ID, "")
	if h, _ := got["history"].([]any); got["status"] != "failed" || len(h) != 1 {
		t.Fatalf("GET = %v, want the failed task with one attempt", got)
	}
	code, _, again := doHeader(t, "POST", srv.URL+"/tasks", `{"cmd":"exit 2"}`, "order-7")
	if code != 200 || !reflect.DeepEqual(again, got) {
		t.Fatalf("replay = %d\n%v\nwant 200 with the task as GET shows it:\n%v", code, again, got)
	}
}

func TestTaskOptions(t *testing.T) {
	srv, _ := newServer(t, nil)
	code, _, body := do(t, "POST", srv.URL+"/tasks", `{"cmd":"sleep 5","timeout":"90s","max_attempts":5}`)
	if code != 202 || body["timeout"] != "1m30s" || body["max_attempts"] != 5.0 {
		t.Fatalf("with options = %d %v", code, body)
	}
	code, _, body = do(t, "POST", srv.URL+"/tasks", `{"cmd":"true"}`)
	if code != 202 || body["timeout"] != "1h0m0s" || body["max_attempts"] != 3.0 {
		t.Fatalf("defaults = %d %v", code, body)
	}
	for _, bad := range []string{`{"cmd":"x","timeout":"soon"}`, `{"cmd":"x","timeout":"-5s"}`, `{"cmd":"x","timeout":"3h"}`,
		`{"cmd":"x","timeout":30}`, `{"cmd":"x","max_attempts":0}`, `{"cmd":"x","max_attempts":"3"}`} {
		if code, _, b := do(t, "POST", srv.URL+"/tasks", bad); code != 400 {
			t.Errorf("%s = %d %v, want 400", bad, code, b)
		}
	}
}

func TestListTasks(t *testing.T) {
	srv, d := newServer(t, nil)
	var ids []string
	for i := range 5 {
		_, _, b := do(t, "POST", srv.URL+"/tasks", fmt.Sprintf(`{"cmd":"echo %d"}`, i))
		ids = append(ids, b["id"].(string))
	}
	if _, err := d.Cancel(context.Background(), ids[1]); err != nil {
		t.Fatal(err)
	}
	// Newest first, two a page, every task exactly once.
	var seen []string
	url := srv.URL + "/tasks?limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		code, _, body := do(t, "GET", url, "")
		if code != 200 {
			t.Fatalf("GET %s = %d %v", url, code, body)
		}
		for _, x := range body["tasks"].([]any) {
			m := x.(map[string]any)
			if _, ok := m["stdout"]; ok {
				t.Errorf("list entries carry stdout: %v", m)
			}
			seen = append(seen, m["id"].(string))
		}
		next, ok := body["next_cursor"].(string)
		if !ok {
			break
		}
		url = srv.URL + "/tasks?limit=2&cursor=" + next
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want newest first %v", seen, want)
	}
	_, _, body := do(t, "GET", srv.URL+"/tasks?status=canceled", "")
	if got := body["tasks"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != ids[1] {
		t.Fatalf("status=canceled = %v", got)
	}
	_, _, body = do(t, "GET", srv.URL+"/tasks?cmd=ECHO%203", "")
	if got := body["tasks"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != ids[3] {
		t.Fatalf("cmd=ECHO 3 = %v, want the one task running echo 3", got)
	}
	// A NUL: no command holds one, and SQLite's LIKE would end the text
	// there (cmd=ECHO%00x listed echo 3).
	for _, bad := range []string{"status=done", "limit=0", "limit=x", "cursor=!!!", "cmd=" + strings.Repeat("x", 201), "cmd=ECHO%00x", "cmd=%00"} {
		if code, _, b := do(t, "GET", srv.URL+"/tasks?"+bad, ""); code != 400 {
			t.Errorf("%s = %d %v, want 400", bad, code, b)
		}
	}
	// A cursor the master did not give is named, not echoed back: it could
	// be of any length.
	long := strings.Repeat("A", 10000)
	code, _, b := do(t, "GET", srv.URL+"/tasks?cursor="+long, "")
	if msg := fmt.Sprint(b["error"]); code != 400 || len(msg) > 200 || !strings.Contains(msg, "cursor") {
		t.Errorf("cursor of 10,000 characters = %d %.300s, want 400 with a short error naming the cursor", code, msg)
	}
}

func TestFinishedTaskShowsHistory(t *testing.T) {
	srv, d := newServer(t, nil)
	s, _, _ := d.Register(context.Background(), dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	_, _, body := do(t, "POST", srv.URL+"/tasks", `{"cmd":"exit 2"}`)
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	now := time.Now()
	d.Report(context.Background(), task.Result{TaskID: a.ID, WorkerID: "w", InstanceID: "i", Attempt: 1, ExitCode: 2, StartedAt: now, FinishedAt: now})
	_, _, body = do(t, "GET", srv.URL+"/tasks/"+body["id"].(string), "")
	h, _ := body["history"].([]any)
	if body["status"] != "failed" || len(h) != 1 {
		t.Fatalf("task = %v", body)
	}
	if a := h[0].(map[string]any); a["attempt"] != 1.0 || a["worker_id"] != "w" || a["outcome"] != "failed" || a["exit_code"] != 2.0 || a["duplicate"] != false {
		t.Fatalf("attempt = %v", a)
	}
}

// The store lists tasks without their history, and entries showed it as
// "history": [], which says the task never went to a worker, for tasks that
// ran (and "attempts": 1 beside it). A list entry leaves the history out as
// it does stdout and stderr: null, as a field not known there.
func TestListEntriesLeaveOutTheHistory(t *testing.T) {
	srv, d := newServer(t, nil)
	s, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, _, body := do(t, "POST", srv.URL+"/tasks", `{"cmd":"exit 2"}`)
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	now := time.Now()
	if _, err := d.Report(context.Background(), task.Result{TaskID: a.ID, WorkerID: "w", InstanceID: "i", Attempt: 1, ExitCode: 2, StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, _, got := do(t, "GET", srv.URL+"/tasks/"+body["id"].(string), ""); len(got["history"].([]any)) != 1 {
		t.Fatalf("GET = %v, want the task with its one attempt", got)
	}
	_, _, list := do(t, "GET", srv.URL+"/tasks", "")
	entries, _ := list["tasks"].([]any)
	if len(entries) != 1 {
		t.Fatalf("GET /tasks = %v, want the task", list)
	}
	e := entries[0].(map[string]any)
	if h, ok := e["history"]; !ok || h != nil || e["attempts"] != 1.0 {
		t.Errorf("list entry of a task that ran once: attempts %v, history %#v (present %v); want null", e["attempts"], h, ok)
	}
}

// A list entry is the task as GET /tasks/{id} shows it, stdout, stderr and
// history left out: a task that waits says why there too. Entries came from
// the store alone, which does not keep waiting_for, so every one showed
// null, which the README reads as "does not wait".
func TestListShowsWhyTasksWait(t *testing.T) {
	srv, _ := newServer(t, nil)
	_, _, queued := do(t, "POST", srv.URL+"/tasks", `{"cmd":"echo now"}`)
	_, _, later := do(t, "POST", srv.URL+"/tasks", `{"cmd":"echo later","delay":"1h"}`)
	want := map[any]any{queued["id"]: "no worker is connected", later["id"]: later["waiting_for"]}
	if later["waiting_for"] == nil {
		t.Fatalf("the delayed task does not say what it waits for: %v", later)
	}
	_, _, body := do(t, "GET", srv.URL+"/tasks", "")
	entries, _ := body["tasks"].([]any)
	if len(entries) != 2 {
		t.Fatalf("GET /tasks = %v, want the 2 tasks", body)
	}
	for _, x := range entries {
		m := x.(map[string]any)
		if m["waiting_for"] != want[m["id"]] {
			t.Errorf("task %v (%v) listed with waiting_for %#v, want %#v", m["id"], m["status"], m["waiting_for"], want[m["id"]])
		}
	}
}
