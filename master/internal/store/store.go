// Package store persists tasks and their attempts in SQLite; it holds the
// only SQL in the repository.
//
// Reads go straight to the database. Writes go through Apply, which queues
// them for one writer goroutine; it commits whatever is queued in a single
// transaction (group commit), so under load many callers share one fsync.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	_ "modernc.org/sqlite" // registers the "sqlite" driver; pure Go, so the master stays CGO_ENABLED=0
)

// maxOpenConns bounds the pool: one connection is held by the writer for
// its whole life, the rest serve concurrent readers, which WAL lets run
// beside the writer.
const maxOpenConns = 8

// Store is the master's database. Its methods are safe for concurrent use.
type Store struct {
	db  *sql.DB
	log *slog.Logger

	mu     sync.Mutex // protects queue and closed
	queue  []*request
	closed bool

	wake chan struct{} // cap 1; Apply nudges the writer
	stop chan struct{} // closed by Close: drain the queue, then exit
	done chan struct{} // closed by the writer when it has exited

	checkpointDone chan struct{} // closed by the checkpointer when it has exited

	// Owned by the writer goroutine once Open returns.
	conn  *sql.Conn
	stmts *stmts

	commits atomic.Int64 // transactions the writer committed; tests read it
}

// Open opens or creates the database at path, applies pending migrations,
// and starts the writer goroutine. A nil log discards.
func Open(path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store")
	dsn, err := dsn(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxOpenConns)

	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	applied, err := migrate(ctx, conn)
	if err == nil && applied > 0 {
		log.Info("migrated", "path", path, "applied", applied, "version", len(migrations))
	}
	var st *stmts
	if err == nil {
		st, err = prepare(ctx, conn)
	}
	if err != nil {
		conn.Close()
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	s := &Store{
		db:    db,
		log:   log,
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		conn:  conn,
		stmts: st,

		checkpointDone: make(chan struct{}),
	}
	go s.run()
	go s.checkpoint()
	return s, nil
}

// dsn builds a file: URI carrying the pragmas. They go in the DSN, not in
// an Exec after Open, because database/sql opens connections on demand and
// each one must get them.
func dsn(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL: a commit is fsynced before Apply reports it, so a task the API
	// accepted survives a power cut, not only a crash of the process.
	q.Add("_pragma", "synchronous(FULL)")
	// Checkpoints run beside the writer (checkpoint.go), not inside commits.
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Add("_pragma", "foreign_keys(ON)")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String(), nil
}

// Close flushes queued writes, stops the writer and closes the database.
// Calls after the first return an error wrapping task.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("store: close: %w", task.ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()

	close(s.stop)
	<-s.done
	<-s.checkpointDone
	return errors.Join(s.stmts.close(), s.conn.Close(), s.db.Close())
}
