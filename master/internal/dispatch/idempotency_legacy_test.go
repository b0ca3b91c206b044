package dispatch

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	_ "modernc.org/sqlite" // the "sqlite" driver, to make rows as an older master left them
)

// A task an older master stored has no request kept (req_defaults NULL):
// a replay is compared as before migration 10, with today's defaults, and
// with the task's own run_at while nothing can have replaced it: not once
// a task with retry_on has run, whether or not it was retried, and still
// after a retry by hand of a task canceled before it ran, whose run_at is
// gone (nothing tells it apart from a task submitted without one).
func TestIdempotentReplayOfATaskStoredBeforeRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	past := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	ranSub := Submission{Cmd: "true", IdempotencyKey: "ran", Timeout: time.Hour, MaxAttempts: 3, RunAt: past, RetryOn: []task.Outcome{task.OutcomeFailed}}
	ran := submitOne(t, d, ranSub)
	drain(w)
	finish(t, d, w, ran, 0) // ran once, never retried
	d.Unregister(w)
	canceledSub := Submission{Cmd: "later", IdempotencyKey: "canceled", Timeout: time.Hour, MaxAttempts: 3, RunAt: clk.Now().Add(time.Hour)}
	canceled := submitOne(t, d, canceledSub)
	if _, err := d.Cancel(ctx, canceled); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Retry(ctx, canceled); err != nil {
		t.Fatal(err)
	}
	defaultsSub := Submission{Cmd: "queued", IdempotencyKey: "defaults"}
	defaults := submitOne(t, d, defaultsSub)
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE tasks SET req_defaults = NULL, req_run_at = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	d2, _ := newOnDB(t, path, clk, 100)
	get := func(id string) task.Task {
		tk, err := d2.Get(ctx, id)
		if err != nil || tk.Request != nil {
			t.Fatalf("task %s: request %+v, %v; want none, as an older master stored it", id, tk.Request, err)
		}
		return tk
	}
	// Ran with retry_on, not retried: its run_at is not compared.
	first := get(ran)
	other := ranSub
	other.RunAt = past.Add(time.Second)
	checkAgain(t, d2, first, other, "")
	// Canceled before it ran, then retried by hand: its own run_at is refused.
	first = get(canceled)
	checkAgain(t, d2, first, canceledSub, "run_at")
	// A field left out is today's default.
	first = get(defaults)
	checkAgain(t, d2, first, defaultsSub, "")
	d2.p.DefaultTimeout = 2 * time.Hour
	checkAgain(t, d2, first, defaultsSub, "timeout")
}
