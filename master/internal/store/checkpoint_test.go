package store

import (
	"context"
	"fmt"
	"os"
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*checkpointInterval)
	defer cancel()
	tick := time.NewTicker(checkpointInterval / 10)
	defer tick.Stop()
	for fileSize(t, path) <= before {
		select {
		case <-ctx.Done():
			t.Fatalf("database file still %d bytes after %s: no checkpoint", fileSize(t, path), 10*checkpointInterval)
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
