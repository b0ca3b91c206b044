package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func newServer(t *testing.T, ready func() error) (*httptest.Server, *dispatch.Dispatcher) {
	t.Helper()
	return newServerWith(t, func(p *Params) {
		if ready != nil {
			p.Ready = ready
		}
	})
}

// newServerWith serves the API on a fresh dispatcher and store; set
// changes the Params first.
func newServerWith(t *testing.T, set func(*Params)) (*httptest.Server, *dispatch.Dispatcher) {
	t.Helper()
	return newServerOn(t, func(*dispatch.Params) {}, set)
}

// newServerOn is newServerWith where setD changes the dispatcher's Params
// first.
func newServerOn(t *testing.T, setD func(*dispatch.Params), set func(*Params)) (*httptest.Server, *dispatch.Dispatcher) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(t.TempDir(), "rh.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dp := dispatch.Params{
		Log: log, Store: st, Now: time.Now, NewID: func() string { return uuid.Must(uuid.NewV7()).String() },
		MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second,
	}
	setD(&dp)
	d := dispatch.New(dp)
	p := Params{Dispatcher: d, Log: log, MaxBodyBytes: 256, MaxWait: 5 * time.Second, Ready: func() error { return nil }}
	set(&p)
	srv := httptest.NewServer(New(p))
	t.Cleanup(srv.Close)
	return srv, d
}

func do(t *testing.T, method, url, body string) (int, http.Header, map[string]any) {
	t.Helper()
	return doHeader(t, method, url, body, "")
}

// doHeader is do with an Idempotency-Key header, unless key is empty.
func doHeader(t *testing.T, method, url, body, key string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	decodeJSON(t, resp, &m)
	return resp.StatusCode, resp.Header, m
}

func decodeJSON(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", resp.Request.Method, resp.Request.URL, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v", resp.Request.Method, resp.Request.URL, err)
	}
}

// queued counts the tasks waiting in d by giving them all to a worker.
func queued(t *testing.T, d *dispatch.Dispatcher) int {
	t.Helper()
	s, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "counter", InstanceID: "c", Slots: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unregister(s)
	return len(s.Take())
}

