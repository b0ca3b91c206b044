package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	_ "modernc.org/sqlite" // the master's SQLite
)

// The durable handler: the minimal handler, but it answers 202 only once
// the request's body is committed to SQLite with the master's durability
// settings (WAL, synchronous=FULL, one fsync per group commit), so that
// its rate is what any submission on disk before its answer can reach on
// this machine: no JSON, no checks, no dispatcher, a table with no index
// but its rowid. The master's submit rate over it (accepted_vs_durable_c64)
// is the share of that ceiling the master reaches.

// durableDBEnv names the database file of the durable handler.
const durableDBEnv = "ROUNDHOUSE_BENCH_DB"

// serveDurable serves as serveMinimal does, with the commit before the
// answer.
func serveDurable() error {
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
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, body BLOB NOT NULL)`); err != nil {
		return err
	}
	ins, err := conn.PrepareContext(ctx, `INSERT INTO tasks (body) VALUES (?)`)
	if err != nil {
		return err
	}
	w := &groupWriter{wake: make(chan struct{}, 1)}
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
			err := commit(conn, ins, batch)
			for _, p := range batch {
				p.done <- err
			}
		}
	}
}

// commit says BEGIN and COMMIT on the writer's connection, as the store
// does, so that the prepared insert is not prepared again per transaction.
func commit(conn *sql.Conn, ins *sql.Stmt, batch []pendingWrite) error {
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return err
	}
	for _, p := range batch {
		if _, err := ins.ExecContext(ctx, p.body); err != nil {
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
