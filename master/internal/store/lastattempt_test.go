package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// attemptRows returns the Ns of the task's rows in the attempts table,
// in order.
func attemptRows(t *testing.T, s *Store, id string) []string {
	t.Helper()
	return storedIDs(t, s, `SELECT n FROM attempts WHERE task_id = '`+id+`' ORDER BY n`)
}

// wantHistory checks the task's History as Get reads it.
func wantHistory(t *testing.T, s *Store, id string, want ...task.Attempt) {
	t.Helper()
	got := mustGet(t, s, id).History
	w := utc(task.Task{History: want}).History
	if !reflect.DeepEqual(got, w) {
		t.Errorf("History of %s:\n got %+v\nwant %+v", id, got, w)
	}
}

// A task run once, as nearly all are, writes no row in attempts: its one
// attempt lives in the task's row. A second delivery moves the first
// attempt there; each kind of attempt write finds the attempt where it
// lives, and Get reads the history back whole, in order.
func TestNewestAttemptLivesInTheTaskRow(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	apply(t, s, Write{Task: tk, Kind: Insert})

	run := *tk
	run.Status, run.Attempts, run.WorkerID, run.AssignedAt, run.StartedAt = task.StatusRunning, 1, "w1", at(1), at(1)
	a1 := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	apply(t, s, Write{Task: &run, Kind: Update, Attempt: &a1, AttemptKind: Insert})
	if got := attemptRows(t, s, "t1"); got != nil {
		t.Errorf("rows in attempts after the first delivery: %v, want none", got)
	}
	wantHistory(t, s, "t1", a1)

	// The worker vanished: its run ends lost (IfRunning, the row's).
	// Another worker's claim to attempt 1 changes nothing.
	other := a1
	other.WorkerID, other.Outcome, other.FinishedAt = "w9", task.OutcomeLost, at(2)
	apply(t, s, Write{Attempt: &other, AttemptKind: IfRunning})
	wantHistory(t, s, "t1", a1)
	lost := a1
	lost.Outcome, lost.Error, lost.FinishedAt = task.OutcomeLost, "worker gone", at(2)
	apply(t, s, Write{Attempt: &lost, AttemptKind: IfRunning})
	wantHistory(t, s, "t1", lost)

	// Delivered again: attempt 1 moves to attempts, 2 takes the row.
	run.Attempts, run.WorkerID, run.AssignedAt = 2, "w2", at(3)
	a2 := task.Attempt{TaskID: "t1", N: 2, WorkerID: "w2", Outcome: task.OutcomeRunning, AssignedAt: at(3)}
	apply(t, s, Write{Task: &run, Kind: Update, Attempt: &a2, AttemptKind: Insert})
	if got := attemptRows(t, s, "t1"); !reflect.DeepEqual(got, []string{"1"}) {
		t.Errorf("rows in attempts after the second delivery: %v, want [1]", got)
	}
	wantHistory(t, s, "t1", lost, a2)

	// Attempt 2's result (Update, the row's), then attempt 1's late one,
	// a duplicate (Update, the table's).
	done := run
	done.Status, done.ExitCode, done.FinishedAt = task.StatusSucceeded, intp(0), at(4)
	a2done := a2
	a2done.Outcome, a2done.ExitCode, a2done.FinishedAt = task.OutcomeSucceeded, intp(0), at(4)
	apply(t, s, Write{Task: &done, Kind: Update, Attempt: &a2done, AttemptKind: Update})
	late := lost
	late.Outcome, late.ExitCode, late.Error, late.FinishedAt, late.Duplicate = task.OutcomeFailed, intp(1), "", at(5), true
	apply(t, s, Write{Attempt: &late, AttemptKind: Update})
	wantHistory(t, s, "t1", late, a2done)

	// IfAbsent puts back neither: each is stored, one in each place.
	stale1, stale2 := a1, a2
	apply(t, s, Write{Attempt: &stale1, AttemptKind: IfAbsent}, Write{Attempt: &stale2, AttemptKind: IfAbsent})
	wantHistory(t, s, "t1", late, a2done)
	if got := attemptRows(t, s, "t1"); !reflect.DeepEqual(got, []string{"1"}) {
		t.Errorf("rows in attempts after IfAbsent of stored attempts: %v, want [1]", got)
	}
	// An older attempt written whole goes to the table, not the row.
	again := late
	again.Error = "rewritten"
	apply(t, s, Write{Attempt: &again, AttemptKind: Upsert})
	wantHistory(t, s, "t1", again, a2done)
}

