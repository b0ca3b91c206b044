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
	before     time.Duration // see Before
	reexecuted bool          // this image was executed by Raise
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
// If the process already runs with that much (so also in the image Raise
// executed), it returns nil at once. Otherwise it executes the program
// again, with the same arguments and environment, and returns only if it
// could not: then the slack is as it was and the error says why. Call it
// first thing in main, before any goroutine or file the program needs:
// exec replaces the whole process, keeping only its PID. slack 0 leaves
// the slack alone.
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
	if cur >= slack || reexecuted {
		// Already raised, or raised and not kept: never exec twice.
		return nil
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

// Restore sets the calling thread's timer slack back to Before, for a
// child about to be forked from it. The caller holds the thread with
// runtime.LockOSThread until the fork is done.
func Restore() error {
	if err := set(before); err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	return nil
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
