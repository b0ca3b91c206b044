package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
)

// ReserveSeq returns the start of a range of span numbers of the sequence
// name, at least atLeast, that no earlier ReserveSeq of name, in this
// process or another on this database, returned any part of: it is the
// larger of atLeast and the end of the last range reserved. The range is
// on disk before ReserveSeq returns, so a process that crashes later still
// never has its numbers reused.
//
// It runs on the writer, in order with Apply, and like DeleteFinished it
// is tried once: a failure is returned.
func (s *Store) ReserveSeq(ctx context.Context, name string, atLeast, span uint64) (uint64, error) {
	if atLeast > math.MaxInt64-span {
		return 0, fmt.Errorf("store: reserve %s: %d + %d is past what SQLite keeps", name, atLeast, span)
	}
	var start uint64 // written by the writer before runOnce returns nil
	err := s.runOnce(ctx, "reserve "+name, 1, func(ctx context.Context) error {
		var next int64
		err := s.conn.QueryRowContext(ctx, `SELECT next FROM seqs WHERE name = ?`, name).Scan(&next)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("store: reserve %s: %w", name, err)
		}
		start = max(atLeast, uint64(max(next, 0)))
		if start > math.MaxInt64-span {
			return fmt.Errorf("store: reserve %s: %d + %d is past what SQLite keeps", name, start, span)
		}
		_, err = s.conn.ExecContext(ctx, `INSERT INTO seqs (name, next) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET next = excluded.next`, name, int64(start+span))
		if err != nil {
			return fmt.Errorf("store: reserve %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return start, nil
}
