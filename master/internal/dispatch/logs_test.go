package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
)

// syncBuffer is a bytes.Buffer that the store's writer goroutine and the
// test may use at once.
type syncBuffer struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Every log line about a task names it with task_id, and every line about a
// worker with worker_id, so `jq 'select(.task_id == "...")'` follows a task.
func TestLogLinesCarryTaskAndWorkerIDs(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(filepath.Join(t.TempDir(), "rh.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	n := 0
	d := New(Params{Log: log, Store: st, Now: clock.Now, Mono: clock.Mono, NewID: func() string { n++; return fmt.Sprintf("t%04d", n) },
		MaxCmdBytes: 1024, DefaultTimeout: time.Hour, MaxTimeout: 24 * time.Hour, MaxAttempts: 3, WorkerTimeout: workerTimeout})

	// A task's life: queued, assigned to w1, lost when w1 times out,
	// re-queued, assigned to w2, finished there. A second one is canceled.
	w1 := register(t, d, "w1", 1)
	ids := submit(t, d, 1)
	drain(w1)
	clock.Advance(workerTimeout)
	d.Sweep()
	w2 := register(t, d, "w2", 1)
	drain(w2)
	finish(t, d, w2, ids[0], 0)
	other := submit(t, d, 1)[0]
	if _, err := d.Cancel(ctx, other); err != nil {
		t.Fatal(err)
	}

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
		lines = append(lines, m)
	}
	var life []string // what the log says about ids[0], in order
	for _, m := range lines {
		msg, _ := m["msg"].(string)
		if strings.HasPrefix(msg, "task ") && m["task_id"] == nil {
			t.Errorf("a line about a task without task_id: %v", m)
		}
		if strings.HasPrefix(msg, "worker ") && m["worker_id"] == nil {
			t.Errorf("a line about a worker without worker_id: %v", m)
		}
		if m["task_id"] == ids[0] {
			w, _ := m["worker_id"].(string)
			life = append(life, strings.TrimSpace(msg+" "+w))
		}
	}
	want := []string{"task queued", "task assigned w1", "task re-queued w1", "task assigned w2", "task finished w2"}
	if strings.Join(life, "; ") != strings.Join(want, "; ") {
		t.Errorf("the log of %s:\n  %s\nwant:\n  %s", ids[0], strings.Join(life, "; "), strings.Join(want, "; "))
	}
}
