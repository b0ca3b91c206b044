package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Checkpoint defaults.
const (
	// defaultCheckpointInterval is how often the checkpointer copies the
	// WAL into the database file. SQLite would otherwise do it inside a
	// commit, every 1000 pages, and that commit (and every Apply waiting on
	// it) would wait for the copy and an extra fsync of the database file:
	// the tail of the submit latency.
	defaultCheckpointInterval = time.Second
	// defaultRestartFrames is the length of WAL (in pages) past which the
	// checkpointer has the writer finish its copy, so that the WAL starts
	// over: SQLite's own automatic checkpoint threshold.
	defaultRestartFrames = 1000
)

// walSizeLimit is journal_size_limit: when the WAL starts over, SQLite
// truncates a file grown past this back to it, so that a burst does not
// keep its disk space for good. Below it, the file's blocks are reused
// rather than allocated again.
const walSizeLimit = 64 << 20

// checkpoint is the checkpointer goroutine, started by Open and stopped by
// Close. Every interval it runs a checkpointRound.
func (s *Store) checkpoint() {
	defer close(s.checkpointDone)
	tick := time.NewTicker(s.checkpointEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if !s.checkpointRound() {
			return
		}
	}
}

// checkpointRound copies the WAL into the database file, and starts the
// WAL over once it has grown past restartFrames. It returns false when
// Close stopped it.
//
// The copy is a PASSIVE checkpoint on a pooled connection, beside the
// writer: it never waits for the writer or for readers, and the writer
// never waits for it. But SQLite starts the WAL over only when a write
// transaction begins with all of it copied, and under steady writes that
// never happens: every commit appends while the copy runs, so the WAL grew
// without bound (700 MB for a 14 MB database in a throughput run of 20,000
// tasks), and with it the disk the lab uses, every commit's file extension
// and a restart's recovery. So when the WAL is long, a second pass copies
// what commits added during the first, and then the writer, between two
// transactions, copies the few frames left (finishCheckpoint): its next
// transaction finds the whole WAL copied and starts it over, unless a
// reader is still in it, in which case the next round tries again.
func (s *Store) checkpointRound() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	frames, err := passiveCheckpoint(ctx, s.db)
	if err != nil {
		s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		return true
	}
	if frames < s.restartFrames {
		return true
	}
	if _, err := passiveCheckpoint(ctx, s.db); err != nil {
		s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		return true
	}
	select {
	case s.restartAsk <- struct{}{}:
	case <-s.stop:
		return false
	}
	select {
	case <-s.restartDone:
		return true
	case <-s.stop:
		return false
	}
}

// finishCheckpoint is the writer's part of a checkpointRound: between two
// transactions, no commit can add to the WAL while it copies the rest.
// It costs the writer the last frames' copy and two fsyncs (the WAL's,
// then the database file's), about once per interval under load.
func (s *Store) finishCheckpoint() {
	if s.fail == nil { // a failing disk fails this too; the writes come first
		if _, err := passiveCheckpoint(context.Background(), s.conn); err != nil {
			s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		}
	}
	s.restartDone <- struct{}{}
}

// queryRower is a *sql.DB or a *sql.Conn.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// passiveCheckpoint runs a PASSIVE checkpoint on q and returns the WAL's
// length in pages when it ran.
func passiveCheckpoint(ctx context.Context, q queryRower) (int, error) {
	var busy, frames, copied int
	if err := q.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
		return 0, fmt.Errorf("store: checkpoint: %w", err)
	}
	return frames, nil
}
