// Package store persists tasks and their attempts in SQLite; it holds the
// only SQL in the repository.
//
// Reads go straight to the database. Writes go through Apply, which queues
// them for one writer goroutine; it commits whatever is queued in a single
// transaction (group commit), so under load many callers share one fsync.
// A write that fails for a reason that may pass (a lock another process
// holds, a full disk, an I/O error) is retried until it commits, with the
// writes behind it waiting in order; WriteErr reports it meanwhile.
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
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	_ "modernc.org/sqlite" // registers the "sqlite" driver; pure Go, so the master stays CGO_ENABLED=0
)

// maxOpenConns bounds the pool: one connection is held by the writer for
// its whole life, the rest serve concurrent readers, which WAL lets run
// beside the writer.
const maxOpenConns = 8

// Defaults of the Options.
const (
	defaultBusyTimeout = 5 * time.Second
	defaultBackoffMin  = 50 * time.Millisecond
	defaultBackoffMax  = 5 * time.Second
)

// Option changes a default of Open.
type Option func(*options)

type options struct {
	busyTimeout            time.Duration
	backoffMin, backoffMax time.Duration
	checkpointEvery        time.Duration
	restartFrames          int
}

// withCheckpoints sets the checkpointer's interval and the WAL length that
// makes it start the WAL over, for tests.
func withCheckpoints(every time.Duration, restartFrames int) Option {
	return func(o *options) { o.checkpointEvery, o.restartFrames = every, restartFrames }
}

// WithBusyTimeout sets how long one statement waits for a write lock that
// another connection or process holds before it fails with SQLITE_BUSY
// (default 5s). The writer retries a busy write, so this bounds how long
// Close may wait on one attempt rather than whether the write lands.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = max(d, 0) }
}

// WithRetryBackoff sets the wait between tries of a failing write: it
// starts at min and doubles up to max (defaults 50ms and 5s). A min <= 0
// keeps the default; a max below min is raised to min.
func WithRetryBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) {
		if minWait > 0 {
			o.backoffMin = minWait
		}
		o.backoffMax = maxWait
	}
}

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
	// The checkpointer asks the writer to finish a checkpoint (restartAsk,
	// unbuffered; true: wait for the readers in the WAL) and waits for its
	// answer (restartDone, cap 1).
	restartAsk      chan bool
	restartDone     chan struct{}
	checkpointEvery time.Duration
	restartFrames   int
	stuckAt         int // the WAL length that has the writer wait for readers (stuckFactor); the checkpointer's

	// Owned by the writer goroutine once Open returns.
	conn  *sql.Conn
	stmts *stmts
	fail  *failing // nil while writes succeed

	backoffMin, backoffMax time.Duration
	busyTimeout            time.Duration // the connections' (dsn), which finishCheckpoint lowers for a while

	// writeErr is what WriteErr reports: a copy of fail's state, published
	// by the writer, nil while writes succeed. An atomic because callers
	// read it on every submission.
	writeErr atomic.Pointer[writeFailure]

	commits atomic.Int64 // transactions the writer committed
	writes  atomic.Int64 // Write values those transactions committed
}

// Counts are the writer's totals since Open, for the metrics.
type Counts struct {
	Commits int64 // transactions committed
	Writes  int64 // Write values they committed (a task row, an attempt row or both)
}

// Counts returns the writer's totals so far. Writes / Commits is the size
// of the group commits.
func (s *Store) Counts() Counts {
	return Counts{Commits: s.commits.Load(), Writes: s.writes.Load()}
}

// Open opens or creates the database at path, applies pending migrations,
// and starts the writer goroutine. A nil log discards.
func Open(path string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store")
	o := options{
		busyTimeout: defaultBusyTimeout, backoffMin: defaultBackoffMin, backoffMax: defaultBackoffMax,
		checkpointEvery: defaultCheckpointInterval, restartFrames: defaultRestartFrames,
	}
	for _, opt := range opts {
		opt(&o)
	}
	o.backoffMax = max(o.backoffMax, o.backoffMin)
	dsn, err := dsn(path, o.busyTimeout)
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

		backoffMin:  o.backoffMin,
		backoffMax:  o.backoffMax,
		busyTimeout: o.busyTimeout,

		checkpointDone:  make(chan struct{}),
		restartAsk:      make(chan bool),
		restartDone:     make(chan struct{}, 1),
		checkpointEvery: o.checkpointEvery,
		restartFrames:   o.restartFrames,
	}
	go s.run()
	go s.checkpoint()
	return s, nil
}

// dsn builds a file: URI carrying the pragmas. They go in the DSN, not in
// an Exec after Open, because database/sql opens connections on demand and
// each one must get them.
func dsn(path string, busyTimeout time.Duration) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL: a commit is fsynced before Apply reports it, so a task the API
	// accepted survives a power cut, not only a crash of the process.
	q.Add("_pragma", "synchronous(FULL)")
	// Checkpoints run beside the writer (checkpoint.go), not inside commits.
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walSizeLimit))
	q.Add("_pragma", "foreign_keys(ON)")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String(), nil
}

// Close flushes queued writes, stops the writer and closes the database.
// Calls after the first return an error wrapping task.ErrClosed.
//
// Close returns in bounded time even while writes fail: the writer makes
// one last try of what is queued, and the requests it cannot commit are
// answered with an error wrapping task.ErrUnavailable. The bound is the
// try in progress when Close is called plus the last one, each at most
// about two busy timeouts (a batch, then its first request alone).
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
