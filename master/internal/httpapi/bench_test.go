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

// BenchmarkWriteTask is the answer to POST /tasks: a new task as JSON.
func BenchmarkWriteTask(b *testing.B) {
	t := task.Task{ID: "019a0000-0000-7000-8000-000000000000", Cmd: "echo hello", Status: task.StatusQueued,
		MaxAttempts: 3, Timeout: time.Hour, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		writeJSON(w, http.StatusAccepted, toTaskJSON(t, true))
	}
}

type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header         { return w.h }
func (w discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w discardWriter) WriteHeader(int)             {}
