// Package timerslacktest reads the timer slack of a process's threads, for
// the tests of proto/timerslack and of the programs that use it.
package timerslacktest

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Own is the calling thread's timer slack (prctl PR_GET_TIMERSLACK), which
// needs no privilege, unlike reading it from /proc.
func Own() (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const prGetTimerslack = 30
	r, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerslack, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return time.Duration(r), nil
}

// Threads reads the timer slack, in ns, of every thread of process pid
// ("self" for the caller's), keyed by thread ID. Reading another thread's,
// the caller's own included, needs CAP_SYS_NICE: denied says it was
// refused. A thread that exits meanwhile is left out.
func Threads(pid string) (slacks map[string]int64, denied bool, err error) {
	tids, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return nil, false, err
	}
	slacks = map[string]int64{}
	for _, tid := range tids {
		b, err := os.ReadFile("/proc/" + tid.Name() + "/timerslack_ns")
		if errors.Is(err, fs.ErrPermission) {
			return nil, true, nil
		}
		if err != nil {
			continue // the thread has exited
		}
		slacks[tid.Name()], _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	return slacks, false, nil
}

// Want fails t unless every thread of process pid, the Go runtime's own
// among them (at least two), has want of timer slack. Reading another
// process's slack needs CAP_SYS_NICE: without it Want fails, so that a
// check that did not run never passes, unless -short, where it skips.
func Want(t testing.TB, name string, pid int, want time.Duration) {
	t.Helper()
	slacks, denied, err := Threads(strconv.Itoa(pid))
	switch {
	case err != nil:
		t.Fatal(err)
	case denied && testing.Short():
		t.Skip("-short: reading another process's timer slack needs CAP_SYS_NICE")
	case denied:
		t.Fatal("reading another process's timer slack needs CAP_SYS_NICE: run the tests as root, as CI does, or with -short to skip this check")
	}
	if len(slacks) < 2 {
		t.Errorf("%s has %d threads; want the runtime's too", name, len(slacks))
	}
	for tid, ns := range slacks {
		if ns != int64(want) {
			t.Errorf("%s's thread %s has %d ns of timer slack, want %d", name, tid, ns, want)
		}
	}
}
