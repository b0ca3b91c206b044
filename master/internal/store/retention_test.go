package store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func TestDeleteFinished(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	// finished makes a task in status st that finished at second sec, with
	// two attempts, so that deleting it must delete an attempt row too
	// (the first: the second, the newest, is in the task's row).
	finished := func(id string, st task.Status, sec int) []Write {
		tk := newTask(id, at(0), st)
		tk.Attempts = 2
		if sec > 0 {
			tk.FinishedAt = at(sec)
		}
		a1 := &task.Attempt{TaskID: id, N: 1, WorkerID: "w", Outcome: task.OutcomeLost, AssignedAt: at(0)}
		a2 := &task.Attempt{TaskID: id, N: 2, WorkerID: "w", Outcome: task.OutcomeRunning, AssignedAt: at(0)}
		return []Write{{Task: tk}, {Attempt: a1}, {Attempt: a2}}
	}
	for _, ws := range [][]Write{
		// A scheduled task is live, and its finished_at is 0: before any
		// cutoff, yet it must stay.
		finished("scheduled", task.StatusScheduled, 0),
		finished("queued", task.StatusQueued, 0),
		finished("running", task.StatusRunning, 0),
		finished("succeeded", task.StatusSucceeded, 1), // oldest
		finished("failed", task.StatusFailed, 2),
		finished("timed_out", task.StatusTimedOut, 3),
		finished("canceled", task.StatusCanceled, 4),
		finished("at-cutoff", task.StatusSucceeded, 10), // not before the cutoff
		finished("newer", task.StatusFailed, 20),
	} {
		apply(t, s, ws...)
	}
	cutoff := at(10)

	// Rounds as retention runs them: oldest first, at most limit each.
	tests := []struct {
		name   string
		limit  int
		want   int
		remain []string
	}{
		{"limited", 2, 2, []string{"scheduled", "queued", "running", "timed_out", "canceled", "at-cutoff", "newer"}},
		{"the rest", 10, 2, []string{"scheduled", "queued", "running", "at-cutoff", "newer"}},
		{"nothing left", 10, 0, []string{"scheduled", "queued", "running", "at-cutoff", "newer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := s.DeleteFinished(ctx, cutoff, tt.limit)
			if err != nil || n != tt.want {
				t.Fatalf("DeleteFinished(limit %d) = %d, %v; want %d, nil", tt.limit, n, err, tt.want)
			}
			if got := storedIDs(t, s, "SELECT id FROM tasks"); !sameSet(got, tt.remain) {
				t.Errorf("tasks left %v, want %v", got, tt.remain)
			}
			if got := storedIDs(t, s, "SELECT DISTINCT task_id FROM attempts"); !sameSet(got, tt.remain) {
				t.Errorf("attempts left of %v, want of %v", got, tt.remain)
			}
		})
	}

	if _, err := s.DeleteFinished(ctx, cutoff, 0); err == nil {
		t.Error("DeleteFinished with limit 0: want an error")
	}
}

// The retention query reads the index migration 3 made again, not the
// table.
func TestDeleteFinishedUsesIndex(t *testing.T) {
	s, _ := open(t)
	if p := queryPlan(t, s, finishedQuery, time.Now().UnixNano(), 1000); !strings.Contains(p, "tasks_finished") || strings.Contains(p, "TEMP B-TREE") {
		t.Errorf("plan %q; want a search of tasks_finished with no sort", p)
	}
}

// queryPlan returns SQLite's EXPLAIN QUERY PLAN of query, its steps joined
// with "; ".
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.db.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

func storedIDs(t *testing.T, s *Store, query string) []string {
	t.Helper()
	rows, err := s.db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
