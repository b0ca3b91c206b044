package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// stmts are the writer's prepared statements, on its own connection: one
// per Kind of each row (an attempt's Insert is its upsert), narrower ones
// for the commonest writes of a task (taskSubmit, taskFinish), the same
// for the newest attempt, which lives in its task's row (spill, lastSet,
// lastUpdate, lastEnd), the two writes of task and attempt in one
// statement (deliver and finish, for writeBoth), and inTx's BEGIN and
// COMMIT.
type stmts struct {
	taskUpsert, taskInsert, taskSubmit, taskUpdate, taskFinish *sql.Stmt
	attemptUpsert, attemptUpdate, attemptEnd, attemptKeep      *sql.Stmt
	spill, lastSet, lastUpdate, lastEnd                        *sql.Stmt
	deliver, finish                                            *sql.Stmt
	begin, commit                                              *sql.Stmt // inTx's, parsed once like the rest
}

// taskColumns are the tasks columns in the order taskArgs binds them.
const taskColumns = `id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, exit_code,
	stdout, stderr, stdout_cut, stderr_cut, error, idempotency_key,
	created_at, assigned_at, started_at, finished_at,
	priority, requires, run_at, retry_on, backoff_ns, max_backoff_ns, attempt_base,
	req_defaults, req_run_at`

const taskValues = `VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// The statements. taskUpdateSQL sets the columns that change after
// submission, in the order taskUpdateArgs binds them; the others are in no
// index but the primary key's and the idempotency key's, which it so
// leaves alone.
const (
	taskInsertSQL = `INSERT INTO tasks (` + taskColumns + `) ` + taskValues

	// taskSubmitSQL inserts a task as nearly every submission leaves it:
	// the columns that only a delivery, a result, a schedule, labels or a
	// retry policy set hold their initial values in the SQL, so that 9 are
	// bound instead of 27. writeTask uses it for the tasks that are so
	// (submitted), taskInsertSQL for the others.
	taskSubmitSQL = `INSERT INTO tasks (` + taskColumns + `)
VALUES (?, ?, ?, 0, ?, ?, '', NULL, '', '', 0, 0, '', ?, ?, 0, 0, 0, ?, '', 0, '', 0, 0, 0, ?, 0)`

	taskUpsertSQL = taskInsertSQL + `
ON CONFLICT (id) DO UPDATE SET
	cmd = excluded.cmd, status = excluded.status, attempts = excluded.attempts,
	max_attempts = excluded.max_attempts, timeout_ns = excluded.timeout_ns,
	worker_id = excluded.worker_id, exit_code = excluded.exit_code,
	stdout = excluded.stdout, stderr = excluded.stderr,
	stdout_cut = excluded.stdout_cut, stderr_cut = excluded.stderr_cut,
	error = excluded.error, idempotency_key = excluded.idempotency_key,
	created_at = excluded.created_at, assigned_at = excluded.assigned_at,
	started_at = excluded.started_at, finished_at = excluded.finished_at,
	priority = excluded.priority, requires = excluded.requires, run_at = excluded.run_at,
	retry_on = excluded.retry_on, backoff_ns = excluded.backoff_ns,
	max_backoff_ns = excluded.max_backoff_ns, attempt_base = excluded.attempt_base,
	req_defaults = excluded.req_defaults, req_run_at = excluded.req_run_at`

	taskUpdateSQL = `
UPDATE tasks SET status = ?, attempts = ?, worker_id = ?, exit_code = ?,
	stdout = ?, stderr = ?, stdout_cut = ?, stderr_cut = ?, error = ?,
	assigned_at = ?, started_at = ?, finished_at = ?, run_at = ?, attempt_base = ?
WHERE id = ?`

	// taskFinishSQL is a narrower taskUpdateSQL for a task's final state:
	// it leaves out the columns a delivery's end does not change (worker_id,
	// attempts, assigned_at, run_at, attempt_base) and matches the row only
	// if they already hold the given values, so that the row still ends up
	// as given; writeTask falls back to taskUpdateSQL when it matches none.
	// A column an UPDATE does not set spares SQLite the indexes that hold
	// it: without worker_id, finishing a task leaves its tasks_worker entry
	// alone instead of deleting and inserting it again.
	taskFinishSQL = `
