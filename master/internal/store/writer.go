package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// maxBatch bounds the writes committed in one transaction, so that one
// commit never holds the write lock for long. A single Apply call larger
// than this still goes in one transaction.
const maxBatch = 1000

// Write is one change: a task row (by ID), and optionally one attempt row
// (by TaskID and N). Task may be nil when only an attempt changes. An
// attempt's task row must already be stored, or come in the same or an
// earlier Write. Kind and AttemptKind say how much of each row the store
// must write; whatever they say, the row ends up as given.
type Write struct {
	Task    *task.Task
	Attempt *task.Attempt

	Kind        Kind // how Task is written
	AttemptKind Kind // how Attempt is written
}

// Kind is what the caller knows of a row it writes, which lets the store
// write less of it. Every UPDATE of a column rewrites each index holding
// that column, and the tasks table has six, so a task's later changes set
// only the columns that can change after its submission.
type Kind uint8

const (
	// Upsert writes the whole row, stored before or not: for a caller
	// that does not know.
	Upsert Kind = iota
	// Insert writes a row that is new: a task's submission, a delivery's
	// attempt. A task's idempotency key taken already is a conflict as
	// for Upsert. An attempt is upserted all the same: a new row costs
	// the same, and a delivery stored twice must not fail for good.
	Insert
	// Update writes a row stored before, setting only its columns that
	// change after submission (for a task, all but ID, Cmd, MaxAttempts,
	// Timeout, IdempotencyKey, CreatedAt, Priority, Requires, RetryOn,
	// Backoff and MaxBackoff; for an attempt, all but its WorkerID and
	// AssignedAt). Those must be as stored. A row that is not there (deleted
	// by retention since the caller read it) is upserted whole instead, so
	// that no write is ever lost.
	Update
	// IfRunning, for an attempt only, records its end (Outcome, Error,
	// FinishedAt) only if the stored attempt is still running on its
	// WorkerID, and writes nothing if it is not, or is not there (another
	// worker's delivery of that number is not this one): for a delivery the master
	// gives up after its task left memory, whose result may have been
	// recorded since, or its task deleted by retention.
	IfRunning
	// IfAbsent, for an attempt only, writes the whole row only if it is not
	// there, and leaves a stored one as it is: for a history read off disk
	// without the lock and put back after retention may have deleted it,
	// where a stored row is as new as the one read, or newer (a report, or
	// an end, recorded since).
	IfAbsent
)

// request is one Apply or runOnce call waiting for the writer.
type request struct {
	ws []Write // copies, owned by the writer once queued
	// once, when set, is runOnce's (a DeleteFinished or a ReserveSeq): it
	// runs in the writer's transaction like ws, but a failure of any kind
	// is answered rather than retried (the next retention round retries a
	// delete; a reservation fails the start-up that asked for it).
	once   func(ctx context.Context) error
	weight int        // counted against maxBatch
	done   chan error // cap 1; receives exactly one value
}

