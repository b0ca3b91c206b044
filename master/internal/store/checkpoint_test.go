package store

import (
	"context"
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