UPDATE tasks SET status = ?, exit_code = ?, stdout = ?, stderr = ?, stdout_cut = ?, stderr_cut = ?,
	error = ?, started_at = ?, finished_at = ?
WHERE id = ? AND worker_id = ? AND attempts = ? AND assigned_at = ? AND run_at = ? AND attempt_base = ?`

	attemptUpsertSQL = `
INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id, n) DO UPDATE SET
	worker_id = excluded.worker_id, outcome = excluded.outcome, exit_code = excluded.exit_code,
	error = excluded.error, assigned_at = excluded.assigned_at, finished_at = excluded.finished_at,
	duplicate = excluded.duplicate`

	attemptUpdateSQL = `
UPDATE attempts SET outcome = ?, exit_code = ?, error = ?, finished_at = ?, duplicate = ?
WHERE task_id = ? AND n = ?`

	// attemptKeepSQL inserts the attempt unless the table has it, or its
	// task's row does (the last two values: the task's ID and the N again).
	attemptKeepSQL = `
INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = ? AND last_n = ?)
ON CONFLICT (task_id, n) DO NOTHING`

	attemptEndSQL = `
UPDATE attempts SET outcome = ?, error = ?, finished_at = ?
WHERE task_id = ? AND n = ? AND worker_id = ? AND outcome = 'running'`

	// The task row's attempt (migration 8): a task's newest attempt is
	// written into its row, where the task's own writes rewrite it
	// anyway. spillSQL moves the row's attempt into attempts when a newer
	// one (the N bound second) is about to take its place; lastSetSQL
	// then writes the whole attempt into the row, unless the row holds a
	// newer one already. lastUpdateSQL and lastEndSQL are attemptUpdateSQL
	// and attemptEndSQL for the row's attempt.
	spillSQL = `
INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
SELECT id, last_n, last_worker_id, last_outcome, last_exit_code, last_error, last_assigned_at, last_finished_at, last_duplicate
FROM tasks WHERE id = ? AND last_n > 0 AND last_n < ?
ON CONFLICT (task_id, n) DO UPDATE SET
	worker_id = excluded.worker_id, outcome = excluded.outcome, exit_code = excluded.exit_code,
	error = excluded.error, assigned_at = excluded.assigned_at, finished_at = excluded.finished_at,
	duplicate = excluded.duplicate`

	lastSetSQL = `
UPDATE tasks SET last_n = ?, last_worker_id = ?, last_outcome = ?, last_exit_code = ?, last_error = ?,
	last_assigned_at = ?, last_finished_at = ?, last_duplicate = ?
WHERE id = ? AND last_n <= ?`

	lastUpdateSQL = `
UPDATE tasks SET last_outcome = ?, last_exit_code = ?, last_error = ?, last_finished_at = ?, last_duplicate = ?
WHERE id = ? AND last_n = ?`

	lastEndSQL = `
UPDATE tasks SET last_outcome = ?, last_error = ?, last_finished_at = ?
WHERE id = ? AND last_n = ? AND last_worker_id = ? AND last_outcome = 'running'`

	// deliverSQL and finishSQL write a task and its newest attempt in one
	// statement, for the two writes nearly every task makes (writeBoth):
	// a delivery, taskUpdateSQL with the whole attempt, if the row holds
	// no attempt to move out first (none, or this one); and a result,
	// taskFinishSQL with the attempt's end, if the row holds this attempt.
	deliverSQL = `
UPDATE tasks SET status = ?, attempts = ?, worker_id = ?, exit_code = ?,
	stdout = ?, stderr = ?, stdout_cut = ?, stderr_cut = ?, error = ?,
	assigned_at = ?, started_at = ?, finished_at = ?, run_at = ?, attempt_base = ?,
	last_n = ?, last_worker_id = ?, last_outcome = ?, last_exit_code = ?, last_error = ?,
	last_assigned_at = ?, last_finished_at = ?, last_duplicate = ?
WHERE id = ? AND (last_n = 0 OR last_n = ?)`

	finishSQL = `
