package logbuf

import (
	"io"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's CPU time so far, user and system, every thread.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLogLine is one of the dispatcher's log lines, written by slog's
// text handler to a pipe that a reader drains, as stderr is: straight to
// the pipe, as before logbuf, and through a Writer. ns/op is the logging
// call's time, what the dispatcher's lock is held for; cpu-ns/op is the
// whole process's CPU per line, the pipe's reader and the Writer's
// goroutine included.
func BenchmarkLogLine(b *testing.B) {
	for _, bc := range []struct {
		name     string
		buffered bool
	}{{"direct", false}, {"buffered", true}} {
		b.Run(bc.name, func(b *testing.B) {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() { defer close(drained); _, _ = io.Copy(io.Discard, r) }()
			var out io.Writer = w
			var buf *Writer
			if bc.buffered {
				buf = Start(w, 1<<20, nil)
				out = buf
			}
			log := slog.New(slog.NewTextHandler(out, nil))
			b.ReportAllocs()
			cpu := cpuTime(b)
			for b.Loop() {
				log.Info("task assigned", "task_id", "019ad1b2-7c3e-7f00-8a1b-2c3d4e5f6a7b", "worker_id", "worker-3", "attempt", 1)
			}
			if buf != nil {
				buf.Close() // its lines written: their CPU counts
			}
			w.Close()
			<-drained
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
			r.Close()
		})
	}
}