// runOnce runs fn in the writer's transaction, in order with Apply, and
// waits for its commit: a DeleteFinished or a ReserveSeq. Unlike a write it
// is tried once, its failure returned. If ctx ends first, runOnce returns
// ctx.Err() and fn may still run. what names the call in its errors;
// weight counts against maxBatch.
func (s *Store) runOnce(ctx context.Context, what string, weight int, fn func(ctx context.Context) error) error {
	r := &request{once: fn, weight: weight, done: make(chan error, 1)}
	if err := s.enqueue(r); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// barrier reports whether r changes nothing: a Flush.
func (r *request) barrier() bool { return len(r.ws) == 0 && r.once == nil }

// Apply queues writes for the writer goroutine and returns at once; it
// never waits for the disk. Writes are applied in the order the calls
// entered Apply, and the writes of one call are committed together or not
// at all. The returned channel receives exactly one value: nil once all
// the writes are committed to disk, or the error.
//
// Only a constraint violation fails a write for good: a unique-key
// violation (a second task with the same idempotency key) wraps
// task.ErrConflict. Any other failure (SQLITE_BUSY, a full disk, an I/O
// error) is retried, with backoff, until the write commits, and the calls
// queued behind it wait for it so that the order holds; WriteErr says so
// meanwhile. A write still failing when Close gives up on it gets an error
// wrapping task.ErrUnavailable; after Close the error wraps task.ErrClosed.
//
// Apply copies what ws points to, so the caller may change its tasks once
// Apply returns. A call with an attempt numbered below 1 is refused whole,
// its error wrapping task.ErrInvalid.
func (s *Store) Apply(ws ...Write) <-chan error {
	for _, w := range ws {
		if a := w.Attempt; a != nil && a.N < 1 {
			// Numbered from 1 (task.Attempt.N): last_n 0 is a row's "no
			// attempt". A caller's bug, refused before anything is written.
			done := make(chan error, 1)
			done <- fmt.Errorf("store: apply: attempt %d of task %s: %w: attempts are numbered from 1", a.N, a.TaskID, task.ErrInvalid)
			return done
		}
	}
	r := &request{ws: copyWrites(ws), weight: len(ws), done: make(chan error, 1)}
	if err := s.enqueue(r); err != nil {
		r.done <- fmt.Errorf("store: apply: %w", err)
	}
	return r.done
}

// enqueue queues r for the writer, or returns task.ErrClosed.
func (s *Store) enqueue(r *request) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return task.ErrClosed
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()

	select {
	case s.wake <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
	return nil
}

func copyWrites(ws []Write) []Write {
	out := make([]Write, len(ws))
	for i, w := range ws {
		if w.Task != nil {
			t := *w.Task
			t.ExitCode = copyInt(t.ExitCode)
			// The writer reads these after Apply returns, while the
			// caller may change its own.
			t.Requires = maps.Clone(t.Requires)
			t.RetryOn = slices.Clone(t.RetryOn)
			t.History = nil // not stored through Apply
			out[i].Task = &t
		}
		if w.Attempt != nil {
			a := *w.Attempt
			a.ExitCode = copyInt(a.ExitCode)
			out[i].Attempt = &a
		}
		out[i].Kind, out[i].AttemptKind = w.Kind, w.AttemptKind
	}
	return out
}

func copyInt(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Flush waits until every write queued before the call has been committed
// (or has failed for good, in which case its own Apply channel says so).
// It waits through retries of failing writes; once Close gives up on them
// it returns an error wrapping task.ErrUnavailable.
func (s *Store) Flush(ctx context.Context) error {
	// An empty Apply is a barrier: the writer answers it only after
	// everything queued ahead of it.
	select {
	case err := <-s.Apply():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the writer goroutine, started by Open and stopped by Close. It
// alone uses s.conn, s.stmts and s.fail. Between transactions it also
// finishes the checkpoints the checkpointer asks it to (checkpoint.go).
func (s *Store) run() {
	defer close(s.done)
	final := false // Close was called: make one last try, then exit
	for {
		if s.fail != nil && s.fail.held {
			s.fail.held = false
			if !final {
				t := time.NewTimer(s.fail.jittered())
				select {
				case <-t.C:
				case <-s.stop:
					t.Stop()
				}
			}
		}
		// Close set closed before closing stop, so once stop is closed
		// nothing more can be queued: what take finds is all there is.
		final = final || isClosed(s.stop)
		select {
		case wait := <-s.restartAsk:
			s.finishCheckpoint(wait)
		default:
		}
		if batch := s.take(s.fail != nil); len(batch) > 0 {
			s.commit(batch, final)
			continue
		}
		if s.fail != nil {
			// The request at the head was answered without committing (a
			// constraint violation, or a delete, which is not retried) and
			// nothing is queued behind it: nothing is failing now.
			s.recovered("no writes waiting")
		}
		if final {
			return
		}
		select {
		case <-s.wake:
		case wait := <-s.restartAsk:
			s.finishCheckpoint(wait)
		case <-s.stop:
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// take removes from the queue the oldest requests, up to maxBatch writes
// (at least one request when any is queued). While writes are failing it
// takes only the oldest: a batch would fail as well, and then cost a
// second try of its first request alone.
func (s *Store) take(one bool) []*request {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, writes := 0, 0
	for n < len(s.queue) && (n == 0 || !one && writes+s.queue[n].weight <= maxBatch) {
		writes += s.queue[n].weight
		n++
	}
	if n == 0 {
		return nil
	}
	batch := make([]*request, n)
	copy(batch, s.queue)
	clear(s.queue[:n]) // let the requests be collected once answered
	s.queue = s.queue[n:]
	return batch
}

// commit applies batch in one transaction and answers every request in
// it. If that fails, it tries each request in a transaction of its own, in
// order, so that one bad write fails only its own caller. The first
// request that fails with a transient error is held: it and everything
// after it go back to the head of the queue, for run to retry after a
// backoff; or, once Close was called (final), they are answered with
// task.ErrUnavailable.
func (s *Store) commit(batch []*request, final bool) {
	ctx := context.Background() // queued writes are finished even during Close
	if !slices.ContainsFunc(batch, func(r *request) bool { return !r.barrier() }) {
		for _, r := range batch { // only Flush barriers
			r.done <- nil
		}
		return
	}

	rows := 0
	batchErr := s.inTx(ctx, func() error {
		for _, r := range batch {
			if err := s.exec(ctx, r); err != nil {
				return err
			}
			rows += len(r.ws)
		}
		return nil
	})
	if batchErr == nil {
		s.writes.Add(int64(rows))
		// Recovered before answering: a caller told its write committed
		// must not then see WriteErr say writes are failing.
		s.recovered("writes recovered")
		for _, r := range batch {
			r.done <- nil
		}
		return
	}

	if len(batch) > 1 {
		s.log.Warn("batch failed; retrying it one call at a time", "calls", len(batch), "err", batchErr)
	}
	for i, r := range batch {
		var err error
		switch {
		case r.barrier():
			r.done <- nil
			continue
		case len(batch) == 1:
			err = batchErr // it was alone already
		default:
			err = s.inTx(ctx, func() error { return s.exec(ctx, r) })
		}
		switch {
		case err == nil:
			s.writes.Add(int64(len(r.ws)))
			s.recovered("writes recovered")
			r.done <- nil
		case r.once != nil || permanent(err):
			r.done <- err
		case final:
			s.giveUp(batch[i:], err)
			return
		default:
			s.hold(batch[i:], err)
			return
		}
	}
}

// exec runs r's change inside the transaction inTx opened.
func (s *Store) exec(ctx context.Context, r *request) error {
	if r.once != nil {
		return r.once(ctx)
	}
	return s.stmts.apply(ctx, r.ws)
}

// permanent reports whether err will fail the same write however often it
// is tried: a constraint violation. Everything else (a lock held by
// another process, a full disk, an I/O error) may pass.
func permanent(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// failing is the writer's state while a write fails transiently.
type failing struct {
	since  time.Time     // the first failure
	tries  int           // failed tries of the held request(s) so far
	wait   time.Duration // the backoff before the next try
	logged time.Time     // the last Error line, to log about once per backoff max
	held   bool          // the head of the queue is a failed request waiting for its retry
}

// jittered is f.wait less up to half, so that two processes fighting
// over the lock do not retry in step.
func (f *failing) jittered() time.Duration {
	if f.wait < 2 {
		return f.wait
	}
	return f.wait - rand.N(f.wait/2)
}

// hold puts rs, a request that failed transiently and those behind it,
// back at the head of the queue, and records the failure.
func (s *Store) hold(rs []*request, err error) {
	s.mu.Lock()
	s.queue = slices.Concat(rs, s.queue)
	s.mu.Unlock()

	now := time.Now()
	f := s.fail
	switch {
	case f == nil:
		f = &failing{since: now, wait: s.backoffMin, logged: now}
		s.fail = f
		s.log.Error("write failed; retrying it, and holding the writes behind it, until it commits",
			"queued", len(rs), "err", err)
	default:
		f.wait = min(2*f.wait, s.backoffMax)
		if now.Sub(f.logged) >= s.backoffMax {
			f.logged = now
			s.log.Error("writes still failing", "failing_for", now.Sub(f.since), "tries", f.tries+1, "err", err)
		}
	}
	f.tries++
	f.held = true
	s.writeErr.Store(&writeFailure{since: f.since, tries: f.tries, err: err})
}

// recovered ends the failing state, if any.
func (s *Store) recovered(msg string) {
	f := s.fail
	if f == nil {
		return
	}
	s.fail = nil
	s.writeErr.Store(nil)
	s.log.Info(msg, "failed_for", time.Since(f.since), "tries", f.tries)
}

// giveUp answers rs, the requests from the first that failed on the last
// try before Close, and everything still queued behind them: none may
// commit before the write ahead of it.
func (s *Store) giveUp(rs []*request, err error) {
	s.mu.Lock()
	rs = slices.Concat(rs, s.queue)
	clear(s.queue)
	s.queue = nil
	s.mu.Unlock()

	// WriteErr keeps saying writes fail: they did, to the end.
	s.fail = nil
	s.log.Error("closing with writes that did not commit", "requests", len(rs), "err", err)
	for _, r := range rs {
		r.done <- fmt.Errorf("store: not committed before close: %w: %w", task.ErrUnavailable, err)
	}
}

// WriteErr returns nil while writes succeed. While a write is failing and
// being retried it returns an error saying for how long, how many tries
// and the last failure; the error wraps task.ErrUnavailable and that
// failure. The next commit clears it. It is cheap: one atomic load.
func (s *Store) WriteErr() error {
	f := s.writeErr.Load()
	if f == nil {
		return nil
	}
	return &failingError{failingFor: time.Since(f.since), tries: f.tries, err: f.err}
}

// writeFailure is what the writer publishes for WriteErr; never changed
// once stored.
type writeFailure struct {
	since time.Time
	tries int
	err   error
}

// failingError is WriteErr's error.
type failingError struct {
	failingFor time.Duration
	tries      int
	err        error
}

func (e *failingError) Error() string {
	return fmt.Sprintf("store: writes failing for %s (%d tries): %v", e.failingFor.Round(time.Millisecond), e.tries, e.err)
}

func (e *failingError) Unwrap() []error { return []error{task.ErrUnavailable, e.err} }

// inTx runs fn in a transaction on the writer's connection and commits it.
// It says BEGIN and COMMIT itself instead of using a *sql.Tx: Tx.StmtContext
// prepares a statement that was prepared on a Conn all over again, so every
// transaction re-parsed both upserts, and that parsing was the master's
// largest CPU cost under load (docs/performance.md, What was optimised). BEGIN
// and COMMIT are prepared statements too: parsed on every transaction,
// they were about 2% of the master's CPU while workers ran short tasks.
func (s *Store) inTx(ctx context.Context, fn func() error) error {
	if _, err := s.stmts.begin.ExecContext(ctx); err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(); err != nil {
		s.rollback(ctx)
		return err
	}
	if _, err := s.stmts.commit.ExecContext(ctx); err != nil {
		// A COMMIT that fails (e.g. SQLITE_BUSY) can leave the transaction
		// open; the next batch must start from a clean connection.
		s.rollback(ctx)
		return fmt.Errorf("store: commit: %w", err)
	}
	s.commits.Add(1)
	return nil
}

func (s *Store) rollback(ctx context.Context) {
	if _, err := s.conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		// "no transaction is active" after a failed COMMIT that rolled
		// back by itself is expected; anything else is worth a line.
		s.log.Debug("rollback", "err", err)
	}
}
