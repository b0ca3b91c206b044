package store

import (
	"reflect"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// queuedBehindALock opens a store with task "t" stored, then holds the
// write lock and queues a write of another task, which the writer keeps
// retrying: everything applied after it waits in the queue, where later
// writes may fold into earlier ones. unlock lets them all commit.
func queuedBehindALock(t *testing.T) (s *Store, tk task.Task, unlock func()) {
	t.Helper()
	s, path := openFast(t)
	t.Cleanup(func() { s.Close() })
	tk = *newTask("t", at(0), task.StatusQueued)
	apply(t, s, Write{Task: &tk, Kind: Insert}, Write{Task: newTask("other", at(0), task.StatusQueued), Kind: Insert})
	unlock = storetest.HoldWriteLock(t, path)
	head := s.Apply(Write{Task: newTask("other", at(1), task.StatusQueued), Kind: Update})
	waitFor(t, "WriteErr to report the failing write", func() bool { return s.WriteErr() != nil })
	t.Cleanup(func() { unlock(); recv(t, "the head write", head) })
	return s, tk, unlock
}

// delivered and finished are a task's delivery and its result as the
// dispatcher writes them.
func delivered(tk task.Task, n int) Write {
	tk.Status, tk.Attempts, tk.WorkerID, tk.AssignedAt = task.StatusRunning, n, "w1", at(n)
	a := task.Attempt{TaskID: tk.ID, N: n, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(n), Epoch: 1}
	return Write{Task: &tk, Kind: Update, Attempt: &a, AttemptKind: Insert}
}

func finished(w Write) Write {
	tk, a := *w.Task, *w.Attempt
	tk.Status, tk.ExitCode, tk.Stdout, tk.FinishedAt = task.StatusSucceeded, intp(0), "out", at(9)
	a.Outcome, a.ExitCode, a.FinishedAt = task.OutcomeSucceeded, intp(0), at(9)
	return Write{Task: &tk, Kind: Update, Attempt: &a, AttemptKind: Update}
}

// A short task's result, written while its delivery still waits for the
// writer, goes into the delivery's write: one write for both, both callers
// answered once it is on disk, and the rows as the result left them.
func TestResultFoldsIntoItsQueuedDelivery(t *testing.T) {
	s, tk, unlock := queuedBehindALock(t)
	before := s.Counts()
	d := delivered(tk, 1)
	f := finished(d)
	running, final := s.Apply(d), s.Apply(f)
	if got := s.Counts().Folded - before.Folded; got != 1 {
		t.Fatalf("%d writes folded, want the result into its delivery", got)
	}
	if err, ok := answered(running); ok {
		t.Fatalf("the delivery answered %v while the lock was held", err)
	}
	unlock()
	for name, ch := range map[string]<-chan error{"delivery": running, "result": final} {
		if err := recv(t, name, ch); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	want := *f.Task
	want.History = []task.Attempt{*f.Attempt}
	if got := mustGet(t, s, "t"); !reflect.DeepEqual(got, utc(want)) {
		t.Fatalf("stored:\n got %+v\nwant %+v", got, utc(want))
	}
	if got := s.Counts().Writes - before.Writes; got != 2 {
		t.Errorf("%d writes committed, want 2: the head's and the folded one", got)
	}
}

// Nothing folds over a write in between that touches the same task's rows
// (which would then overwrite the later state), nor two writes of different
// attempts: each is written in its turn, and the rows end as the last
// write left them.
func TestNoFoldAcrossAnotherWriteOfTheTask(t *testing.T) {
	for _, tc := range []struct {
		name    string
		between func(d Write) []Write // written after the delivery, before the result
		last    func(d Write) Write
	}{
		{"an attempt written alone", func(d Write) []Write {
			a := *d.Attempt
			a.Error = "noted"
			return []Write{{Attempt: &a, AttemptKind: Update}}
		}, finished},
		{"an upsert of the task", func(d Write) []Write {
			return []Write{{Task: d.Task, Kind: Upsert}}
		}, finished},
		{"the next delivery", func(Write) []Write { return nil }, func(d Write) Write {
			return delivered(*d.Task, 2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tk, unlock := queuedBehindALock(t)
			before := s.Counts()
			d := delivered(tk, 1)
			chans := []<-chan error{s.Apply(d)}
			between := tc.between(d)
			for _, w := range between {
				chans = append(chans, s.Apply(w))
			}
			last := tc.last(d)
			chans = append(chans, s.Apply(last))
			if got := s.Counts().Folded - before.Folded; got != 0 {
				t.Fatalf("%d writes folded, want none", got)
			}
			unlock()
			for _, ch := range chans {
				if err := recv(t, "a write", ch); err != nil {
					t.Fatal(err)
				}
			}
			got := mustGet(t, s, "t")
			if got.Status != last.Task.Status || got.Attempts != last.Task.Attempts {
				t.Fatalf("stored %s with %d attempts, want the last write's %s with %d", got.Status, got.Attempts, last.Task.Status, last.Task.Attempts)
			}
			if n := len(got.History); n != last.Attempt.N || got.History[n-1].Outcome != last.Attempt.Outcome {
				t.Fatalf("history %+v, want %d attempts ending %s", got.History, last.Attempt.N, last.Attempt.Outcome)
			}
			if got := s.Counts().Writes - before.Writes; got != int64(3+len(between)) {
				t.Errorf("%d writes committed, want %d: each in its turn", got, 3+len(between))
			}
		})
	}
}
