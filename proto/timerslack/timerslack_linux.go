package timerslack

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// prctl(2) options.
const (
	prSetTimerslack = 29
	prGetTimerslack = 30
)

var (
	// before is the slack the process had before Raise raised it: what
	// ForChild gives a child.
	before time.Duration
	// reexecuted: this image was executed by Raise, so its threads run
	// with a slack other than before, which children must not inherit.
	reexecuted bool
)

func init() {
	// Package init runs on the main thread, whose slack is the process's.
	if v, ok := os.LookupEnv(envBefore); ok {
		_ = os.Unsetenv(envBefore)
		reexecuted = true
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil && ns > 0 {
			before = time.Duration(ns)
			return
		}
	}
	before, _ = get()
}

// Raise gives every thread of this process at least slack of timer slack.
// If the process already runs with that much, it returns nil at once.
// Otherwise it executes the program again, with the same arguments and
// environment, and returns only if it could not: then the slack is as it
// was and the error says why. In the image it executed, Raise returns nil,
// or an error if the slack did not hold across exec; it never executes the
// program twice. Call it first thing in main, before any goroutine or file
// the program needs: exec replaces the whole process, keeping its PID.
// slack 0 leaves the slack alone.
func Raise(slack time.Duration) error {
	if slack <= 0 {
		return nil
	}
	runtime.LockOSThread() // set it on the thread that calls exec
	defer runtime.UnlockOSThread()
	cur, err := get()
	if err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	if cur >= slack {
		return nil
	}
	if reexecuted {
		return fmt.Errorf("timer slack: raised to %s, but the program runs with %s", slack, cur)
	}
	if err := set(slack); err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	env := append(os.Environ(), envBefore+"="+strconv.FormatInt(int64(before), 10))
	path := self()
	err = syscall.Exec(path, os.Args, env)
	_ = set(cur)
	return fmt.Errorf("timer slack: executing %s again: %w", path, err)
}

// self is the path to execute this program by: its own file, since the
// kernel names a process after the file it executes (ps, top), unless that
// file is no longer this program (replaced by a new build, say); then
// /proc/self/exe, which always is, and the process is named "exe".
func self() string {
	const proc = "/proc/self/exe"
	p, err := os.Executable()
	if err != nil {
		return proc
	}
	a, errA := os.Stat(p)
	b, errB := os.Stat(proc)
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		return proc
	}
	return p
}

// ForChild calls fork, which starts a child process from the calling
// thread, with that thread's slack set to before for the time of the call,
// so that the child starts with the slack the program had before Raise;
// then sets the thread's slack back, for the runtime's other uses of it and
// the threads it may make from it. Where Raise changed nothing, it only
// calls fork. If the slack cannot be set, fork runs all the same and the
// child inherits the program's.
func ForChild(fork func() error) error {
	if !reexecuted {
		return fork()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := get()
	if err != nil || set(before) != nil {
		return fork()
	}
	defer func() { _ = set(cur) }()
	return fork()
}

func get() (time.Duration, error) {
	r, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerslack, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return time.Duration(r), nil
}

func set(d time.Duration) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, uintptr(d), 0); errno != 0 {
		return errno
	}
	return nil
}