// A database from before migration 8 keeps its attempts in the attempts
// table. They read back as before, writes to them land there, and a
// new delivery takes the row; a copy the table still holds of an attempt
// the row took since is not read twice.
func TestMigratedAttemptsStayInTheTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	old := openAt(t, path, 7)
	for _, q := range []string{
		`INSERT INTO tasks (id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, created_at, assigned_at, started_at, finished_at)
VALUES ('t1', 'echo', 'running', 2, 3, 60000000000, 'w2', 1, 3, 3, 0)`,
		`INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
VALUES ('t1', 1, 'w1', 'lost', NULL, 'gone', 1, 2, 0), ('t1', 2, 'w2', 'running', NULL, '', 3, 0, 0)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a1 := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeLost, Error: "gone",
		AssignedAt: fromNanos(1), FinishedAt: fromNanos(2)}
	a2 := task.Attempt{TaskID: "t1", N: 2, WorkerID: "w2", Outcome: task.OutcomeRunning, AssignedAt: fromNanos(3)}
	wantHistory(t, s, "t1", a1, a2)

	// Attempt 2's end, written IfRunning, lands in the table.
	a2lost := a2
	a2lost.Outcome, a2lost.FinishedAt = task.OutcomeLost, fromNanos(4)
	apply(t, s, Write{Attempt: &a2lost, AttemptKind: IfRunning})
	wantHistory(t, s, "t1", a1, a2lost)

	// Attempt 2 stored whole again (a delivery written twice) takes the
	// row; the table's copy is not read beside it.
	apply(t, s, Write{Attempt: &a2, AttemptKind: Insert})
	wantHistory(t, s, "t1", a1, a2)

	// Attempt 3 moves the row's attempt 2 over the table's copy.
	a3 := task.Attempt{TaskID: "t1", N: 3, WorkerID: "w3", Outcome: task.OutcomeRunning, AssignedAt: fromNanos(5)}
	apply(t, s, Write{Attempt: &a3, AttemptKind: Insert})
	wantHistory(t, s, "t1", a1, a2, a3)
	if got := attemptRows(t, s, "t1"); !reflect.DeepEqual(got, []string{"1", "2"}) {
		t.Errorf("rows in attempts: %v, want [1 2]", got)
	}
	var outcome string
	if err := s.db.QueryRow(`SELECT outcome FROM attempts WHERE task_id = 't1' AND n = 2`).Scan(&outcome); err != nil || outcome != "running" {
		t.Errorf("attempt 2 in the table: %q, %v; want the row's, running", outcome, err)
	}
}

// The one-statement writes of a delivery and of a result (writeBoth) fall
// back to the general ones when the row is not as they need it: gone
// (retention deleted it after the caller read the task), or changed in a
// column the result's statement does not set. Either way the task and its
// attempt read back as written.
func TestDeliveryAndResultFallBack(t *testing.T) {
	s, _ := open(t)
	run := newTask("gone", at(0), task.StatusRunning)
	run.Attempts, run.WorkerID, run.AssignedAt, run.StartedAt = 1, "w1", at(1), at(1)
	a1 := task.Attempt{TaskID: "gone", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	apply(t, s, Write{Task: run, Kind: Update, Attempt: &a1, AttemptKind: Insert})
	want := *run
	want.History = []task.Attempt{a1}
	if got := mustGet(t, s, "gone"); !reflect.DeepEqual(got, utc(want)) {
		t.Errorf("a delivery of a row that was gone:\n got %+v\nwant %+v", got, utc(want))
	}

	done := *run
	done.Status, done.ExitCode, done.FinishedAt = task.StatusSucceeded, intp(0), at(3)
	done.RunAt, done.AttemptBase = at(2), 1 // not as stored: the result's statement matches nothing
	a1done := a1
	a1done.Outcome, a1done.ExitCode, a1done.FinishedAt = task.OutcomeSucceeded, intp(0), at(3)
	apply(t, s, Write{Task: &done, Kind: Update, Attempt: &a1done, AttemptKind: Update})
	want = done
	want.History = []task.Attempt{a1done}
	if got := mustGet(t, s, "gone"); !reflect.DeepEqual(got, utc(want)) {
		t.Errorf("a result the row did not match:\n got %+v\nwant %+v", got, utc(want))
	}
	if got := attemptRows(t, s, "gone"); got != nil {
		t.Errorf("rows in attempts: %v, want none", got)
	}
}

// Attempts are numbered from 1 (a row's last_n 0 is "none"): an attempt
// numbered 0 is a caller's bug, and its whole Apply is refused.
func TestAttemptZeroIsRefused(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t0", at(0), task.StatusQueued)
	a0 := task.Attempt{TaskID: "t0", N: 0, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	if err := <-s.Apply(Write{Task: tk, Kind: Insert}, Write{Attempt: &a0}); !errors.Is(err, task.ErrInvalid) {
		t.Fatalf("Apply of attempt 0 = %v, want an error wrapping ErrInvalid", err)
	}
	if _, err := s.Get(context.Background(), "t0"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Get after the refused Apply: %v, want not found (nothing written)", err)
	}
}

// Unended lists the final tasks whose newest run is still running in their
// history, from the index that holds those alone, and drops one once its
// end is written.
func TestUnendedRuns(t *testing.T) {
	s, _ := open(t)
	write := func(id string, st task.Status, outcome task.Outcome) *task.Attempt {
		tk := newTask(id, at(0), st)
		tk.Attempts, tk.WorkerID = 1, "w-"+id
		a := &task.Attempt{TaskID: id, N: 1, WorkerID: "w-" + id, Outcome: outcome, AssignedAt: at(1)}
		apply(t, s, Write{Task: tk}, Write{Attempt: a})
		return a
	}
	write("running", task.StatusRunning, task.OutcomeRunning)
	canceled := write("canceled", task.StatusCanceled, task.OutcomeRunning)
	write("decided", task.StatusSucceeded, task.OutcomeRunning) // another run decided it
	write("ended", task.StatusCanceled, task.OutcomeCanceled)
	write("queued", task.StatusQueued, task.OutcomeLost)
	got, err := s.Unended(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Run{{TaskID: "canceled", N: 1, WorkerID: "w-canceled"}, {TaskID: "decided", N: 1, WorkerID: "w-decided"}}
	slices.SortFunc(got, func(a, b Run) int { return strings.Compare(a.TaskID, b.TaskID) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Unended = %+v, want %+v", got, want)
	}
	if p := queryPlan(t, s, unendedQuery); !strings.Contains(p, "tasks_unended") {
		t.Errorf("Unended's plan %q; want tasks_unended", p)
	}

	canceled.Outcome, canceled.FinishedAt = task.OutcomeLost, at(5)
	apply(t, s, Write{Attempt: canceled, AttemptKind: IfRunning})
	if got, err := s.Unended(context.Background()); err != nil || len(got) != 1 || got[0].TaskID != "decided" {
		t.Errorf("Unended after canceled's end = %+v, %v; want decided alone", got, err)
	}
}
