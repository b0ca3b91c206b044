package store

import (
	"context"
	"time"
)

// checkpointInterval is how often the checkpointer copies the WAL into the
// database file. SQLite would otherwise do it inside a commit, every 1000
// pages, and that commit (and every Apply waiting on it) would wait for the
// copy and an extra fsync of the database file: the tail of the submit
// latency.
const checkpointInterval = time.Second

// checkpoint is the checkpointer goroutine, started by Open and stopped by
// Close. It runs PASSIVE checkpoints on a pooled connection, beside the
// writer: they never wait for the writer or for readers, and the writer
// never waits for them. SQLite restarts the WAL from its beginning once a
// checkpoint has copied all of it, so the WAL stays small.
func (s *Store) checkpoint() {
	defer close(s.checkpointDone)
	tick := time.NewTicker(checkpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			s.log.Warn("checkpoint failed; the next one will retry", "err", err)
		}
		cancel()
	}
}
