//go:build linux && !runner_portable

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// pollTick bounds each wait when the kernel gave no pidfd (before Linux
// 5.2): the shell's exit is then looked for this often.
const pollTick = 10 * time.Millisecond

// noPidfd makes Run do without pidfds, as on kernels that have none: tests
// cover that path with it.
var noPidfd = false

// readSize is the most read from a pipe at once: a pipe's default capacity
// is 64 KiB, so a busy command rarely waits for more than two reads.
const readSize = 32 << 10

// bufs holds Run's read buffers: one per run, used only while it runs.
var bufs = sync.Pool{New: func() any { return new([readSize]byte) }}

// devNull returns the shell's stdin, opened once for every run: close-on-exec
// here, dup'ed onto the shell's descriptor 0 by the fork. A failed open
// (EMFILE, ENFILE: passing) is not kept, or every later run would fail
// with it; the next run tries again.
func devNull() (int, error) {
	devNullMu.Lock()
	defer devNullMu.Unlock()
	if devNullFD < 0 {
		fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		devNullFD = fd
	}
	return devNullFD, nil
}

var (
	devNullMu sync.Mutex // protects devNullFD
	devNullFD = -1       // not open yet
)

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
	res := Result{ExitCode: -1, StartedAt: time.Now()}
	if err := ctx.Err(); err != nil {
		return failedStart(ctx, res, err)
	}
	p, err := start(cmd, opt.Env)
	if err != nil {
		return failedStart(ctx, res, err)
	}
	// A cancel kills the group; the shell's exit then wakes the wait.
	defer context.AfterFunc(ctx, p.killGroup)()

	// On Run's stack: readOnce takes them as they are, not as io.Writers.
	sinks := [2]sink{
		{boundedWriter: boundedWriter{max: opt.MaxOutput}, live: opt.Live, stream: Stdout},
		{boundedWriter: boundedWriter{max: opt.MaxOutput}, live: opt.Live, stream: Stderr},
	}
	buf := bufs.Get().(*[readSize]byte)
	defer bufs.Put(buf)

	// fds are what the wait watches: stdout, stderr, the pidfd. A negative
	// Fd is one ppoll skips: a pipe at EOF, a shell waited for, no pidfd.
	fds := [3]unix.PollFd{
		{Fd: int32(p.stdout), Events: unix.POLLIN},
		{Fd: int32(p.stderr), Events: unix.POLLIN},
		{Fd: int32(p.pidfd), Events: unix.POLLIN},
	}
	var (
		deadline time.Time // the timeout while the shell runs, then the drain's end; zero: none
		exited   bool      // the shell was waited for
		timedOut bool
		status   syscall.WaitStatus
		waitErr  error
	)
	if opt.Timeout > 0 {
		deadline = res.StartedAt.Add(opt.Timeout)
	}
	for fds[0].Fd >= 0 || fds[1].Fd >= 0 || !exited {
		wait := time.Duration(-1) // no limit
		if !deadline.IsZero() {
			wait = max(0, time.Until(deadline))
		}
		if !exited && p.pidfd < 0 && (wait < 0 || wait > pollTick) {
			wait = pollTick
		}
		_, err := ppoll(fds[:], wait)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			waitErr = fmt.Errorf("ppoll: %w", err)
			break
		}
		for i := range 2 {
			if fds[i].Revents != 0 && !readOnce(int(fds[i].Fd), buf[:], &sinks[i]) {
				_ = syscall.Close(int(fds[i].Fd))
				fds[i].Fd = -1
			}
		}
		// Without a pidfd every wake-up looks for the exit; with one, the
		// exit is confirmed all the same.
		if !exited && (fds[2].Revents != 0 || p.pidfd < 0) {
			if p.exited() {
				status, waitErr = p.reap()
				res.FinishedAt = time.Now()
				exited = true
				fds[2].Fd = -1
				deadline = res.FinishedAt.Add(drainDelay)
				continue
			}
			if fds[2].Revents != 0 {
				// Ready with the shell alive: a kernel (5.2) whose pidfds
				// cannot be polled, and read ready always. Fall back to
				// looking every pollTick.
				p.dropPidfd()
				fds[2].Fd = -1
			}
		}
		// Whatever woke ppoll: a pipe that never empties must not hold off
		// the timeout or the drain's end.
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			if exited {
				break // a process outside the group holds a pipe open
			}
			timedOut = true
			p.killGroup()
			deadline = time.Time{} // the shell's exit ends the wait now
		}
	}
	if !exited { // ppoll failed: its error is the one to report
		status, _ = p.reap()
		res.FinishedAt = time.Now()
	}
	for i := range 2 {
		if fds[i].Fd >= 0 {
			_ = syscall.Close(int(fds[i].Fd))
		}
	}
	stdout, stderr := &sinks[0].boundedWriter, &sinks[1].boundedWriter
	res.Stdout, res.StdoutTruncated = stdout.kept()
	res.Stderr, res.StderrTruncated = stderr.kept()

	switch {
	case waitErr != nil:
		res.Err = "wait: " + waitErr.Error()
	case status.Exited():
		res.ExitCode = status.ExitStatus()
	case timedOut:
		res.TimedOut = true
		res.Err = fmt.Sprintf("timed out after %s", opt.Timeout)
	case ctx.Err() != nil:
		res.Err = "canceled"
	default:
		// Killed by a signal from elsewhere (the OOM killer, a kill in cmd).
		res.Err = signaled(status)
	}
	return res
}

