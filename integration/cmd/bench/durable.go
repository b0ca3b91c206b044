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
	ctx := context.Background()
	conn, err := openDurable()
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
	w := newGroupWriter(conn)
	go w.run()
	return serve(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = w.write(func(ctx context.Context) error {
				args := []any{body}
				if row {
					// As the master makes a task: its ID (newTaskID), the
					// command, the default timeout (1h) and the time of the
					// submission.
					id, err := uuid.NewV7()
					if err != nil {
						return err
					}
					args = []any{id.String(), string(body), int64(time.Hour), time.Now().UnixNano()}
				}
				_, err := ins.ExecContext(ctx, args...)
				return err
			})
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		answer(rw)
	})
}

// openDurable opens the SQLite database that durableDBEnv names with the
// master's durability (WAL, synchronous=FULL) and returns the connection of
// its one writer, for the process's whole life.
func openDurable() (*sql.Conn, error) {
	path := os.Getenv(durableDBEnv)
	if path == "" {
		return nil, fmt.Errorf("%s is not set", durableDBEnv)
	}
	// SQLite's own checkpoints, inside a commit every 1000 pages, cost
	// little here: an append-only table of small rows rewrites the same few
	// pages, and each is copied once.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, err
	}
	return db.Conn(context.Background())
}

// groupWriter runs the changes queued while the previous commit ran in
// one transaction, as the master's store does.
type groupWriter struct {
	conn  *sql.Conn // the writer's, for its whole life
	mu    sync.Mutex
	queue []pendingWrite
	wake  chan struct{} // cap 1
}

// pendingWrite is one queued change: exec runs it inside the transaction;
// done gets the outcome of the commit, from the writer goroutine, and must
// not block.
type pendingWrite struct {
	exec func(ctx context.Context) error
	done func(error)
}

func newGroupWriter(conn *sql.Conn) *groupWriter {
	return &groupWriter{conn: conn, wake: make(chan struct{}, 1)}
}

// write queues exec and waits for its commit.
func (w *groupWriter) write(exec func(ctx context.Context) error) error {
	done := make(chan error, 1)
	w.enqueue(pendingWrite{exec: exec, done: func(err error) { done <- err }})
	return <-done
}

// enqueue queues p and returns at once.
func (w *groupWriter) enqueue(p pendingWrite) {
	w.mu.Lock()
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine; it lives as long as the process.
func (w *groupWriter) run() {
	for range w.wake {
		for {
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			err := w.commit(batch)
			for _, p := range batch {
				p.done(err)
			}
		}
	}
}

// commit says BEGIN and COMMIT on the writer's connection, as the store
// does, so that prepared statements are not prepared again per transaction.
func (w *groupWriter) commit(batch []pendingWrite) error {
	ctx := context.Background()
	if _, err := w.conn.ExecContext(ctx, "BEGIN"); err != nil {
		return err
	}
	for _, p := range batch {
		if err := p.exec(ctx); err != nil {
			_, _ = w.conn.ExecContext(ctx, "ROLLBACK")
			return err
		}
	}
	if _, err := w.conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = w.conn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return nil
}
