package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// taskCols are the tasks columns in the order scanTask reads them.
const taskCols = `id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, exit_code,
	stdout, stderr, stdout_cut, stderr_cut, error, COALESCE(idempotency_key, ''),
	created_at, assigned_at, started_at, finished_at,
	priority, requires, run_at, retry_on, backoff_ns, max_backoff_ns, attempt_base,
	req_defaults, req_run_at`

// listCols are taskCols without the output, which can be large.
var listCols = strings.Replace(taskCols, "stdout, stderr,", "'', '',", 1)

// Get returns a task with its History, one attempt per delivery ordered by
// N. The error wraps task.ErrNotFound if there is no such task.
func (s *Store) Get(ctx context.Context, id string) (task.Task, error) {
	// One read transaction: the task row and its attempts from one snapshot.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return task.Task{}, fmt.Errorf("store: get %s: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // read only

	// The row's attempt (migration 8) is the newest; attempts holds the
	// others, and may hold a stale copy of the row's, which is skipped.
	var last attemptRow
	t, err := scanTask(tx.QueryRowContext(ctx, `SELECT `+taskCols+`, `+lastCols+` FROM tasks WHERE id = ?`, id), last.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return task.Task{}, fmt.Errorf("store: task %s: %w", id, task.ErrNotFound)
	}
	if err != nil {
		return task.Task{}, fmt.Errorf("store: get %s: %w", id, err)
	}

	rows, err := tx.QueryContext(ctx, `
SELECT n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate
FROM attempts WHERE task_id = ? AND n != ? ORDER BY n`, id, last.N)
	if err != nil {
		return task.Task{}, fmt.Errorf("store: get %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r attemptRow
		if err := rows.Scan(r.dest()...); err != nil {
			return task.Task{}, fmt.Errorf("store: get %s: %w", id, err)
		}
		t.History = append(t.History, r.attempt(id))
	}
	if err := rows.Err(); err != nil {
		return task.Task{}, fmt.Errorf("store: get %s: %w", id, err)
	}
	if last.N > 0 {
		a := last.attempt(id)
		i, _ := slices.BinarySearchFunc(t.History, a.N, func(h task.Attempt, n int) int { return cmp.Compare(h.N, n) })
		t.History = slices.Insert(t.History, i, a)
	}
	return t, nil
}

// lastCols are the task row's attempt (migration 8), in attemptRow's
// order.
const lastCols = `last_n, last_worker_id, last_outcome, last_exit_code, last_error,
	last_assigned_at, last_finished_at, last_duplicate`

// attemptRow is an attempt as stored, in attempts or in its task's row.
type attemptRow struct {
	N                  int
	WorkerID, Error    string
	Outcome            task.Outcome
	Exit               sql.NullInt64
	Assigned, Finished int64
	Duplicate          bool
}

// dest are r's fields in the column order of lastCols.
func (r *attemptRow) dest() []any {
	return []any{&r.N, &r.WorkerID, &r.Outcome, &r.Exit, &r.Error, &r.Assigned, &r.Finished, &r.Duplicate}
}

func (r *attemptRow) attempt(taskID string) task.Attempt {
	return task.Attempt{
		TaskID: taskID, N: r.N, WorkerID: r.WorkerID, Outcome: r.Outcome, ExitCode: intPtr(r.Exit),
		Error: r.Error, AssignedAt: fromNanos(r.Assigned), FinishedAt: fromNanos(r.Finished), Duplicate: r.Duplicate,
	}
}

// liveQuery selects every live task from tasks_status: three ranges of
// the index, the few live rows, in ID order within each status; Live
// sorts them. INDEXED BY so that the query fails, rather than quietly
// scans the table, should the index ever go. (Migration 7 dropped the
// index that held the live tasks in order: it cost every submission and
// every final write an index entry, for one read at start-up.)
var liveQuery = `SELECT ` + taskCols + ` FROM tasks INDEXED BY tasks_status
WHERE status IN ('scheduled', 'queued', 'running')`

// Live returns every scheduled, queued or running task, oldest first (by
// CreatedAt, then ID), without History. The dispatcher rebuilds its queue
// and its schedule from it at start-up.
func (s *Store) Live(ctx context.Context) ([]task.Task, error) {
	ts, err := s.query(ctx, liveQuery)
	if err != nil {
		return nil, fmt.Errorf("store: live: %w", err)
	}
	slices.SortFunc(ts, func(a, b task.Task) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return ts, nil
}

// unendedQuery reads tasks_unended (migration 9), whose WHERE it repeats.
const unendedQuery = `SELECT id, last_n, last_worker_id FROM tasks INDEXED BY tasks_unended
WHERE last_outcome = 'running' AND status != 'scheduled' AND status != 'queued' AND status != 'running'`

// Run is one delivery of a task: its attempt N on a worker.
type Run struct {
	TaskID   string
	N        int
	WorkerID string
}

// Unended returns the newest run of each final task whose history still
// has it running: it was canceled, or another run decided the task, while
// it ran, and its end was never reported. (Older runs, and those of a
// database from before migration 8, are not among them.)
func (s *Store) Unended(ctx context.Context) ([]Run, error) {
	rows, err := s.db.QueryContext(ctx, unendedQuery)
	if err != nil {
		return nil, fmt.Errorf("store: unended runs: %w", err)
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		var r Run
		if err := rows.Scan(&r.TaskID, &r.N, &r.WorkerID); err != nil {
			return nil, fmt.Errorf("store: unended runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: unended runs: %w", err)
	}
	return runs, nil
}

// FindByIdempotencyKey returns the task created with key, without History.
// The error wraps task.ErrNotFound if there is none.
func (s *Store) FindByIdempotencyKey(ctx context.Context, key string) (task.Task, error) {
	if key == "" {
		return task.Task{}, fmt.Errorf("store: empty idempotency key: %w", task.ErrNotFound)
	}
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE idempotency_key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return task.Task{}, fmt.Errorf("store: idempotency key %q: %w", key, task.ErrNotFound)
	}
	if err != nil {
		return task.Task{}, fmt.Errorf("store: find idempotency key: %w", err)
	}
	return t, nil
}

// Query selects a page of List.
type Query struct {
	Statuses []task.Status // empty: any
	WorkerID string        // empty: any
	// Cmd keeps the tasks whose command contains it, ignoring the case of
	// ASCII letters (SQLite's LIKE); empty: any. It is matched as text:
	// % and _ in it are no wildcards.
	Cmd    string
	Cursor string // empty: from the newest; else the Next of the previous page
	Limit  int    // 1..1000; 0 means 100
}

// Page is one page of List.
type Page struct {
	Tasks []task.Task
	Next  string // empty when there are no more
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// List returns tasks newest first (by ID descending: IDs are UUIDv7, which
// sort by creation time), filtered, one page at a time. The tasks have no
// History and no Stdout or Stderr, to keep pages small. A bad cursor,
// limit or status wraps task.ErrInvalid.
func (s *Store) List(ctx context.Context, q Query) (Page, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = defaultLimit
	case limit < 0 || limit > maxLimit:
		return Page{}, fmt.Errorf("store: limit %d is outside 1..%d: %w", q.Limit, maxLimit, task.ErrInvalid)
	}

	query, args, err := listQuery(q, limit)
	if err != nil {
		return Page{}, err
	}

	ts, err := s.query(ctx, query, args...)
	if err != nil {
		return Page{}, fmt.Errorf("store: list: %w", err)
	}
	var p Page
	if len(ts) > limit {
		ts = ts[:limit]
		p.Next = encodeCursor(ts[limit-1].ID)
	}
	p.Tasks = ts
	return p, nil
}

// listQuery is List's SQL and its arguments, for up to limit tasks.
func listQuery(q Query, limit int) (string, []any, error) {
	var (
		where []string
		args  []any
	)
	if len(q.Statuses) > 0 {
		marks := make([]string, len(q.Statuses))
		for i, st := range q.Statuses {
			if !slices.Contains(task.Statuses, st) {
				return "", nil, fmt.Errorf("store: unknown status %q: %w", st, task.ErrInvalid)
			}
			marks[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(marks, ", ")+")")
	}
	if q.WorkerID != "" {
		// The second term is tasks_worker's WHERE (migration 4): it adds
		// nothing to the first but lets SQLite see that the index holds
		// every row the query wants.
		where = append(where, "worker_id = ? AND worker_id != ''")
		args = append(args, q.WorkerID)
	}
	if q.Cmd != "" {
		where = append(where, `cmd LIKE ? ESCAPE '\'`)
		args = append(args, "%"+likeEscaper.Replace(q.Cmd)+"%")
	}
	if q.Cursor != "" {
		after, err := decodeCursor(q.Cursor)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "id < ?")
		args = append(args, after)
	}
	query := `SELECT ` + listCols + ` FROM tasks`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	// One more than asked for tells whether there is a next page.
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit+1)
	return query, args, nil
}

// likeEscaper makes text match itself in a LIKE pattern with ESCAPE '\'.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// A cursor is the ID of the last task of a page, with a prefix so that a
// string we did not make is told apart, base64url-encoded to keep it opaque.
const cursorPrefix = "after:"

func encodeCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + id))
}

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	id, ok := strings.CutPrefix(string(b), cursorPrefix)
	if err != nil || !ok || id == "" {
		// Not echoed: it is whatever a client sent, of any length.
		return "", fmt.Errorf("%w: cursor is not one the master gave; pass a page's next_cursor as it is", task.ErrInvalid)
	}
	return id, nil
}