UPDATE tasks SET status = ?, exit_code = ?, stdout = ?, stderr = ?, stdout_cut = ?, stderr_cut = ?,
	error = ?, started_at = ?, finished_at = ?,
	last_outcome = ?, last_exit_code = ?, last_error = ?, last_finished_at = ?, last_duplicate = ?
WHERE id = ? AND worker_id = ? AND attempts = ? AND assigned_at = ? AND run_at = ? AND attempt_base = ?
	AND last_n = ?`
)

func prepare(ctx context.Context, conn *sql.Conn) (*stmts, error) {
	st := &stmts{}
	for _, p := range []struct {
		dst  **sql.Stmt
		sql  string
		what string
	}{
		{&st.taskUpsert, taskUpsertSQL, "task upsert"},
		{&st.taskInsert, taskInsertSQL, "task insert"},
		{&st.taskSubmit, taskSubmitSQL, "task submit"},
		{&st.taskUpdate, taskUpdateSQL, "task update"},
		{&st.taskFinish, taskFinishSQL, "task finish"},
		{&st.attemptUpsert, attemptUpsertSQL, "attempt upsert"},
		{&st.attemptUpdate, attemptUpdateSQL, "attempt update"},
		{&st.attemptEnd, attemptEndSQL, "attempt end"},
		{&st.attemptKeep, attemptKeepSQL, "attempt keep"},
		{&st.spill, spillSQL, "attempt spill"},
		{&st.lastSet, lastSetSQL, "last attempt set"},
		{&st.lastUpdate, lastUpdateSQL, "last attempt update"},
		{&st.lastEnd, lastEndSQL, "last attempt end"},
		{&st.deliver, deliverSQL, "delivery"},
		{&st.finish, finishSQL, "result"},
		{&st.begin, "BEGIN", "begin"},
		{&st.commit, "COMMIT", "commit"},
	} {
		s, err := conn.PrepareContext(ctx, p.sql)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare %s: %w", p.what, err)
		}
		*p.dst = s
	}
	return st, nil
}

// close closes the statements prepared so far.
func (st *stmts) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{st.taskUpsert, st.taskInsert, st.taskSubmit, st.taskUpdate, st.taskFinish,
		st.attemptUpsert, st.attemptUpdate, st.attemptEnd, st.attemptKeep, st.spill, st.lastSet, st.lastUpdate, st.lastEnd,
		st.deliver, st.finish, st.begin, st.commit} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// apply runs ws on the writer's connection, inside the transaction inTx
// opened there.
func (st *stmts) apply(ctx context.Context, ws []Write) error {
	for _, w := range ws {
		if done, err := st.writeBoth(ctx, w); done || err != nil {
			if err != nil {
				return writeError("task "+w.Task.ID, err)
			}
			continue
		}
		if t := w.Task; t != nil {
			if err := st.writeTask(ctx, t, w.Kind); err != nil {
				return writeError("task "+t.ID, err)
			}
		}
		if a := w.Attempt; a != nil {
			if err := st.writeAttempt(ctx, a, w.AttemptKind); err != nil {
				return writeError(fmt.Sprintf("attempt %d of task %s", a.N, a.TaskID), err)
			}
		}
	}
	return nil
}

// writeBoth writes w in one statement if it is a delivery (an Update of
// the task with an Insert of its newest attempt) or a final result (an
// Update of both) and the row is as the statement needs it, and reports
// whether it did; writeTask and writeAttempt do the rest.
func (st *stmts) writeBoth(ctx context.Context, w Write) (bool, error) {
	t, a := w.Task, w.Attempt
	if t == nil || a == nil || w.Kind != Update || a.TaskID != t.ID || a.N != t.Attempts {
		return false, nil
	}
	switch {
	case w.AttemptKind == Insert:
		return updated(st.deliver.ExecContext(ctx,
			string(t.Status), t.Attempts, t.WorkerID, intArg(t.ExitCode),
			t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error,
			nanos(t.AssignedAt), nanos(t.StartedAt), nanos(t.FinishedAt), nanos(t.RunAt), t.AttemptBase,
			a.N, a.WorkerID, string(a.Outcome), intArg(a.ExitCode), a.Error,
			nanos(a.AssignedAt), nanos(a.FinishedAt), a.Duplicate,
			t.ID, a.N))
	case w.AttemptKind == Update && t.Status.Final():
		return updated(st.finish.ExecContext(ctx,
			string(t.Status), intArg(t.ExitCode), t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error,
			nanos(t.StartedAt), nanos(t.FinishedAt),
			string(a.Outcome), intArg(a.ExitCode), a.Error, nanos(a.FinishedAt), a.Duplicate,
			t.ID, t.WorkerID, t.Attempts, nanos(t.AssignedAt), nanos(t.RunAt), t.AttemptBase, a.N))
	}
	return false, nil
}

func (st *stmts) writeTask(ctx context.Context, t *task.Task, k Kind) error {
	switch k {
	case Insert:
		if submitted(t) {
			_, err := st.taskSubmit.ExecContext(ctx,
				t.ID, t.Cmd, string(t.Status), t.MaxAttempts, int64(t.Timeout), idempotencyArg(t),
				nanos(t.CreatedAt), t.Priority, reqDefaultsArg(t.Request))
			return err
		}
		_, err := st.taskInsert.ExecContext(ctx, taskArgs(t)...)
		return err
	case Update:
		if t.Status.Final() {
			res, err := st.taskFinish.ExecContext(ctx,
				string(t.Status), intArg(t.ExitCode), t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error,
				nanos(t.StartedAt), nanos(t.FinishedAt),
				t.ID, t.WorkerID, t.Attempts, nanos(t.AssignedAt), nanos(t.RunAt), t.AttemptBase)
			if done, err := updated(res, err); done || err != nil {
				return err
			}
		}
		res, err := st.taskUpdate.ExecContext(ctx,
			string(t.Status), t.Attempts, t.WorkerID, intArg(t.ExitCode),
			t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error,
			nanos(t.AssignedAt), nanos(t.StartedAt), nanos(t.FinishedAt), nanos(t.RunAt), t.AttemptBase,
			t.ID)
		if done, err := updated(res, err); done || err != nil {
			return err
		}
	}
	_, err := st.taskUpsert.ExecContext(ctx, taskArgs(t)...)
	return err
}

// writeAttempt writes a as k says, where it lives: in its task's row if
// it is the newest attempt written (last_n), else in attempts. Each
// narrow write tries the row first; a whole write moves the row's
// attempt out first if a is newer (nothing to move on a first delivery).
func (st *stmts) writeAttempt(ctx context.Context, a *task.Attempt, k Kind) error {
	switch k {
	case IfRunning:
		res, err := st.lastEnd.ExecContext(ctx, string(a.Outcome), a.Error, nanos(a.FinishedAt), a.TaskID, a.N, a.WorkerID)
		if done, err := updated(res, err); done || err != nil {
			return err
		}
		_, err = st.attemptEnd.ExecContext(ctx, string(a.Outcome), a.Error, nanos(a.FinishedAt), a.TaskID, a.N, a.WorkerID)
		return err
	case IfAbsent:
		_, err := st.attemptKeep.ExecContext(ctx, append(attemptArgs(a), a.TaskID, a.N)...)
		return err
	case Update:
		args := []any{string(a.Outcome), intArg(a.ExitCode), a.Error, nanos(a.FinishedAt), a.Duplicate, a.TaskID, a.N}
		res, err := st.lastUpdate.ExecContext(ctx, args...)
		if done, err := updated(res, err); done || err != nil {
			return err
		}
		res, err = st.attemptUpdate.ExecContext(ctx, args...)
		if done, err := updated(res, err); done || err != nil {
			return err
		}
	}
	if _, err := st.spill.ExecContext(ctx, a.TaskID, a.N); err != nil {
		return err
	}
	res, err := st.lastSet.ExecContext(ctx, a.N, a.WorkerID, string(a.Outcome), intArg(a.ExitCode), a.Error,
		nanos(a.AssignedAt), nanos(a.FinishedAt), a.Duplicate, a.TaskID, a.N)
	if done, err := updated(res, err); done || err != nil {
		return err
	}
	// An attempt older than the row's, or one whose task has no row.
	_, err = st.attemptUpsert.ExecContext(ctx, attemptArgs(a)...)
	return err
}

// attemptArgs are a's values in the column order of attemptUpsertSQL and
// attemptKeepSQL.
func attemptArgs(a *task.Attempt) []any {
	return []any{a.TaskID, a.N, a.WorkerID, string(a.Outcome), intArg(a.ExitCode), a.Error,
		nanos(a.AssignedAt), nanos(a.FinishedAt), a.Duplicate}
}

// updated reports whether an UPDATE changed its row; when it did not, the
// caller upserts the row whole.
func updated(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// submitted reports whether t's columns that taskSubmitSQL does not bind
// hold the values it writes for them.
func submitted(t *task.Task) bool {
	return t.Attempts == 0 && t.WorkerID == "" && t.ExitCode == nil &&
		t.Stdout == "" && t.Stderr == "" && !t.StdoutCut && !t.StderrCut && t.Error == "" &&
		t.AssignedAt.IsZero() && t.StartedAt.IsZero() && t.FinishedAt.IsZero() &&
		len(t.Requires) == 0 && t.RunAt.IsZero() && len(t.RetryOn) == 0 &&
		t.Backoff == 0 && t.MaxBackoff == 0 && t.AttemptBase == 0 &&
		(t.Request == nil || t.Request.RunAt.IsZero())
}

// The bits of req_defaults: the fields a request left to the master's
// settings.
const (
	reqTimeout     = 1 << 0
	reqMaxAttempts = 1 << 1
)

// reqDefaultsArg binds r's req_defaults: NULL for none.
func reqDefaultsArg(r *task.Request) any {
	if r == nil {
		return nil
	}
	var bits int64
	if r.DefaultTimeout {
		bits |= reqTimeout
	}
	if r.DefaultMaxAttempts {
		bits |= reqMaxAttempts
	}
	return bits
}

// reqRunAtArg binds r's req_run_at.
func reqRunAtArg(r *task.Request) int64 {
	if r == nil {
		return 0
	}
	return nanos(r.RunAt)
}

// requestOf is the inverse of reqDefaultsArg and reqRunAtArg.
func requestOf(defaults sql.NullInt64, runAt int64) *task.Request {
	if !defaults.Valid {
		return nil
	}
	return &task.Request{RunAt: fromNanos(runAt),
		DefaultTimeout: defaults.Int64&reqTimeout != 0, DefaultMaxAttempts: defaults.Int64&reqMaxAttempts != 0}
}

// idempotencyArg binds t's key: NULL for none, so that the unique index
// ignores tasks without one.
func idempotencyArg(t *task.Task) any {
	if t.IdempotencyKey == "" {
		return nil
	}
	return t.IdempotencyKey
}

// taskArgs binds t for taskInsertSQL and taskUpsertSQL.
func taskArgs(t *task.Task) []any {
	return []any{
		t.ID, t.Cmd, string(t.Status), t.Attempts, t.MaxAttempts, int64(t.Timeout), t.WorkerID, intArg(t.ExitCode),
		t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error, idempotencyArg(t),
		nanos(t.CreatedAt), nanos(t.AssignedAt), nanos(t.StartedAt), nanos(t.FinishedAt),
		t.Priority, labels.String(t.Requires), nanos(t.RunAt), joinOutcomes(t.RetryOn),
		int64(t.Backoff), int64(t.MaxBackoff), t.AttemptBase,
		reqDefaultsArg(t.Request), reqRunAtArg(t.Request),
	}
}

// joinOutcomes writes outcomes comma-joined, as the retry_on column holds
// them; scanTask splits them again. No outcome contains a comma.
func joinOutcomes(outcomes []task.Outcome) string {
	var b strings.Builder
	for i, o := range outcomes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(o))
	}
	return b.String()
}

// writeError wraps err, adding task.ErrConflict when it is a unique-key
// violation: the only one a correct caller can cause, by racing two
// creations with the same idempotency key.
func writeError(what string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		return fmt.Errorf("store: write %s: %w: %w", what, task.ErrConflict, err)
	}
	return fmt.Errorf("store: write %s: %w", what, err)
}
