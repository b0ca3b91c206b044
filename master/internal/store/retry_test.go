package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// waitLimit bounds every wait in these tests; they pass in milliseconds.
const waitLimit = 10 * time.Second

// openFast opens a store whose writes give up on a held lock after 50ms
// and retry within milliseconds, so that a test sees many tries quickly.
// The caller closes it.
func openFast(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	s, err := Open(path, discard(), WithBusyTimeout(50*time.Millisecond), WithRetryBackoff(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, path
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// recv returns what ch answers, failing the test after waitLimit.
func recv(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("%s: no answer within %s", what, waitLimit)
		return nil
	}
}

// answered reports whether ch has an answer, and takes it.
func answered(ch <-chan error) (error, bool) {
	select {
	case err := <-ch:
		return err, true
	default:
		return nil, false
	}
}

// tries is the number of failed tries WriteErr reports, 0 when none.
func tries(s *Store) int {
	var fe *failingError
	if errors.As(s.WriteErr(), &fe) {
		return fe.tries
	}
	return 0
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// While another connection holds the write lock, a write is retried, not
// dropped, and the writes queued behind it wait for it.
func TestRetryWhileLocked(t *testing.T) {
	s, path := openFast(t)
	defer s.Close()
	unlock := storetest.HoldWriteLock(t, path)

	first := s.Apply(Write{Task: newTask("first", at(0), task.StatusQueued)})
	waitFor(t, "WriteErr to report the failing write", func() bool { return s.WriteErr() != nil })
	second := s.Apply(Write{Task: newTask("second", at(1), task.StatusQueued)})
	flushed := make(chan error, 1)
	go func() { flushed <- s.Flush(context.Background()) }()

	// Two more tries after second was queued: it has had its chance to
	// overtake first, and must not have.
	n := tries(s)
	waitFor(t, "two more tries", func() bool { return tries(s) >= n+2 })
	for name, ch := range map[string]<-chan error{"first": first, "second": second, "Flush": flushed} {
		if err, ok := answered(ch); ok {
			t.Fatalf("%s answered %v while the lock was held", name, err)
		}
	}
	werr := s.WriteErr()
	if !errors.Is(werr, task.ErrUnavailable) || !isBusy(werr) || !strings.Contains(werr.Error(), "writes failing for") {
		t.Errorf("WriteErr = %v; want writes failing, wrapping ErrUnavailable and SQLITE_BUSY", werr)
	}

	unlock()
	if err := recv(t, "second", second); err != nil {
		t.Fatalf("second: %v", err)
	}
	// The writer answers in order: first was answered before second.
	if err, ok := answered(first); !ok || err != nil {
		t.Fatalf("first: answered %v, %v when second was; want nil, true", err, ok)
	}
	if err := recv(t, "Flush", flushed); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := s.WriteErr(); err != nil {
		t.Errorf("WriteErr after the commit = %v, want nil", err)
	}
	for _, id := range []string{"first", "second"} {
		mustGet(t, s, id)
	}
}

// Close returns while a write is failing, and answers it, and what was
// queued behind it, with ErrUnavailable: none of them committed.
func TestCloseWhileFailing(t *testing.T) {
	s, path := openFast(t)
	unlock := storetest.HoldWriteLock(t, path)

	first := s.Apply(Write{Task: newTask("first", at(0), task.StatusQueued)})
	waitFor(t, "WriteErr to report the failing write", func() bool { return s.WriteErr() != nil })
	second := s.Apply(Write{Task: newTask("second", at(1), task.StatusQueued)})

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if err := recv(t, "Close", closed); err != nil {
		t.Errorf("Close: %v", err)
	}
	for name, ch := range map[string]<-chan error{"first": first, "second": second} {
		err := recv(t, name, ch)
		if !errors.Is(err, task.ErrUnavailable) || !isBusy(err) {
			t.Errorf("%s: err = %v, want ErrUnavailable wrapping SQLITE_BUSY", name, err)
		}
	}
	if err := recv(t, "Apply after Close", s.Apply(Write{Task: newTask("late", at(2), task.StatusQueued)})); !errors.Is(err, task.ErrClosed) {
		t.Errorf("Apply after Close: err = %v, want ErrClosed", err)
	}

	unlock()
	s2, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if live, err := s2.Live(context.Background()); err != nil || len(live) != 0 {
		t.Errorf("Live after reopening = %v, %v; want no tasks: none was committed", ids(live), err)
	}
}

// A constraint violation is permanent: it fails only its own call, at
// once, whether it came alone or in a batch, and leaves no failing state.
func TestConstraintIsNotRetried(t *testing.T) {
	tests := []struct {
		name     string
		together bool // queue the calls as one batch
		bad      Write
		want     error // what errors.Is must find in the bad call's error; nil: any error
	}{
		{"same idempotency key, alone", false, Write{Task: keyed("b", "k")}, task.ErrConflict},
		{"same idempotency key, in a batch", true, Write{Task: keyed("b", "k")}, task.ErrConflict},
		{"attempt of a task never stored", false, Write{Attempt: &task.Attempt{TaskID: "nope", N: 1, WorkerID: "w", Outcome: task.OutcomeRunning}}, nil},
		// As for an attempt whose task retention deleted since it was read:
		// its foreign key fails it alone, and the calls committed with it
		// in one transaction are tried again one by one, and land.
		{"attempt of a task never stored, in a batch", true, Write{Attempt: &task.Attempt{TaskID: "nope", N: 1, WorkerID: "w", Outcome: task.OutcomeRunning}, AttemptKind: Update}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openFast(t)
			defer s.Close()
			apply(t, s, Write{Task: keyed("a", "k")})

			calls := [][]Write{{tt.bad}, {{Task: newTask("c", at(2), task.StatusQueued)}}}
			var chs []<-chan error
			if tt.together {
				chs = queueTogether(s, calls...)
			} else {
				for _, ws := range calls {
					chs = append(chs, s.Apply(ws...))
				}
			}
			err := recv(t, "bad", chs[0])
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("bad write: err = %v, want %v", err, tt.want)
			}
			if err := recv(t, "the write behind it", chs[1]); err != nil {
				t.Errorf("the write behind it: %v", err)
			}
			if err := s.WriteErr(); err != nil {
				t.Errorf("WriteErr = %v, want nil", err)
			}
			mustGet(t, s, "c")
		})
	}
}

func keyed(id, key string) *task.Task {
	t := newTask(id, at(0), task.StatusQueued)
	t.IdempotencyKey = key
	return t
}

// A delete that fails is answered, not retried, and holds up nothing.
func TestDeleteFinishedWhileLocked(t *testing.T) {
	s, path := openFast(t)
	defer s.Close()
	old := newTask("old", at(0), task.StatusSucceeded)
	old.FinishedAt = at(1)
	apply(t, s, Write{Task: old})

	unlock := storetest.HoldWriteLock(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if n, err := s.DeleteFinished(ctx, at(2), 10); !isBusy(err) {
		t.Errorf("DeleteFinished under a held lock = %d, %v; want SQLITE_BUSY", n, err)
	}
	if err := s.WriteErr(); err != nil {
		t.Errorf("WriteErr after a failed delete = %v, want nil: deletes are not held", err)
	}
	unlock()
	apply(t, s, Write{Task: newTask("new", at(3), task.StatusQueued)})
	if n, err := s.DeleteFinished(ctx, at(2), 10); n != 1 || err != nil {
		t.Errorf("DeleteFinished once unlocked = %d, %v; want 1, nil", n, err)
	}
}
