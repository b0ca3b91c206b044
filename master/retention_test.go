package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func TestRetentionInterval(t *testing.T) {
	tests := []struct {
		name      string
		retention time.Duration
		want      time.Duration
	}{
		{"the minimum retention", time.Minute, time.Minute},
		{"a tenth", time.Hour, 6 * time.Minute},
		{"the default", 168 * time.Hour, 10 * time.Minute},
		{"the maximum", 87600 * time.Hour, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retentionInterval(tt.retention); got != tt.want {
				t.Errorf("retentionInterval(%s) = %s, want %s", tt.retention, got, tt.want)
			}
		})
	}
}

// retainOnce deletes in batches until a batch comes up short, and keeps
// what finished within the retention and what has not finished.
func TestRetainOnce(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "rh.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	const old = 2*retentionBatch + 1 // three batches, the last short
	now := time.Now()
	var ws []store.Write
	for i := range old {
		ws = append(ws, store.Write{Task: &task.Task{ID: fmt.Sprintf("old-%04d", i), Cmd: "true", Status: task.StatusSucceeded,
			MaxAttempts: 1, CreatedAt: now.Add(-3 * time.Hour), FinishedAt: now.Add(-2 * time.Hour)}})
	}
	ws = append(ws,
		store.Write{Task: &task.Task{ID: "recent", Cmd: "true", Status: task.StatusFailed, MaxAttempts: 1, CreatedAt: now, FinishedAt: now}},
		store.Write{Task: &task.Task{ID: "queued", Cmd: "true", Status: task.StatusQueued, MaxAttempts: 1, CreatedAt: now.Add(-3 * time.Hour)}},
	)
	if err := <-st.Apply(ws...); err != nil {
		t.Fatal(err)
	}

	if got := retainOnce(context.Background(), st, time.Hour, slog.New(slog.DiscardHandler)); got != old {
		t.Errorf("retainOnce deleted %d, want %d", got, old)
	}
	p, err := st.List(context.Background(), store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, tk := range p.Tasks {
		left = append(left, tk.ID)
	}
	if fmt.Sprint(left) != "[recent queued]" {
		t.Errorf("tasks left %v, want [recent queued]", left)
	}
}
