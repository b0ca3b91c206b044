package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every answer of the API, a refusal as much as a success, carries
// X-Content-Type-Options: nosniff. The answers echo what clients sent (a
// task's command, its output, a Host header), and a browser that sniffed
// one could take it for HTML or a script.
func TestAnswersAreNotSniffed(t *testing.T) {
	w := newWithLive(t, 4096)
	_, running := w.start(t, "w1", "sleep 60") // w1's one slot is taken from now on
	code, _, queued := do(t, http.MethodPost, w.srv.URL+"/tasks", `{"cmd":"sleep 1"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /tasks = %d %v", code, queued)
	}
	guarded, _ := newServerWith(t, func(p *Params) { p.APIToken = testToken })

	tests := []struct {
		name, method, path, body string
		header, value            string // one request header, if any
		srv                      string // the server asked; the open one if empty
		want                     int
		stream                   bool // Server-Sent Events, not JSON
	}{
		{name: "submit", method: "POST", path: "/tasks", body: `{"cmd":"echo hi"}`, want: 202},
		{name: "a task", method: "GET", path: "/tasks/" + running.ID, want: 200},
		{name: "the tasks", method: "GET", path: "/tasks", want: 200},
		{name: "the workers", method: "GET", path: "/workers", want: 200},
		{name: "the queue", method: "GET", path: "/queue", want: 200},
		{name: "healthz", method: "GET", path: "/healthz", want: 200},
		{name: "readyz", method: "GET", path: "/readyz", want: 200},
		{name: "a task's output", method: "GET", path: "/tasks/" + running.ID + "/output", want: 200},
		{name: "a task's output followed", method: "GET", path: "/tasks/" + running.ID + "/output?follow=true", want: 200, stream: true},
		{name: "the events", method: "GET", path: "/events", want: 200, stream: true},
		{name: "cancel", method: "DELETE", path: "/tasks/" + queued["id"].(string), want: 200},
		{name: "retry of a live task", method: "POST", path: "/tasks/" + running.ID + "/retry", want: 409},
		{name: "unknown task", method: "GET", path: "/tasks/no-such-task", want: 404},
		{name: "bad task ID", method: "GET", path: "/tasks/a.b", want: 400},
		{name: "bad JSON", method: "POST", path: "/tasks", body: `{`, want: 400},
		{name: "bad query", method: "GET", path: "/tasks?wait=forever", want: 400},
		{name: "body too large", method: "POST", path: "/tasks", body: `{"cmd":"` + strings.Repeat("x", 300) + `"}`, want: 413},
		{name: "unknown endpoint", method: "GET", path: "/nope", want: 404},
		{name: "wrong method", method: "PUT", path: "/tasks", want: 405},
		{name: "missing asset", method: "GET", path: "/ui/nothing.js", want: 404},
		{name: "cross-site", method: "POST", path: "/tasks", body: `{"cmd":"echo hi"}`, header: "Sec-Fetch-Site", value: "cross-site", want: 403},
		{name: "foreign Host without a token", method: "GET", path: "/tasks", header: "Host", value: "evil.example", want: 403},
		{name: "missing token", method: "GET", path: "/tasks", srv: guarded.URL, want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.srv
			if srv == "" {
				srv = w.srv.URL
			}
			req, err := http.NewRequest(tt.method, srv+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.header == "Host" {
				req.Host = tt.value
			} else if tt.header != "" {
				req.Header.Set(tt.header, tt.value)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close() // a stream: only its headers are read
			wantType := "application/json"
			if tt.stream {
				wantType = "text/event-stream"
			}
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != wantType {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				t.Fatalf("%s %s = %d %q, want %d %s: %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), tt.want, wantType, b)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s %s (%d): X-Content-Type-Options %q, want nosniff", tt.method, tt.path, resp.StatusCode, got)
			}
		})
	}

	// /metrics too, whose handler (Prometheus's) sets no such header.
	withMetrics, _ := newServerWith(t, func(p *Params) {
		p.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			io.WriteString(w, "# metrics\n")
		})
	})
	resp, err := http.Get(withMetrics.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET /metrics: %d, X-Content-Type-Options %q, want 200 with nosniff", resp.StatusCode, resp.Header.Get("X-Content-Type-Options"))
	}

	// A panic's 500 too.
	rec := httptest.NewRecorder()
	recoverer(slog.New(slog.DiscardHandler), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })).
		ServeHTTP(rec, httptest.NewRequest("GET", "/tasks", nil))
	if rec.Code != 500 || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("a panic: %d, X-Content-Type-Options %q, want 500 with nosniff", rec.Code, rec.Header().Get("X-Content-Type-Options"))
	}
}
