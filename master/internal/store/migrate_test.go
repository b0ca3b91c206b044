package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// openAt makes a database at path holding the schema of version, as a
// binary that shipped with only those migrations left it, and returns a
// connection to it; the test closes it.
func openAt(t *testing.T, path string, version int) *sql.DB {
	t.Helper()
	d, err := dsn(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", d)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)`); err != nil {
		db.Close()
		t.Fatal(err)
	}
	for v := 1; v <= version; v++ {
		if err := migrateOne(ctx, conn, v); err != nil {
			db.Close()
			t.Fatal(err)
		}
	}
	return db
}

// A database from before scheduling migrates: its rows read as priority 3
// with no requirements, no run time and no retry policy; its live tasks
// are still live, and retention still spares them.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	old := openAt(t, path, 2)
	// The rows as version 2's upsert wrote them: its columns only.
	for _, r := range []struct {
		id, status string
		finished   int64
	}{
		{"queued", "queued", 0},
		{"running", "running", 0},
		{"done", "succeeded", at(5).UnixNano()},
	} {
		if _, err := old.Exec(`
INSERT INTO tasks (id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, exit_code,
	stdout, stderr, stdout_cut, stderr_cut, error, idempotency_key,
	created_at, assigned_at, started_at, finished_at)
VALUES (?, 'echo', ?, 0, 3, 60000000000, '', NULL, '', '', 0, 0, '', NULL, ?, 0, 0, ?)`,
			r.id, r.status, at(1).UnixNano(), r.finished); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(path, discard())
	if err != nil {
		t.Fatalf("Open of a version 2 database: %v", err)
	}
	defer s.Close()

	var version int
	if err := s.db.QueryRow(`SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != len(migrations) {
		t.Errorf("schema version %d after Open, want %d", version, len(migrations))
	}
	for _, id := range []string{"queued", "running", "done"} {
		got := mustGet(t, s, id)
		if got.Priority != task.DefaultPriority || got.Requires != nil || !got.RunAt.IsZero() ||
			got.RetryOn != nil || got.Backoff != 0 || got.MaxBackoff != 0 || got.AttemptBase != 0 {
			t.Errorf("%s after migration: priority %d, requires %v, run at %v, retry on %v, backoff %v..%v, attempt base %d; "+
				"want priority %d and nothing else", id, got.Priority, got.Requires, got.RunAt, got.RetryOn,
				got.Backoff, got.MaxBackoff, got.AttemptBase, task.DefaultPriority)
		}
	}
	live, err := s.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(live); !sameSet(got, []string{"queued", "running"}) {
		t.Errorf("Live after migration = %v, want [queued running]", got)
	}

	// The indexes were made again over the new live statuses: both
	// queries still read them, and a scheduled task is live to both.
	if p := queryPlan(t, s, liveQuery); !strings.Contains(p, "tasks_status") {
		t.Errorf("Live's plan %q after migration; want tasks_status", p)
	}
	// tasks_live went with migration 7.
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'tasks_live'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("tasks_live after migration: %d, %v; want gone", n, err)
	}
	if p := queryPlan(t, s, finishedQuery, time.Now().UnixNano(), 10); !strings.Contains(p, "tasks_finished") {
		t.Errorf("retention's plan %q after migration; want tasks_finished", p)
	}
	sched := newTask("scheduled", at(2), task.StatusScheduled)
	sched.Priority, sched.RunAt = 4, at(100)
	apply(t, s, Write{Task: sched})
	if n, err := s.DeleteFinished(ctx, at(50), 10); err != nil || n != 1 {
		t.Errorf("DeleteFinished = %d, %v; want 1 (done)", n, err)
	}
	live, err = s.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []task.Task{mustGetLive(t, s, "queued"), mustGetLive(t, s, "running"), utc(*sched)}; !reflect.DeepEqual(live, want) {
		t.Errorf("Live after retention:\n got %+v\nwant %+v", live, want)
	}
}

// mustGetLive is Get without History, as Live returns tasks.
func mustGetLive(t *testing.T, s *Store, id string) task.Task {
	t.Helper()
	got := mustGet(t, s, id)
	got.History = nil
	return got
}
