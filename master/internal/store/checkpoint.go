package store

import (
	"context"
	"database/sql"
	"errors"
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

// stuckFactor: a WAL past stuckFactor times restartFrames has missed its
// restarts, each time because a reader was in it when the writer's next
// transaction began (readers that never all leave at once, as clients that
// poll without a pause, keep it growing for good). The writer's part of the
// checkpoint then waits for those readers (RESTART), up to restartWait:
// the readers that begin meanwhile read the database file only, so they
// do not keep it waiting. Should a reader stay past that, the next wait
// is only once the WAL has doubled (stuckAt).
const stuckFactor = 4

// restartWait bounds the writer's wait for the readers in a stuck WAL, in
// place of the busy timeout meant for writes: a reader that stays (a
// backup, a shell left in a transaction) then costs the writes at most
// this once per round, and the master's own readers take milliseconds.
const restartWait = 200 * time.Millisecond

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
// reader is still in it, in which case the next round tries again. Once
// the WAL has outgrown stuckFactor rounds, the writer waits for such
// readers to leave, and starts it over itself.
func (s *Store) checkpointRound() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	frames, err := passiveCheckpoint(ctx, s.db)
	if err != nil {
		s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		return true
	}
	if frames < stuckFactor*s.restartFrames {
		s.stuckAt = stuckFactor * s.restartFrames // not stuck, or started over since
	}
	if frames < s.restartFrames {
		return true
	}
	if _, err := passiveCheckpoint(ctx, s.db); err != nil {
		s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		return true
	}
	wait := frames >= s.stuckAt
	if wait {
		s.stuckAt = 2 * frames
	}
	select {
	case s.restartAsk <- wait:
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
// then the database file's), about once per interval under load. With
// waitReaders (the WAL missed its restarts: stuckFactor) it is a RESTART
// checkpoint, which also waits, up to restartWait, for the readers still
// in the WAL, and starts it over.
func (s *Store) finishCheckpoint(waitReaders bool) {
	if s.fail == nil { // a failing disk fails this too; the writes come first
		var err error
		if waitReaders {
			err = s.restartCheckpoint(context.Background())
		} else {
			_, err = passiveCheckpoint(context.Background(), s.conn)
		}
		if err != nil {
			s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		}
	}
	s.restartDone <- struct{}{}
}

// restartCheckpoint runs a RESTART checkpoint on the writer's connection,
// which waits through the busy handler: for restartWait at most, and then
// the busy timeout is the writes' again.
func (s *Store) restartCheckpoint(ctx context.Context) error {
	if _, err := s.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", min(restartWait, s.busyTimeout).Milliseconds())); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	_, err := walCheckpoint(ctx, s.conn, "RESTART")
	if _, rerr := s.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", s.busyTimeout.Milliseconds())); rerr != nil {
		err = errors.Join(err, fmt.Errorf("store: checkpoint: restoring the busy timeout: %w", rerr))
	}
	return err
}

// queryRower is a *sql.DB or a *sql.Conn.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// passiveCheckpoint runs a PASSIVE checkpoint on q and returns the WAL's
// length in pages when it ran.
func passiveCheckpoint(ctx context.Context, q queryRower) (int, error) {
	return walCheckpoint(ctx, q, "PASSIVE")
}

// walCheckpoint runs a checkpoint of mode (PASSIVE or RESTART) on q and
// returns the WAL's length in pages when it ran.
func walCheckpoint(ctx context.Context, q queryRower, mode string) (int, error) {
	var busy, frames, copied int
	if err := q.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &copied); err != nil {
		return 0, fmt.Errorf("store: checkpoint: %w", err)
	}
	return frames, nil
}
