package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// BenchmarkDecode is the strict decoding of a POST /tasks body.
func BenchmarkDecode(b *testing.B) {
	a := &api{log: slog.New(slog.NewTextHandler(io.Discard, nil)), maxBody: 64 << 10}
	const body = `{"cmd":"echo hello","timeout":"30s","max_attempts":3}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/tasks", strings.NewReader(body))
		var req createRequest
		if err := a.decode(httptest.NewRecorder(), r, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBody is decodeBody alone on the body nearly every
// submission sends (make bench's load generators send it).
func BenchmarkDecodeBody(b *testing.B) {
	body := []byte(`{"cmd":"true"}`)
	b.ReportAllocs()
	for b.Loop() {
		var req createRequest
		if err := decodeBody(body, &req); err != nil || req.Cmd == nil || *req.Cmd != "true" {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteTask is the answer to POST /tasks: a new task as JSON.
func BenchmarkWriteTask(b *testing.B) {
	t := task.Task{ID: "019a0000-0000-7000-8000-000000000000", Cmd: "echo hello", Status: task.StatusQueued,
		MaxAttempts: 3, Timeout: time.Hour, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		writeTask(w, http.StatusAccepted, toTaskJSON(t, true))
	}
}

// BenchmarkWriteTaskFinished is the answer to GET /tasks/{id} for a task
// that ran: output, labels, a retry policy and a history of two attempts.
func BenchmarkWriteTaskFinished(b *testing.B) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	one, zero := 1, 0
	t := task.Task{ID: "019a0000-0000-7000-8000-000000000000", Cmd: "make test && ./report --out=/tmp/r.txt", Status: task.StatusSucceeded,
		Attempts: 2, MaxAttempts: 3, Timeout: time.Hour, WorkerID: "worker-7", ExitCode: &zero,
		Stdout: strings.Repeat("ok  \tgithub.com/x/y\t0.012s\n", 40), Stderr: "warning: \"deprecated\"\n",
		Priority: 2, Requires: map[string]string{"gpu": "nvidia", "os": "linux"},
		RetryOn: []task.Outcome{task.OutcomeFailed, task.OutcomeTimedOut}, Backoff: time.Second, MaxBackoff: time.Minute,
		CreatedAt: created, AssignedAt: created.Add(3 * time.Second), StartedAt: created.Add(3100 * time.Millisecond), FinishedAt: created.Add(9 * time.Second),
		History: []task.Attempt{
			{N: 1, WorkerID: "worker-3", Outcome: task.OutcomeFailed, ExitCode: &one, AssignedAt: created, FinishedAt: created.Add(time.Second)},
			{N: 2, WorkerID: "worker-7", Outcome: task.OutcomeSucceeded, ExitCode: &zero, AssignedAt: created.Add(3 * time.Second), FinishedAt: created.Add(9 * time.Second)},
		}}
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		writeTask(w, http.StatusOK, toTaskJSON(t, true))
	}
}

type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header         { return w.h }
func (w discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w discardWriter) WriteHeader(int)             {}