// proc is a started shell.
type proc struct {
	pid            int
	pidfd          int // readable once the shell has exited; -1: none
	stdout, stderr int // the read ends of its output pipes

	mu sync.Mutex // protects reaped
	// reaped is set once the shell has been waited for. Until then its PID,
	// which is its group's ID, cannot be anyone else's, so a kill of the
	// group cannot hit another.
	reaped bool
}

// start forks /bin/sh -c cmd in a process group of its own, its stdout and
// stderr pipes to Run.
func start(cmd string, env []string) (*proc, error) {
	markInherited()
	null, err := devNull()
	if err != nil {
		return nil, err
	}
	// Close-on-exec, so that no other task's shell, forked meanwhile,
	// holds them open; the fork dup's the write ends onto 1 and 2.
	var out, errp [2]int
	if err := syscall.Pipe2(out[:], syscall.O_CLOEXEC); err != nil {
		return nil, err
	}
	if err := syscall.Pipe2(errp[:], syscall.O_CLOEXEC); err != nil {
		closeFDs(out[0], out[1])
		return nil, err
	}
	if env == nil {
		env = os.Environ()
	}
	p := &proc{pidfd: -1, stdout: out[0], stderr: errp[0]}
	sys := &syscall.SysProcAttr{Setpgid: true, PidFD: &p.pidfd}
	if noPidfd {
		sys.PidFD = nil
	}
	// The shell starts with the timer slack the worker had before it
	// raised its own (proto/timerslack), not with the worker's.
	var pid int
	err = timerslack.ForChild(func() (err error) {
		pid, err = syscall.ForkExec("/bin/sh", []string{"/bin/sh", "-c", cmd}, &syscall.ProcAttr{
			Env:   env,
			Files: []uintptr{uintptr(null), uintptr(out[1]), uintptr(errp[1])},
			Sys:   sys,
		})
		return err
	})
	// Only the task's processes hold the write ends now, so the reads see
	// EOF once the last of them is gone.
	closeFDs(out[1], errp[1])
	if err != nil {
		closeFDs(out[0], errp[0])
		return nil, err
	}
	p.pid = pid
	return p, nil
}

// exited reports whether the shell has exited, without waiting for it.
func (p *proc) exited() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	// An error (ECHILD: someone else waited for it) is for reap to report.
	return err != nil || info.Signo == int32(syscall.SIGCHLD)
}

// reap kills what the shell left behind in its group, then waits for the
// shell.
func (p *proc) reap() (syscall.WaitStatus, error) {
	p.mu.Lock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // ESRCH when nothing is left
	p.reaped = true
	p.mu.Unlock()
	p.dropPidfd()
	var status syscall.WaitStatus
	for {
		_, err := syscall.Wait4(p.pid, &status, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			return status, err
		}
	}
}

func (p *proc) dropPidfd() {
	if p.pidfd >= 0 {
		_ = syscall.Close(p.pidfd)
		p.pidfd = -1
	}
}

// killGroup kills the shell's process group, and the shell by its PID,
// unless the shell has been waited for. The shell may have left the group
// (a program it exec'ed joined another group of the session), and Run
// waits for the shell. It is called from Run, and by a canceled ctx.
func (p *proc) killGroup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// ppoll waits for fds for at most d; d < 0: no limit.
func ppoll(fds []unix.PollFd, d time.Duration) (int, error) {
	if d < 0 {
		return unix.Ppoll(fds, nil, nil)
	}
	ts := unix.NsecToTimespec(int64(d))
	return unix.Ppoll(fds, &ts, nil)
}

// readOnce reads what fd has into w, once: ppoll said it would not block.
// It reports whether fd is still open for reading (not at EOF, no error).
func readOnce(fd int, buf []byte, w *sink) bool {
	n, err := syscall.Read(fd, buf)
	switch {
	case errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN):
		return true
	case err != nil || n == 0:
		return false
	}
	w.write(buf[:n])
	return true
}

// signaled is what os.ProcessState.String says of a shell a signal killed.
func signaled(status syscall.WaitStatus) string {
	if !status.Signaled() {
		return fmt.Sprintf("wait status %#x", uint32(status))
	}
	s := "signal: " + status.Signal().String()
	if status.CoreDump() {
		s += " (core dumped)"
	}
	return s
}

// sink is where one stream's output goes: all of it to live, when there is
// one, and what fits to the bounded copy.
type sink struct {
	boundedWriter
	live   Live
	stream Stream
}

func (s *sink) write(p []byte) {
	if s.live != nil {
		s.live.Write(s.stream, p)
	}
	_, _ = s.boundedWriter.Write(p) // never fails
}

func closeFDs(fds ...int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}
