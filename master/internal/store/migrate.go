package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are applied in order; migrations[i] is version i+1. Append
// only: never edit one that has shipped.
var migrations = []string{
	// 1: tasks and their attempts.
	//
	// Times are INTEGER unix nanoseconds, 0 for the zero time.Time.
	//
	// attempts has one row per delivery, keyed by (task_id, n): the
	// dispatcher upserts attempt N's row as it moves from running to its
	// outcome (or to lost, when its worker vanished). A result that arrives
	// after the task was already final updates its own delivery's row with
	// duplicate = 1: the history then says what that run did, and that it
	// came too late to count.
	`
CREATE TABLE tasks (
	id              TEXT PRIMARY KEY,
	cmd             TEXT NOT NULL,
	status          TEXT NOT NULL,
	attempts        INTEGER NOT NULL,
	max_attempts    INTEGER NOT NULL,
	timeout_ns      INTEGER NOT NULL,
	worker_id       TEXT NOT NULL DEFAULT '',
	exit_code       INTEGER NULL,
	stdout          TEXT,
	stderr          TEXT,
	stdout_cut      INTEGER,
	stderr_cut      INTEGER,
	error           TEXT,
	idempotency_key TEXT NULL,
	created_at      INTEGER NOT NULL,
	assigned_at     INTEGER NOT NULL,
	started_at      INTEGER NOT NULL,
	finished_at     INTEGER NOT NULL
);
-- List filtered by status, newest first.
CREATE INDEX tasks_status ON tasks (status, id);
-- Live: the few queued and running tasks, oldest first, without a sort.
CREATE INDEX tasks_live ON tasks (created_at, id) WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_worker ON tasks (worker_id, id);

CREATE TABLE attempts (
	task_id     TEXT NOT NULL REFERENCES tasks (id),
	n           INTEGER NOT NULL,
	worker_id   TEXT NOT NULL,
	outcome     TEXT NOT NULL,
	exit_code   INTEGER NULL,
	error       TEXT,
	assigned_at INTEGER NOT NULL,
	finished_at INTEGER NOT NULL,
	duplicate   INTEGER NOT NULL,
	PRIMARY KEY (task_id, n)
);
`,
	// 2: retention (DeleteFinished) finds final tasks finished before a
	// cutoff, oldest first, without scanning the table. The WHERE must
	// read as DeleteFinished's does, or SQLite will not use the index.
	`
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status NOT IN ('queued', 'running');
`,
	// 3: scheduling. A task's priority, the labels it requires (the
	// canonical "k=v,k=v" of labels.String, '' for none), its run time,
	// its retry policy (outcomes comma-joined, '' for none) and the
	// attempt count of its last manual retry. Rows from before read as
	// priority 3 (task.DefaultPriority) with no requirements and no policy.
	//
	// scheduled is a third live status. Both partial indexes name the live
	// statuses, so they are made again with it: tasks_live for Live, and
	// tasks_finished so that retention never sees a scheduled task, whose
	// finished_at is 0. Their WHEREs must read as the queries' do (liveQuery's
	// and finishedQuery's), or SQLite will not use them.
	`
ALTER TABLE tasks ADD COLUMN priority       INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN requires       TEXT    NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN run_at         INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_on       TEXT    NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN backoff_ns     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_backoff_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN attempt_base   INTEGER NOT NULL DEFAULT 0;

DROP INDEX tasks_live;
CREATE INDEX tasks_live ON tasks (created_at, id) WHERE status IN ('scheduled', 'queued', 'running');
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status NOT IN ('scheduled', 'queued', 'running');
`,
	// 4: tasks_worker holds only the tasks that have a worker, so that a
	// submission (worker_id '') writes no entry in it, nor does a queued
	// task's delivery remove one, and the index stays small with many
	// tasks queued. List asks for a worker's tasks with the index's WHERE
	// (listQuery), or SQLite will not use it.
	`
DROP INDEX tasks_worker;
CREATE INDEX tasks_worker ON tasks (worker_id, id) WHERE worker_id != '';
`,
	// 5: the partial indexes' WHEREs without IN lists. SQLite evaluates a
	// partial index's WHERE on every write of a row, and codes an IN list
	// of more than two values as an ephemeral table, opened, filled and
	// closed each time: two per insert, four per update, about a tenth of
	// the master's CPU under submissions. Written as comparisons, the same
	// conditions cost a few string compares. The queries that use these
	// indexes (liveQuery, finishedQuery) say the same, word for word.
	`
DROP INDEX tasks_live;
CREATE INDEX tasks_live ON tasks (created_at, id)
	WHERE status = 'scheduled' OR status = 'queued' OR status = 'running';
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at)
	WHERE status != 'scheduled' AND status != 'queued' AND status != 'running';
`,
	// 6: numbers that must keep growing across processes whatever the wall
	// clock does (ReserveSeq): the event numbers, which a process starts
	// from its start time, and so could reuse after a clock stepped back.
	`
CREATE TABLE seqs (
	name TEXT PRIMARY KEY,
	next INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 7: tasks_live goes. It held the live tasks in creation order for
	// Live, one read at start-up, and cost every submission an index
	// entry, and every final write the removal of one: about a tenth of
	// a submission's CPU under load. Live reads tasks_status instead and
	// sorts. (Making tasks WITHOUT ROWID as well, which would drop the
	// index of the text primary key, measured no further gain.)
	`
DROP INDEX tasks_live;
`,
	// 8: a task's newest attempt lives in its row (last_n and the last_*
	// columns, last_n 0 for none); the attempts table holds the others.
	// Each delivery and each result then rewrites the one row the task's
	// write rewrites anyway, where a row in attempts cost two more b-trees
	// (its rows and its key) in every commit: about a sixth of the
	// master's CPU while workers run short tasks. A task keeps rows in
	// attempts only once it has been delivered again (a retry, a lost
	// run), and for what rows from before this migration hold. Where an
	// attempt is in both, the task row's is the one: writeAttempt moves an
	// attempt out of the row (spillSQL) only when a newer one takes its
	// place.
	`
ALTER TABLE tasks ADD COLUMN last_n           INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN last_worker_id   TEXT    NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN last_outcome     TEXT    NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN last_exit_code   INTEGER NULL;
ALTER TABLE tasks ADD COLUMN last_error       TEXT    NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN last_assigned_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN last_finished_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN last_duplicate   INTEGER NOT NULL DEFAULT 0;
`,
	// 9: the final tasks whose newest run is still running in their
	// history: canceled, or decided by another run, while it ran, and
	// its end not reported yet. Start-up reads them (Unended) to end them
	// lost should their worker not come back holding them; the index
	// holds those few only. Its WHERE must read as unendedQuery's does,
	// and is plain comparisons (migration 5).
	`
CREATE INDEX tasks_unended ON tasks (last_worker_id)
	WHERE last_outcome = 'running' AND status != 'scheduled' AND status != 'queued' AND status != 'running';
`,
	// 10: the request of a task with an idempotency key, as sent, for its
	// replays to be compared with (task.Request): req_defaults says which
	// fields it left to the master's settings (reqTimeout, reqMaxAttempts;
	// NULL for a task without a key, or stored before this migration), and
	// req_run_at its run time as submitted (0 for none), which run_at no
	// longer holds once the task has been retried.
	`
ALTER TABLE tasks ADD COLUMN req_defaults INTEGER NULL;
ALTER TABLE tasks ADD COLUMN req_run_at   INTEGER NOT NULL DEFAULT 0;
`,
}

// migrate applies the migrations not yet recorded in schema_migrations,
// each in its own transaction, and reports how many it applied.
func migrate(ctx context.Context, conn *sql.Conn) (int, error) {
	if _, err := conn.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)`); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if current > len(migrations) {
		return 0, fmt.Errorf("migrate: database is at version %d, newer than this binary's %d", current, len(migrations))
	}
	applied := 0
	for v := current + 1; v <= len(migrations); v++ {
		if err := migrateOne(ctx, conn, v); err != nil {
			return applied, err
		}
		applied++
	}
	return applied, nil
}

func migrateOne(ctx context.Context, conn *sql.Conn, version int) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate to %d: %w", version, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, migrations[version-1]); err != nil {
		return fmt.Errorf("migrate to %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migrate to %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate to %d: %w", version, err)
	}
	return nil
}
