//go:build !linux || runner_portable

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// errTimedOut is the cancellation cause Run gives its own timeout, so that it
// can tell the timeout apart from the caller canceling ctx.
var errTimedOut = errors.New("timed out")

// Run runs cmd with /bin/sh -c in a process group of its own and waits for
// it. A timeout of 0 means no limit. The task's processes end with it: when
// the shell exits, times out or ctx is canceled, the whole group is killed,
// so background children do not outlive the task and pile up in the worker.
// Run returns when the shell has exited and the output pipes are closed; a
// process that left the group (setsid) escapes the kill, and Run stops
// reading its output drainDelay after the kill. Each of stdout and stderr
// in the Result keeps at most its first opt.MaxOutput bytes, cut between UTF-8
// characters (see kept); opt.Live sees them all.
func Run(ctx context.Context, cmd string, opt Options) Result {
	timeout, maxOutput := opt.Timeout, opt.MaxOutput
	runCtx, cancel := context.WithCancel(ctx)
	if timeout > 0 {
		runCtx, cancel = context.WithTimeoutCause(ctx, timeout, errTimedOut)
	}
	defer cancel()

	res := Result{ExitCode: -1, StartedAt: time.Now()}
	stdout, stderr := &boundedWriter{max: maxOutput}, &boundedWriter{max: maxOutput}
	outR, outW, err := os.Pipe()
	if err != nil {
		return failedStart(ctx, res, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(outR, outW)
		return failedStart(ctx, res, err)
	}
	markInherited()
	c := exec.CommandContext(runCtx, "/bin/sh", "-c", cmd)
	// *os.File, not a Writer: exec hands the write ends to the shell as they
	// are instead of copying from a pipe of its own in goroutines that Wait
	// would wait for, so Wait returns as soon as the shell exits, even while
	// a background child still holds stdout.
	c.Stdout, c.Stderr = outW, errW
	c.Env = opt.Env
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error {
		err := killGroup(c.Process.Pid)
		// The shell too, by its handle: it may have left the group (a
		// program it exec'ed joined another), and Wait waits for it.
		_ = c.Process.Kill()
		return err
	}

	// As on Linux's path: the shell gets the timer slack the worker had
	// before it raised its own.
	if err := timerslack.ForChild(c.Start); err != nil {
		closeAll(outR, outW, errR, errW)
		return failedStart(ctx, res, err)
	}
	// Only the task's processes hold the write ends now, so the readers see
	// EOF once the last of them is gone.
	closeAll(outW, errW)
	// One lock for both streams' live writes: Live's contract is one Write
	// at a time, as on Linux, where one goroutine reads both pipes.
	var liveMu sync.Mutex
	outDone, errDone := drain(outR, tee(opt.Live, &liveMu, Stdout, stdout)), drain(errR, tee(opt.Live, &liveMu, Stderr, stderr))

	// Once the shell has been waited for, its ProcessState and the context
	// say more than Wait's error.
	waitErr := c.Wait()
	res.FinishedAt = time.Now()
	_ = killGroup(c.Process.Pid) // what the shell left behind; ESRCH when nothing
	deadline := time.Now().Add(drainDelay)
	for _, r := range []*os.File{outR, errR} {
		_ = r.SetReadDeadline(deadline) // pipes are pollable on Unix
	}
	<-outDone
	<-errDone
	closeAll(outR, errR)
	res.Stdout, res.StdoutTruncated = stdout.kept()
	res.Stderr, res.StderrTruncated = stderr.kept()

	state := c.ProcessState
	switch {
	case state == nil: // the shell could not be waited for
		res.Err = "wait: " + waitErr.Error()
	case state.Exited():
		res.ExitCode = state.ExitCode()
	case errors.Is(context.Cause(runCtx), errTimedOut):
		res.TimedOut = true
		res.Err = fmt.Sprintf("timed out after %s", timeout)
	case ctx.Err() != nil:
		res.Err = "canceled"
	default:
		// Killed by a signal from elsewhere (the OOM killer, a kill in cmd).
		res.Err = state.String()
	}
	return res
}

// drain copies r into w until EOF or r's read deadline, in a goroutine that
// Run owns: the returned channel is closed when it is done with w.
func drain(r *os.File, w io.Writer) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// w never fails (boundedWriter, teeWriter); the copy ends at EOF or
		// at the deadline, and either way what was read is kept.
		_, _ = io.Copy(w, r)
	}()
	return done
}

// tee is w, with every write also handed to live when there is one.
func tee(live Live, mu *sync.Mutex, s Stream, w *boundedWriter) io.Writer {
	if live == nil {
		return w
	}
	return teeWriter{live: live, mu: mu, stream: s, w: w}
}

// teeWriter hands each write to live before keeping what fits in w.
type teeWriter struct {
	live   Live
	mu     *sync.Mutex // held across live.Write, shared by both streams
	stream Stream
	w      *boundedWriter
}

func (t teeWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.live.Write(t.stream, p)
	t.mu.Unlock()
	return t.w.Write(p)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// killGroup kills the process group led by pid.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
