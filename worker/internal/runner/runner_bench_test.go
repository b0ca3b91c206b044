package runner

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The worker's cost per task is what it spends on top of the command: these
// benchmarks report the CPU of the benchmark process itself (RUSAGE_SELF,
// the runner's own work: pipes, fork, wait, reads, goroutines) apart from
// the CPU of the commands it ran (RUSAGE_CHILDREN, the shell and whatever
// the kernel charges it from the fork on), per op. ns/op is wall time and
// mostly the shell's; on a shared machine the CPU figures are the steadier.

// cpuMeter reports the process's and its waited-for children's CPU per op.
type cpuMeter struct{ self, children time.Duration }

func cpuNow(b *testing.B) cpuMeter {
	b.Helper()
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err != nil {
		b.Fatal(err)
	}
	return cpuMeter{self: cpuTime(self), children: cpuTime(children)}
}

func cpuTime(ru syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds self-cpu-ns/op (the overhead) and cmd-cpu-ns/op (the command's).
func (start cpuMeter) report(b *testing.B) {
	b.Helper()
	end := cpuNow(b)
	n := float64(b.N)
	b.ReportMetric(float64(end.self-start.self)/n, "self-cpu-ns/op")
	b.ReportMetric(float64(end.children-start.children)/n, "cmd-cpu-ns/op")
}

// discard is a Live that keeps nothing, so the benchmark measures the tee.
type discard struct{}

func (discard) Write(Stream, []byte) {}

func BenchmarkRun(b *testing.B) {
	env := os.Environ()
	for _, bc := range []struct {
		name string
		live Live
	}{
		{name: "no-live", live: nil},
		{name: "live", live: discard{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			opt := Options{Timeout: time.Minute, MaxOutput: 1 << 20, Env: env, Live: bc.live}
			b.ReportAllocs()
			start := cpuNow(b)
			for b.Loop() {
				if res := Run(ctx, "true", opt); res.ExitCode != 0 {
					b.Fatalf("exit %d, err %q", res.ExitCode, res.Err)
				}
			}
			start.report(b)
		})
	}
}

// BenchmarkBareForkExec is the floor Run is measured against: sh -c true
// through os/exec, no pipes, no process group, no timeout.
func BenchmarkBareForkExec(b *testing.B) {
	b.ReportAllocs()
	start := cpuNow(b)
	for b.Loop() {
		if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
			b.Fatal(err)
		}
	}
	start.report(b)
}
