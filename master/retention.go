package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
)

// retentionBatch is the most tasks one delete removes: one writer
// transaction of about this many tasks and their attempts, short enough
// that the writes queued behind it barely notice.
const retentionBatch = 1000

// retentionInterval is how often retention runs: a tenth of the retention,
// so a finished task outlives it by at most about 10%; but at least a
// minute apart, since a round costs a query even when nothing is due, and
// at most ten minutes, so that a long retention deletes in many small
// rounds rather than a large one every few hours.
func retentionInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Minute), 10*time.Minute)
}

// runRetention deletes the tasks that finished more than retention ago,
// once at start and then every retentionInterval, until ctx ends. It is
// owned by serve.
func runRetention(ctx context.Context, st *store.Store, retention time.Duration, log *slog.Logger) {
	log = log.With("component", "retention")
	tick := time.NewTicker(retentionInterval(retention))
	defer tick.Stop()
	for {
		retainOnce(ctx, st, retention, log)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// retainOnce deletes, in batches, the tasks that finished before now less
// retention, and returns how many it deleted.
func retainOnce(ctx context.Context, st *store.Store, retention time.Duration, log *slog.Logger) int {
	// Wall time, not the dispatcher's clock: finished_at is a wall-clock
	// timestamp, and the cutoff is compared with it.
	cutoff := time.Now().Add(-retention)
	total := 0
	for {
		n, err := st.DeleteFinished(ctx, cutoff, retentionBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("deleting finished tasks failed; the next round retries", "deleted", total, "err", err)
			}
			break
		}
		if n < retentionBatch {
			break
		}
	}
	if total > 0 {
		log.Info("deleted finished tasks", "tasks", total, "finished_before", cutoff.UTC())
	}
	return total
}
