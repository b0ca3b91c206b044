package store

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// BenchmarkApplyAssign measures the write a delivery costs: the task's
// running row and its new attempt, from many callers at once, as the
// dispatcher makes them (Update and Insert).
func BenchmarkApplyAssign(b *testing.B) {
	s, _ := open(b)
	ws := make([]Write, b.N)
	for i := range ws {
		ws[i] = Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued), Kind: Insert}
	}
	if err := <-s.Apply(ws...); err != nil {
		b.Fatal(err)
	}
	applyParallel(b, s, func(i int) Write {
		t, a := running(i)
		return Write{Task: t, Kind: Update, Attempt: a, AttemptKind: Insert}
	})
}

// BenchmarkApplyComplete measures the write a finished task costs: its
// final row and its attempt's, from many callers at once as the gRPC
// report handlers make them, written as the dispatcher does (Update).
func BenchmarkApplyComplete(b *testing.B) {
	s, _ := open(b)
	ws := make([]Write, b.N)
	for i := range ws { // as the delivery left them
		t, a := running(i)
		ws[i] = Write{Task: t, Attempt: a}
	}
	if err := <-s.Apply(ws...); err != nil {
		b.Fatal(err)
	}
	code := 0
	applyParallel(b, s, func(i int) Write {
		t, a := running(i)
		t.Status, t.ExitCode, t.StartedAt, t.FinishedAt = task.StatusSucceeded, &code, at(1), at(2)
		a.Outcome, a.ExitCode, a.FinishedAt = task.OutcomeSucceeded, &code, at(2)
		return Write{Task: t, Kind: Update, Attempt: a, AttemptKind: Update}
	})
}

// applyParallel times b.N Applies of write(i), i from 0, from 16 callers
// per core at once, as the gRPC handlers make them, and reports the group
// commit's size and the process's CPU per write.
func applyParallel(b *testing.B, s *Store, write func(i int) Write) {
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	cpu, commits := cpuTime(), s.commits.Load()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := <-s.Apply(write(int(n.Add(1) - 1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/float64(max(s.commits.Load()-commits, 1)), "writes/commit")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkApplyInsert measures a submission's write, from many callers at
// once as the API's handlers make them.
func BenchmarkApplyInsert(b *testing.B) {
	s, _ := open(b)
	applyParallel(b, s, func(i int) Write {
		return Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued), Kind: Insert}
	})
}

// BenchmarkApplyBatch measures the statements alone: b.N writes of one
// kind in one Apply call, so in one transaction and one fsync, without the
// callers' wait for the disk that the benchmarks above mostly measure.
func BenchmarkApplyBatch(b *testing.B) {
	code := 0
	for _, bc := range []struct {
		name   string
		stored func(i int) Write // the row as it is before, if any
		write  func(i int) Write
	}{
		{"insert", nil, func(i int) Write {
			return Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued), Kind: Insert}
		}},
		{"assign", func(i int) Write {
			return Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued)}
		}, func(i int) Write {
			t, a := running(i)
			return Write{Task: t, Kind: Update, Attempt: a, AttemptKind: Insert}
		}},
		{"complete", func(i int) Write {
			t, a := running(i)
			return Write{Task: t, Attempt: a}
		}, func(i int) Write {
			t, a := running(i)
			t.Status, t.ExitCode, t.StartedAt, t.FinishedAt = task.StatusSucceeded, &code, at(1), at(2)
			a.Outcome, a.ExitCode, a.FinishedAt = task.OutcomeSucceeded, &code, at(2)
			return Write{Task: t, Kind: Update, Attempt: a, AttemptKind: Update}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, _ := open(b)
			ws := make([]Write, b.N)
			if bc.stored != nil {
				for i := range ws {
					ws[i] = bc.stored(i)
				}
				if err := <-s.Apply(ws...); err != nil {
					b.Fatal(err)
				}
			}
			for i := range ws {
				ws[i] = bc.write(i)
			}
			b.ResetTimer()
			if err := <-s.Apply(ws...); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// running returns benchmark task i as its first delivery leaves it, and
// that delivery.
func running(i int) (*task.Task, *task.Attempt) {
	t := newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusRunning)
	t.Attempts, t.WorkerID, t.AssignedAt, t.StartedAt = 1, "w1", at(1), at(1)
	return t, &task.Attempt{TaskID: t.ID, N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
}

// BenchmarkApplyInsertOneCaller is the latency of one durable insert when
// nobody shares its commit: one transaction and one fsync per task.
func BenchmarkApplyInsertOneCaller(b *testing.B) {
	s, _ := open(b)
	for i := range b.N {
		if err := <-s.Apply(Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued), Kind: Insert}); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the CPU time the process used so far, user and system, in
// nanoseconds: what a write costs the master beyond the wait for the disk,
// which ns/op mostly measures.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
