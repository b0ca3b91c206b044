package store

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// BenchmarkApplyComplete measures the write a finished task costs: its
// final row and its attempt's, from many callers at once as the gRPC
// report handlers make them.
func BenchmarkApplyComplete(b *testing.B) {
	s, _ := open(b)
	ws := make([]Write, b.N)
	for i := range ws {
		ws[i] = Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued)}
	}
	if err := <-s.Apply(ws...); err != nil {
		b.Fatal(err)
	}
	code := 0
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) - 1
			t := newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusSucceeded)
			t.Attempts, t.WorkerID, t.ExitCode, t.StartedAt, t.FinishedAt = 1, "w1", &code, at(1), at(2)
			a := &task.Attempt{TaskID: t.ID, N: 1, WorkerID: "w1", Outcome: task.OutcomeSucceeded, ExitCode: &code, AssignedAt: at(1), FinishedAt: at(2)}
			if err := <-s.Apply(Write{Task: t, Attempt: a}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/float64(max(s.commits.Load()-1, 1)), "writes/commit")
}

// BenchmarkApplyInsertOneCaller is the latency of one durable insert when
// nobody shares its commit: one transaction and one fsync per task.
func BenchmarkApplyInsertOneCaller(b *testing.B) {
	s, _ := open(b)
	for i := range b.N {
		if err := <-s.Apply(Write{Task: newTask(fmt.Sprintf("t%09d", i), at(0), task.StatusQueued)}); err != nil {
			b.Fatal(err)
		}
	}
}
