package store

import (
	"path/filepath"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Every Open of a database takes the next epoch, whether the run before
// closed cleanly or not (here it is left open, as a crashed process leaves
// its file), and the epoch of each stored delivery reads back.
func TestEpochCountsUpAtEveryOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	first, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	if first.Epoch() != 1 {
		t.Fatalf("first epoch %d, want 1", first.Epoch())
	}
	tk := newTask("t1", at(0), task.StatusRunning)
	tk.Attempts, tk.WorkerID = 1, "w1"
	a := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1), Epoch: first.Epoch()}
	apply(t, first, Write{Task: tk, Kind: Insert, Attempt: &a, AttemptKind: Insert})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() }) // still open when the third starts
	third, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { third.Close() })
	if second.Epoch() != 2 || third.Epoch() != 3 {
		t.Fatalf("epochs %d and %d after the first, want 2 and 3", second.Epoch(), third.Epoch())
	}
	if got := mustGet(t, third, "t1"); len(got.History) != 1 || got.History[0].Epoch != 1 {
		t.Fatalf("history %+v, want attempt 1 of epoch 1", got.History)
	}
}
