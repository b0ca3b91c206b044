package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// maxBatch bounds the writes committed in one transaction, so that one
// commit never holds the write lock for long. A single Apply call larger
// than this still goes in one transaction.
const maxBatch = 1000

// Write is one change: the whole task row (upsert by ID), and optionally
// one attempt row (upsert by TaskID, N and Duplicate). Task may be nil when
// only an attempt changes. An attempt's task row must already be stored, or
// come in the same or an earlier Write.
type Write struct {
	Task    *task.Task
	Attempt *task.Attempt
}

// request is one Apply call waiting for the writer.
type request struct {
	ws   []Write    // copies, owned by the writer once queued
	done chan error // cap 1; receives exactly one value
}

// Apply queues writes for the writer goroutine and returns at once; it
// never waits for the disk. Writes are applied in the order the calls
// entered Apply, and the writes of one call are committed together or not
// at all. The returned channel receives exactly one value: nil once all
// the writes are committed to disk, or the error. A unique-key violation
// (a second task with the same idempotency key) wraps task.ErrConflict;
// after Close the error wraps task.ErrClosed.
//
// Apply copies what ws points to, so the caller may change its tasks once
// Apply returns.
func (s *Store) Apply(ws ...Write) <-chan error {
	done := make(chan error, 1)
	r := &request{ws: copyWrites(ws), done: done}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done <- fmt.Errorf("store: apply: %w", task.ErrClosed)
		return done
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()

	select {
	case s.wake <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
	return done
}

func copyWrites(ws []Write) []Write {
	out := make([]Write, len(ws))
	for i, w := range ws {
		if w.Task != nil {
			t := *w.Task
			t.ExitCode = copyInt(t.ExitCode)
			t.History = nil // not stored through Apply
			out[i].Task = &t
		}
		if w.Attempt != nil {
			a := *w.Attempt
			a.ExitCode = copyInt(a.ExitCode)
			out[i].Attempt = &a
		}
	}
	return out
}

func copyInt(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Flush waits until every write queued before the call has been committed
// (or has failed, in which case its own Apply channel says so).
func (s *Store) Flush(ctx context.Context) error {
	// An empty Apply is a barrier: the writer answers it only after
	// everything queued ahead of it.
	select {
	case err := <-s.Apply():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the writer goroutine, started by Open and stopped by Close. It
// alone uses s.conn and s.stmts.
func (s *Store) run() {
	defer close(s.done)
	for {
		if batch := s.take(); len(batch) > 0 {
			s.commit(batch)
			continue
		}
		select {
		case <-s.wake:
		case <-s.stop:
			// Close set closed before closing stop, so nothing can be
			// queued any more: an empty queue means we are done.
			s.mu.Lock()
			empty := len(s.queue) == 0
			s.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// take removes from the queue the oldest requests, up to maxBatch writes
// (at least one request when any is queued).
func (s *Store) take() []*request {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, writes := 0, 0
	for n < len(s.queue) && (n == 0 || writes+len(s.queue[n].ws) <= maxBatch) {
		writes += len(s.queue[n].ws)
		n++
	}
	if n == 0 {
		return nil
	}
	batch := make([]*request, n)
	copy(batch, s.queue)
	clear(s.queue[:n]) // let the requests be collected once answered
	s.queue = s.queue[n:]
	return batch
}

// commit applies batch in one transaction and answers every request in
// it. If that fails, it retries each request in a transaction of its own,
// so that one bad write fails only its own caller.
func (s *Store) commit(batch []*request) {
	ctx := context.Background() // queued writes are finished even during Close
	writes := 0
	for _, r := range batch {
		writes += len(r.ws)
	}
	if writes == 0 { // only Flush barriers
		for _, r := range batch {
			r.done <- nil
		}
		return
	}

	err := s.inTx(ctx, func() error {
		for _, r := range batch {
			if err := s.stmts.apply(ctx, r.ws); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			r.done <- err
		}
		return
	}

	s.log.Warn("batch failed; retrying it one call at a time", "calls", len(batch), "writes", writes, "err", err)
	for _, r := range batch {
		if len(r.ws) == 0 {
			r.done <- nil
			continue
		}
		r.done <- s.inTx(ctx, func() error { return s.stmts.apply(ctx, r.ws) })
	}
}

// inTx runs fn in a transaction on the writer's connection and commits it.
// It says BEGIN and COMMIT itself instead of using a *sql.Tx: Tx.StmtContext
// prepares a statement that was prepared on a Conn all over again, so every
// transaction re-parsed both upserts, and that parsing was the master's
// largest CPU cost under load (see the README's Performance section).
func (s *Store) inTx(ctx context.Context, fn func() error) error {
	if _, err := s.conn.ExecContext(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(); err != nil {
		s.rollback(ctx)
		return err
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		// A COMMIT that fails (e.g. SQLITE_BUSY) can leave the transaction
		// open; the next batch must start from a clean connection.
		s.rollback(ctx)
		return fmt.Errorf("store: commit: %w", err)
	}
	s.commits.Add(1)
	return nil
}

func (s *Store) rollback(ctx context.Context) {
	if _, err := s.conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		// "no transaction is active" after a failed COMMIT that rolled
		// back by itself is expected; anything else is worth a line.
		s.log.Debug("rollback", "err", err)
	}
}

// stmts are the writer's prepared statements, on its own connection.
type stmts struct {
	task    *sql.Stmt
	attempt *sql.Stmt
}

func prepare(ctx context.Context, conn *sql.Conn) (*stmts, error) {
	t, err := conn.PrepareContext(ctx, `
INSERT INTO tasks (id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, exit_code,
	stdout, stderr, stdout_cut, stderr_cut, error, idempotency_key,
	created_at, assigned_at, started_at, finished_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
	cmd = excluded.cmd, status = excluded.status, attempts = excluded.attempts,
	max_attempts = excluded.max_attempts, timeout_ns = excluded.timeout_ns,
	worker_id = excluded.worker_id, exit_code = excluded.exit_code,
	stdout = excluded.stdout, stderr = excluded.stderr,
	stdout_cut = excluded.stdout_cut, stderr_cut = excluded.stderr_cut,
	error = excluded.error, idempotency_key = excluded.idempotency_key,
	created_at = excluded.created_at, assigned_at = excluded.assigned_at,
	started_at = excluded.started_at, finished_at = excluded.finished_at`)
	if err != nil {
		return nil, fmt.Errorf("prepare task upsert: %w", err)
	}
	a, err := conn.PrepareContext(ctx, `
INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id, n) DO UPDATE SET
	worker_id = excluded.worker_id, outcome = excluded.outcome, exit_code = excluded.exit_code,
	error = excluded.error, assigned_at = excluded.assigned_at, finished_at = excluded.finished_at,
	duplicate = excluded.duplicate`)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("prepare attempt upsert: %w", err)
	}
	return &stmts{task: t, attempt: a}, nil
}

func (st *stmts) close() error {
	return errors.Join(st.task.Close(), st.attempt.Close())
}

// apply runs ws on the writer's connection, inside the transaction inTx
// opened there.
func (st *stmts) apply(ctx context.Context, ws []Write) error {
	taskStmt, attemptStmt := st.task, st.attempt
	for _, w := range ws {
		if t := w.Task; t != nil {
			var key any // NULL, so that the unique index ignores tasks without a key
			if t.IdempotencyKey != "" {
				key = t.IdempotencyKey
			}
			if _, err := taskStmt.ExecContext(ctx,
				t.ID, t.Cmd, string(t.Status), t.Attempts, t.MaxAttempts, int64(t.Timeout), t.WorkerID, intArg(t.ExitCode),
				t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error, key,
				nanos(t.CreatedAt), nanos(t.AssignedAt), nanos(t.StartedAt), nanos(t.FinishedAt),
			); err != nil {
				return writeError("task "+t.ID, err)
			}
		}
		if a := w.Attempt; a != nil {
			if _, err := attemptStmt.ExecContext(ctx,
				a.TaskID, a.N, a.WorkerID, string(a.Outcome), intArg(a.ExitCode), a.Error,
				nanos(a.AssignedAt), nanos(a.FinishedAt), a.Duplicate,
			); err != nil {
				return writeError(fmt.Sprintf("attempt %d of task %s", a.N, a.TaskID), err)
			}
		}
	}
	return nil
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
