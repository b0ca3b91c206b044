package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// finishedQuery selects the final tasks finished before a cutoff, oldest
// first. Its status term is the tasks_finished index's WHERE, word for word;
// it must name every live status, because a live task's finished_at is 0,
// before any cutoff.
const finishedQuery = `SELECT id FROM tasks
WHERE status != 'scheduled' AND status != 'queued' AND status != 'running' AND finished_at < ?
ORDER BY finished_at LIMIT ?`

// DeleteFinished deletes up to limit final tasks (succeeded, failed,
// timed_out, canceled) that finished before before, oldest first, with
// their attempts, and returns how many tasks it deleted.
//
// It runs on the writer, in order with Apply, so it never competes with
// the writer for the lock. Unlike a write it is tried once: a failure is
// returned, and the caller's next round tries again. If ctx ends first,
// DeleteFinished returns ctx.Err() and the delete may still happen.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit < 1 {
		return 0, fmt.Errorf("store: delete finished: limit %d is below 1: %w", limit, task.ErrInvalid)
	}
	cutoff := nanos(before)
	var deleted int // written by the writer before runOnce returns nil
	err := s.runOnce(ctx, "delete finished", limit, func(ctx context.Context) error {
		n, err := s.deleteFinished(ctx, cutoff, limit)
		deleted = n
		return err
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// deleteFinished runs on the writer, inside its transaction.
func (s *Store) deleteFinished(ctx context.Context, cutoff int64, limit int) (int, error) {
	rows, err := s.conn.QueryContext(ctx, finishedQuery, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("store: delete finished: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: delete finished: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("store: delete finished: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// One JSON array parameter rather than limit placeholders: SQLite caps
	// the number of parameters, and the statement text stays the same.
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, fmt.Errorf("store: delete finished: %w", err)
	}
	// Attempts first: they reference their task.
	if _, err := s.conn.ExecContext(ctx, `DELETE FROM attempts WHERE task_id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
		return 0, fmt.Errorf("store: delete finished attempts: %w", err)
	}
	res, err := s.conn.ExecContext(ctx, `DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))`, string(list))
	if err != nil {
		return 0, fmt.Errorf("store: delete finished tasks: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: delete finished tasks: %w", err)
	}
	return int(n), nil
}
