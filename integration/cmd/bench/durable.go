package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	_ "modernc.org/sqlite" // the master's SQLite
)

// The durable handler: the minimal handler, but it answers 202 only once
// the request's body is committed to SQLite with the master's durability
// settings (WAL, synchronous=FULL, one fsync per group commit), so that
// its rate is what any submission on disk before its answer can reach on
// this machine: no JSON, no checks, no dispatcher, a table with no index
// but its rowid. The master's submit rate over it (accepted_vs_durable_c64)
// is the share of that ceiling the master reaches.
//
// The row handler is the same with the master's row: it writes each body
// into a database the master made (its schema and indexes, no task), as
// the master writes a submission (a new UUIDv7 text ID and the columns the
// store binds for it), and does nothing else. Its rate is the ceiling of a
// submission that keeps what the master keeps of a task, before any JSON,
// check, dispatcher step, event or metric.

// durableDBEnv names the database file of the durable and row handlers.
const durableDBEnv = "ROUNDHOUSE_BENCH_DB"

// durableTable is the durable handler's table; a task row is the master's.
const (
	durableTable  = `CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, body BLOB NOT NULL)`
	durableInsert = `INSERT INTO tasks (body) VALUES (?)`
	// rowInsert is the master's submission (taskSubmitSQL in
	// master/internal/store): the columns a delivery, a result, a schedule,
	// labels or a retry policy set hold their initial values. A column the
	// master adds without a default makes it fail, and the bench with it.
	rowInsert = `INSERT INTO tasks (id, cmd, status, attempts, max_attempts, timeout_ns, worker_id, exit_code,
	stdout, stderr, stdout_cut, stderr_cut, error, idempotency_key,
	created_at, assigned_at, started_at, finished_at,
	priority, requires, run_at, retry_on, backoff_ns, max_backoff_ns, attempt_base)
VALUES (?, ?, 'queued', 0, 3, ?, '', NULL, '', '', 0, 0, '', NULL, ?, 0, 0, 0, 3, '', 0, '', 0, 0, 0)`
)

// serveDurable serves as serveMinimal does, with the commit before the
// answer: of the body (the durable handler) or of a task row holding it
// (the row handler, row true).
func serveDurable(row bool) error {
	path := os.Getenv(durableDBEnv)
	if path == "" {
		return fmt.Errorf("%s is not set", durableDBEnv)
	}
	// SQLite's own checkpoints, inside a commit every 1000 pages, cost
	// little here: an append-only table of small rows rewrites the same few
	// pages, and each is copied once.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		return err
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx) // the writer's, for its whole life
	if err != nil {
		return err
	}
	insert := durableInsert
	if row {
		insert = rowInsert
	} else if _, err := conn.ExecContext(ctx, durableTable); err != nil {
		return err
	}
	ins, err := conn.PrepareContext(ctx, insert)
	if err != nil {
		return err
	}
	w := &groupWriter{wake: make(chan struct{}, 1), row: row}
	go w.run(conn, ins)
	return serve(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = w.write(body)
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		answer(rw)
	})
}

// groupWriter commits the bodies queued while the previous commit ran in
// one transaction, as the master's store does.
type groupWriter struct {
	mu    sync.Mutex
	queue []pendingWrite
	wake  chan struct{} // cap 1
	row   bool          // write task rows (rowInsert), not bodies
}

type pendingWrite struct {
	body []byte
	done chan error
}

// write queues body and waits for its commit.
func (w *groupWriter) write(body []byte) error {
	p := pendingWrite{body: body, done: make(chan error, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return <-p.done
}

// run is the writer goroutine; it lives as long as the process.
func (w *groupWriter) run(conn *sql.Conn, ins *sql.Stmt) {
	for range w.wake {
		for {
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			err := w.commit(conn, ins, batch)
			for _, p := range batch {
				p.done <- err
			}
		}
	}
}

// commit says BEGIN and COMMIT on the writer's connection, as the store
// does, so that the prepared insert is not prepared again per transaction.
func (w *groupWriter) commit(conn *sql.Conn, ins *sql.Stmt, batch []pendingWrite) error {
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return err
	}
	for _, p := range batch {
		args := []any{p.body}
		if w.row {
			// As the master makes a task: its ID (newTaskID), the command,
			// the default timeout (1h) and the time of the submission.
			id, err := uuid.NewV7()
			if err != nil {
				_, _ = conn.ExecContext(ctx, "ROLLBACK")
				return err
			}
			args = []any{id.String(), string(p.body), int64(time.Hour), time.Now().UnixNano()}
		}
		if _, err := ins.ExecContext(ctx, args...); err != nil {
			_, _ = conn.ExecContext(ctx, "ROLLBACK")
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return nil
}
