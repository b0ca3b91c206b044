package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// TestCheckpointerCopiesTheWAL: commits leave their pages in the WAL
// (automatic checkpoints are off), and the checkpointer, not a commit,
// copies them into the database file.
func TestCheckpointerCopiesTheWAL(t *testing.T) {
	s, path := open(t)
	before := fileSize(t, path)
	ws := make([]Write, 2000)
	for i := range ws {
		ws[i] = Write{Task: newTask(fmt.Sprintf("t%05d", i), at(0), task.StatusQueued)}
	}
	apply(t, s, ws...)
	if fileSize(t, path+"-wal") == 0 {
		t.Fatal("the commit wrote nothing to the WAL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*defaultCheckpointInterval)
	defer cancel()
	tick := time.NewTicker(defaultCheckpointInterval / 10)
	defer tick.Stop()
	for fileSize(t, path) <= before {
		select {
		case <-ctx.Done():
			t.Fatalf("database file still %d bytes after %s: no checkpoint", fileSize(t, path), 10*defaultCheckpointInterval)
		case <-tick.C:
		}
	}
	// The rows are readable whatever the WAL holds.
	if _, err := s.Get(context.Background(), "t01999"); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestWALStartsOverUnderSteadyWrites: with commits following each other
// without a pause, no PASSIVE checkpoint beside the writer ever finds the
// whole WAL copied, so SQLite never starts it over; the checkpointer has
// the writer finish the copy between two transactions, and the WAL stays
// a few rounds long instead of growing with everything ever written.
func TestWALStartsOverUnderSteadyWrites(t *testing.T) {
	const (
		restartFrames = 100
		senders       = 4
		perSender     = 600
		cmdBytes      = 4000 // about a page per task, so the WAL grows fast
	)
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	s, err := Open(path, discard(), withCheckpoints(10*time.Millisecond, restartFrames))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	// Several senders keep a write queued at all times, so the writer
	// commits back to back, as under load.
	insertFrom(t, s, senders, perSender, cmdBytes)

	// Every task took at least a page of the WAL; the file holds a few
	// rounds' worth of them.
	written := int64(senders * perSender * cmdBytes)
	if wal := fileSize(t, path+"-wal"); wal > written/2 {
		t.Fatalf("the WAL is %d bytes after %d bytes of tasks: it never started over", wal, written)
	}
	for g := range senders {
		if _, err := s.Get(context.Background(), fmt.Sprintf("g%d-%05d", g, perSender-1)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWALStartsOverUnderSteadyReads: the same writes, while reads go on
// without a pause (one read transaction is always open, the next one
// begun before the last one ends, as under clients that poll). A PASSIVE
// copy and the writer's PASSIVE finish never find the WAL free of readers,
// so SQLite never started it over and it grew with everything written.
func TestWALStartsOverUnderSteadyReads(t *testing.T) {
	const (
		restartFrames = 100
		senders       = 4
		perSender     = 600
		cmdBytes      = 4000
		readsPerTx    = 100 // reads of one read transaction
	)
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	s, err := Open(path, discard(), withCheckpoints(10*time.Millisecond, restartFrames))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	ctx := context.Background()
	begin := func() (*sql.Tx, error) {
		tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return nil, err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM seqs`).Scan(&n); err != nil {
			tx.Rollback()
			return nil, err
		}
		return tx, nil // the snapshot is taken: the transaction is in the WAL
	}
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		// Each transaction reads readsPerTx times, and ends only once the
		// next one has begun, so a reader is in the WAL at every moment.
		// The readers never wait for the writer, as none does in the
		// master.
		old, err := begin()
		for err == nil {
			select {
			case <-stop:
				readErr <- old.Rollback()
				return
			default:
			}
			for i := 0; i < readsPerTx && err == nil; i++ {
				var n int
				err = old.QueryRowContext(ctx, `SELECT COUNT(*) FROM seqs`).Scan(&n)
			}
			var next *sql.Tx
			if err == nil {
				next, err = begin()
			}
			old.Rollback()
			old = next
		}
		readErr <- err
	}()

	func() {
		defer close(stop) // the reader stops however the inserts end
		insertFrom(t, s, senders, perSender, cmdBytes)
	}()
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}

	written := int64(senders * perSender * cmdBytes)
	if wal := fileSize(t, path+"-wal"); wal > written/2 {
		t.Fatalf("the WAL is %d bytes after %d bytes of tasks: it never started over", wal, written)
	}
}

// insertFrom inserts perSender tasks of a cmdBytes-long command from each of
// senders goroutines, each waiting for its write before the next, so that
// the writer commits back to back, as under load.
func insertFrom(t *testing.T, s *Store, senders, perSender, cmdBytes int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			for i := range perSender {
				tk := newTask(fmt.Sprintf("g%d-%05d", g, i), at(i), task.StatusQueued)
				tk.Cmd = strings.Repeat("x", cmdBytes)
				if err := <-s.Apply(Write{Task: tk, Kind: Insert}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