func (s *Store) query(ctx context.Context, query string, args ...any) ([]task.Task, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ts []task.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

// scanTask reads one row of taskCols (or listCols), then into more the
// columns selected after them.
func scanTask(row interface{ Scan(...any) error }, more ...any) (task.Task, error) {
	var (
		t                                    task.Task
		timeout                              int64
		exit                                 sql.NullInt64
		stdout, stderr, errText              sql.NullString
		stdoutCut, stderrCut                 sql.NullBool
		created, assigned, started, finished int64
		requires, retryOn                    string
		runAt, backoff, maxBackoff           int64
		reqDefaults                          sql.NullInt64
		reqRunAt                             int64
	)
	err := row.Scan(append([]any{&t.ID, &t.Cmd, &t.Status, &t.Attempts, &t.MaxAttempts, &timeout, &t.WorkerID, &exit,
		&stdout, &stderr, &stdoutCut, &stderrCut, &errText, &t.IdempotencyKey,
		&created, &assigned, &started, &finished,
		&t.Priority, &requires, &runAt, &retryOn, &backoff, &maxBackoff, &t.AttemptBase,
		&reqDefaults, &reqRunAt}, more...)...)
	if err != nil {
		return task.Task{}, err
	}
	t.Timeout = time.Duration(timeout)
	t.ExitCode = intPtr(exit)
	t.Stdout, t.Stderr, t.Error = stdout.String, stderr.String, errText.String
	t.StdoutCut, t.StderrCut = stdoutCut.Bool, stderrCut.Bool
	t.CreatedAt, t.AssignedAt = fromNanos(created), fromNanos(assigned)
	t.StartedAt, t.FinishedAt = fromNanos(started), fromNanos(finished)
	t.RunAt = fromNanos(runAt)
	t.Backoff, t.MaxBackoff = time.Duration(backoff), time.Duration(maxBackoff)
	t.Request = requestOf(reqDefaults, reqRunAt)
	// '' reads as nil, not an empty map or slice: a task without
	// requirements or policy reads back as it was written.
	if requires != "" {
		if t.Requires, err = labels.Parse(requires); err != nil {
			return task.Task{}, fmt.Errorf("task %s: requires %q: %w", t.ID, requires, err)
		}
	}
	if retryOn != "" {
		for o := range strings.SplitSeq(retryOn, ",") {
			t.RetryOn = append(t.RetryOn, task.Outcome(o))
		}
	}
	return t, nil
}

// nanos stores t as unix nanoseconds, the zero time as 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos; it returns times in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func intArg(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

func intPtr(n sql.NullInt64) *int {
	if !n.Valid {
		return nil
	}
	v := int(n.Int64)
	return &v
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
