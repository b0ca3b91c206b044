// Package runner runs one command under /bin/sh -c with an optional timeout
// and captures a bounded amount of its output, handing every byte of it as
// it is read to an optional live sink.
//
// On Linux, where the worker's image runs, it costs little per command
// (run_linux.go): no os/exec, no goroutine, no timer. Run forks the shell
// with syscall.ForkExec and then waits for everything on its caller's
// goroutine, in one ppoll(2) over both output pipes and a pidfd that turns
// readable when the shell exits; the timeout is ppoll's own, and a canceled
// ctx kills the process group, which wakes it. Elsewhere (a worker built on
// a Mac for `make dev`), run_other.go does the same with os/exec; the
// build tag runner_portable selects it on Linux too, so its tests run here.
package runner

import (
	"context"
	"sync"
	"time"
	"unicode/utf8"
)

// drainDelay bounds how long Run reads the output pipes after the task's
// process group has been killed. Killed processes close them at once; only
// a process that left the group (setsid) can hold them open, and it must not
// hang the worker. What is still buffered in a pipe is read well within it.
const drainDelay = time.Second

// Result is what became of one command.
type Result struct {
	// ExitCode is the shell's exit status; -1 when the shell did not exit by
	// itself (killed, timed out, or could not start).
	ExitCode        int
	Stdout, Stderr  []byte
	StdoutTruncated bool
	StderrTruncated bool
	StartedAt       time.Time
	FinishedAt      time.Time
	// Err says why the command did not run to an exit status; it is empty
	// when the shell exited, whatever its status.
	Err      string
	TimedOut bool
}

// Stream names one of a command's output streams.
type Stream int

const (
	Stdout Stream = iota + 1
	Stderr
)

// Live receives a command's output as it is read, for people following it.
// Write is called from Run's goroutine (so never for both streams at once),
// in the order the bytes were read. It must not block, or the task blocks on
// a full pipe, and must not keep p, which Run reuses: it copies what it keeps.
type Live interface {
	Write(s Stream, p []byte)
}

// Options are how to run a command.
type Options struct {
	Timeout   time.Duration // 0: no limit
	MaxOutput int           // bytes kept of each of stdout and stderr
	Env       []string      // the command's environment; nil: the worker's own
	Live      Live          // sees all of the output as it is read; nil: nobody
}

// markInherited runs closeInheritedOnExec before the first command, and
// again before each next one until it has worked (it may fail for lack of
// a descriptor): the inherited descriptors are there from the process's
// start.
func markInherited() {
	inheritedMu.Lock()
	defer inheritedMu.Unlock()
	if !inheritedMarked {
		inheritedMarked = closeInheritedOnExec()
	}
}

var (
	inheritedMu     sync.Mutex // protects inheritedMarked
	inheritedMarked bool
)

// failedStart is res for a command that could not be started.
func failedStart(ctx context.Context, res Result, err error) Result {
	res.FinishedAt = time.Now()
	res.Err = "start: " + err.Error()
	if ctx.Err() != nil {
		res.Err = "canceled"
	}
	return res
}

// boundedWriter keeps the first max bytes written to it and counts the rest.
// It never returns an error, so the copy from the pipe goes on and the child
// never blocks on a full pipe. Only Run's goroutine uses it, so no lock is
// needed.
type boundedWriter struct {
	max     int
	buf     []byte
	dropped int64
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	keep := max(0, min(len(p), w.max-len(w.buf)))
	w.buf = append(w.buf, p[:keep]...)
	w.dropped += int64(len(p) - keep)
	return len(p), nil
}

// kept returns the bytes kept and whether any were dropped. When the cut
// fell inside a UTF-8 character, that character's first bytes are left out
// too: kept whole they would be invalid UTF-8, shown by the master as a
// U+FFFD the command never wrote. Bytes that are not UTF-8 stay as they are.
func (w *boundedWriter) kept() ([]byte, bool) {
	b := w.buf
	if w.dropped == 0 {
		return b, false
	}
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				b = b[:i]
			}
			break
		}
	}
	return b, true
}
