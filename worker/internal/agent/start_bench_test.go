package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// BenchmarkStart is one task of `true` through the agent's start path, from
// the assignment to the queued result: the task's bookkeeping, its live
// output registration, its log lines (formatted, then discarded), the run.
// The master and the reporter are left out. self-cpu-ns/op is the worker's
// own CPU per task (RUSAGE_SELF), cmd-cpu-ns/op the shell's.
func BenchmarkStart(b *testing.B) {
	a := New(Config{WorkerID: "w1", Slots: 1, MaxOutput: 1 << 20, TaskEnv: os.Environ()},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	task := &pb.Task{Id: "t1", Attempt: 1, Cmd: "true", Timeout: durationpb.New(time.Minute)}
	b.ReportAllocs()
	self, children := rusage(b)
	for b.Loop() {
		a.start(ctx, task)
		<-a.wake // the result is queued
		a.mu.Lock()
		if len(a.results) != 1 || a.results[0].GetExitCode() != 0 {
			b.Fatalf("results %v, want one of exit 0", a.results)
		}
		a.results = a.results[:0]
		delete(a.running, task.Id) // as the master's ack would
		delete(a.attempts, task.Id)
		a.mu.Unlock()
	}
	a.wg.Wait()
	self2, children2 := rusage(b)
	b.ReportMetric(float64(self2-self)/float64(b.N), "self-cpu-ns/op")
	b.ReportMetric(float64(children2-children)/float64(b.N), "cmd-cpu-ns/op")
}

// rusage is the CPU time of this process and of its waited-for children.
func rusage(b *testing.B) (self, children time.Duration) {
	b.Helper()
	var s, c syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &s); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c); err != nil {
		b.Fatal(err)
	}
	return time.Duration(s.Utime.Nano() + s.Stime.Nano()), time.Duration(c.Utime.Nano() + c.Stime.Nano())
}
