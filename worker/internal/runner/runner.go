// Package runner runs one command under /bin/sh -c with an optional timeout
// and captures a bounded amount of its output.
package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// waitDelay bounds how long Run waits for the output pipes to close after the
// shell has exited or been killed: a background grandchild that keeps them
// open must not hang the worker.
const waitDelay = 2 * time.Second

// errTimedOut is the cancellation cause Run gives its own timeout, so that it
// can tell the timeout apart from the caller canceling ctx.
var errTimedOut = errors.New("timed out")

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

// Run runs cmd with /bin/sh -c in a process group of its own and waits for
// it. A timeout of 0 means no limit. The task's processes end with it: when
// the shell exits, times out or ctx is canceled, the whole group is killed,
// so background children do not outlive the task and pile up in the worker.
// env is the command's environment (nil: the worker's own). Each of stdout
// and stderr keeps its first maxOutput bytes.
func Run(ctx context.Context, cmd string, timeout time.Duration, maxOutput int, env []string) Result {
	runCtx, cancel := context.WithCancel(ctx)
	if timeout > 0 {
		runCtx, cancel = context.WithTimeoutCause(ctx, timeout, errTimedOut)
	}
	defer cancel()

	stdout := &boundedWriter{max: maxOutput}
	stderr := &boundedWriter{max: maxOutput}
	c := exec.CommandContext(runCtx, "/bin/sh", "-c", cmd)
	c.Stdout = stdout
	c.Stderr = stderr
	c.Env = env
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return killGroup(c.Process.Pid) }
	c.WaitDelay = waitDelay

	res := Result{ExitCode: -1, StartedAt: time.Now()}
	if err := c.Start(); err != nil {
		res.FinishedAt = time.Now()
		res.Err = "start: " + err.Error()
		if ctx.Err() != nil {
			res.Err = "canceled"
		}
		return res
	}
	// Once the shell has been waited for, its ProcessState and the context
	// say more than Wait's error, which puts even exec.ErrWaitDelay after
	// the exit status.
	waitErr := c.Wait()
	res.FinishedAt = time.Now()
	_ = killGroup(c.Process.Pid) // what the shell left behind; ESRCH when nothing
	res.Stdout, res.StdoutTruncated = stdout.buf, stdout.dropped > 0
	res.Stderr, res.StderrTruncated = stderr.buf, stderr.dropped > 0

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

// killGroup kills the process group led by pid.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// boundedWriter keeps the first max bytes written to it and counts the rest.
// It never returns an error, so the copy from the pipe goes on and the child
// never blocks on a full pipe. exec.Cmd gives each stream its own goroutine
// and Wait synchronizes with it, so no lock is needed.
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