func TestCreateAndGetTask(t *testing.T) {
	srv, d := newServer(t, nil)
	code, hdr, body := do(t, "POST", srv.URL+"/tasks", `{"cmd":"echo hello world"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /tasks = %d %v, want 202", code, body)
	}
	id, _ := body["id"].(string)
	if id == "" || body["cmd"] != "echo hello world" || body["status"] != "queued" {
		t.Fatalf("created task = %v", body)
	}
	if hdr.Get("Location") != "/tasks/"+id {
		t.Errorf("Location = %q", hdr.Get("Location"))
	}
	for _, k := range []string{"worker_id", "exit_code", "started_at", "finished_at"} {
		if v, ok := body[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}

	// A worker runs it; GET shows the result.
	s, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	code, _, body = do(t, "GET", srv.URL+"/tasks/"+id, "")
	if code != 200 || body["status"] != "running" || body["worker_id"] != "w1" {
		t.Fatalf("GET running task = %d %v", code, body)
	}
	now := time.Now()
	if _, err := d.Report(context.Background(), task.Result{TaskID: id, WorkerID: "w1", InstanceID: "i", Attempt: 1, Stdout: []byte("hello world\n"), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	code, _, body = do(t, "GET", srv.URL+"/tasks/"+id, "")
	if code != 200 || body["status"] != "succeeded" || body["stdout"] != "hello world\n" || body["exit_code"] != 0.0 || body["finished_at"] == nil {
		t.Fatalf("GET finished task = %d %v", code, body)
	}

	code, _, body = do(t, "GET", srv.URL+"/workers", "")
	ws, _ := body["workers"].([]any)
	if code != 200 || body["workerCount"] != 1.0 || len(ws) != 1 {
		t.Fatalf("GET /workers = %d %v", code, body)
	}
	w := ws[0].(map[string]any)
	if w["id"] != "w1" || w["completed"] != 1.0 || w["running"] != 0.0 || w["slots"] != 1.0 || w["connected_at"] == nil {
		t.Errorf("worker = %v", w)
	}
	d.Unregister(s)
}

func TestBadRequestsChangeNothing(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		wantCode int
		wantErr  string // a part of the error message
	}{
		{"empty body", "POST", "/tasks", "", 400, "body is empty"},
		{"malformed JSON", "POST", "/tasks", `{"cmd":`, 400, "not valid JSON"},
		{"not an object", "POST", "/tasks", `["echo"]`, 400, "must be a JSON object"},
		{"missing cmd", "POST", "/tasks", `{}`, 400, `"cmd" is required`},
		{"null cmd", "POST", "/tasks", `{"cmd":null}`, 400, `"cmd" is required`},
		{"empty cmd", "POST", "/tasks", `{"cmd":""}`, 400, "must not be blank"},
		{"blank cmd", "POST", "/tasks", `{"cmd":"  \t"}`, 400, "must not be blank"},
		{"cmd wrong type", "POST", "/tasks", `{"cmd":42}`, 400, `"cmd" must be a string`},
		{"unknown field", "POST", "/tasks", `{"cmd":"ls","prio":1}`, 400, `unknown field "prio"`},
		{"trailing data", "POST", "/tasks", `{"cmd":"ls"}{"cmd":"rm"}`, 400, "after the JSON object"},
		{"NUL in cmd", "POST", "/tasks", `{"cmd":"echo \u0000"}`, 400, "NUL"},
		{"cmd too long", "POST", "/tasks", `{"cmd":"` + strings.Repeat("x", 101) + `"}`, 400, "limit is 100"},
		{"body too large", "POST", "/tasks", `{"cmd":"` + strings.Repeat("x", 300) + `"}`, 413, "larger than 256 bytes"},
		{"unknown task", "GET", "/tasks/nope", "", 404, "not found"},
		{"unknown route", "GET", "/nope", "", 404, "no such endpoint"},
		{"wrong method", "PUT", "/tasks", "", 405, "not allowed"},
	}
	srv, d := newServer(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := do(t, tt.method, srv.URL+tt.path, tt.body)
			msg, _ := body["error"].(string)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("%s %s %q = %d %q, want %d with %q", tt.method, tt.path, tt.body, code, msg, tt.wantCode, tt.wantErr)
			}
		})
	}
	if n := queued(t, d); n != 0 {
		t.Fatalf("%d tasks queued by bad requests, want 0", n)
	}
	// And the server still serves.
	if code, _, _ := do(t, "POST", srv.URL+"/tasks", `{"cmd":"true"}`); code != 202 {
		t.Fatalf("valid request after bad ones = %d", code)
	}
}

func TestShuttingDownRefusesTasks(t *testing.T) {
	srv, d := newServer(t, nil)
	d.Close()
	code, _, body := do(t, "POST", srv.URL+"/tasks", `{"cmd":"true"}`)
	if code != http.StatusServiceUnavailable || body["error"] == nil {
		t.Fatalf("POST while closed = %d %v, want 503", code, body)
	}
}

func TestHealth(t *testing.T) {
	notReady := errors.New("grpc not serving")
	var readyErr error = notReady
	srv, _ := newServer(t, func() error { return readyErr })
	if code, _, _ := do(t, "GET", srv.URL+"/healthz", ""); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, _, body := do(t, "GET", srv.URL+"/readyz", ""); code != 503 || body["error"] != notReady.Error() {
		t.Errorf("readyz while not ready = %d %v", code, body)
	}
	readyErr = nil
	if code, _, _ := do(t, "GET", srv.URL+"/readyz", ""); code != 200 {
		t.Errorf("readyz when ready = %d", code)
	}
}
