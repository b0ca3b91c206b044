package timerslack

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/timerslack/timerslacktest"
)

// childEnv makes the test binary play the program that calls Raise: it
// raises the slack to the value given, then reports what the process has.
const childEnv = "TIMERSLACK_TEST_RAISE"

type report struct {
	PID        int
	Reexecuted bool
	Threads    map[string]int64 // tid: its slack in ns
	Denied     bool             // another thread's slack could not be read
	Before     int64
	Env        bool  // envBefore was still visible
	Child      int64 // a child's slack, forked in ForChild
	AfterFork  int64 // the forking thread's slack after ForChild
	Comm       string
	Err        string
}

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		d, _ := time.ParseDuration(v)
		playRaise(d)
		return
	}
	os.Exit(m.Run())
}

func playRaise(d time.Duration) {
	r := report{PID: os.Getpid()}
	if err := Raise(d); err != nil {
		r.Err = err.Error()
	}
	r.Reexecuted = reexecuted
	runtime.GC() // some work, so that the runtime has started its threads
	r.Threads, r.Denied = threadSlacks()
	r.Before = int64(before)
	_, r.Env = os.LookupEnv(envBefore)
	r.Child, r.AfterFork = forkChild()
	comm, _ := os.ReadFile("/proc/self/comm")
	r.Comm = strings.TrimSpace(string(comm))
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// threadSlacks reads the timer slack of every thread of this process.
// Reading another thread's needs CAP_SYS_NICE: denied says it was refused.
func threadSlacks() (map[string]int64, bool) {
	slacks, denied, _ := timerslacktest.Threads("self")
	return slacks, denied
}

// forkChild returns the slack of a child forked in ForChild, as the child
// reads it, and the forking thread's slack once ForChild has returned.
func forkChild() (child, after int64) {
	runtime.LockOSThread() // the same thread before, in and after ForChild
	defer runtime.UnlockOSThread()
	var out []byte
	_ = ForChild(func() error {
		var err error
		out, err = exec.Command("/bin/sh", "-c", "cat /proc/self/timerslack_ns").Output()
		return err
	})
	child, _ = strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	a, _ := get()
	return child, int64(a)
}

func runChild(t *testing.T, slack time.Duration) report {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+slack.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	if r.Err != "" {
		t.Fatalf("Raise: %s", r.Err)
	}
	if r.PID != cmd.Process.Pid {
		t.Errorf("the program ran as PID %d, started as %d: exec must keep the process", r.PID, cmd.Process.Pid)
	}
	return r
}

// needSysNice ends a test that could not read another thread's timer
// slack: the kernel wants CAP_SYS_NICE for that, which root has (make test
// as CI runs it). It fails, so that a check that did not run never passes,
// except under -short, which skips it.
func needSysNice(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: reading another thread's timer slack needs CAP_SYS_NICE")
	}
	t.Fatal("reading another thread's timer slack needs CAP_SYS_NICE: run the tests as root, as CI does, or with -short to skip this check")
}

// raised is a slack above this process's own, which Raise must set.
func raised(t *testing.T) (own, want time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own, err := get()
	if err != nil {
		t.Fatal(err)
	}
	return own, max(3*time.Millisecond, 2*own)
}

// TestRaiseSetsEveryThread: after Raise, every thread of the process, the
// runtime's own among them, has the slack asked for.
func TestRaiseSetsEveryThread(t *testing.T) {
	_, want := raised(t)
	r := runChild(t, want)
	if !r.Reexecuted {
		t.Error("Raise did not execute the program again")
	}
	if r.Denied {
		needSysNice(t)
	}
	if len(r.Threads) < 2 {
		t.Fatalf("read %d threads; want the runtime's too: %v", len(r.Threads), r.Threads)
	}
	for tid, ns := range r.Threads {
		if ns != int64(want) {
			t.Errorf("thread %s has %d ns of timer slack, want %d", tid, ns, want)
		}
	}
}

// TestForChildGivesTheSlackBefore: a child forked in ForChild gets the
// slack the process started with, the forking thread has the raised one
// again afterwards, the variable that carried it is gone, and the program
// keeps its name.
func TestForChildGivesTheSlackBefore(t *testing.T) {
	own, want := raised(t)
	r := runChild(t, want)
	if r.Before != int64(own) {
		t.Errorf("before = %d, want the slack the process started with, %d", r.Before, own)
	}
	if r.Child != int64(own) {
		t.Errorf("a child forked in ForChild has %d ns, want %d", r.Child, own)
	}
	if r.AfterFork != int64(want) {
		t.Errorf("the forking thread has %d ns after ForChild, want %d back", r.AfterFork, want)
	}
	if r.Env {
		t.Errorf("%s is still in the environment", envBefore)
	}
	// The kernel keeps the first 15 bytes of the name.
	if name := filepath.Base(os.Args[0]); r.Comm != name[:min(len(name), 15)] {
		t.Errorf("the program runs as %q, want %q: it must be executed by its own path", r.Comm, name)
	}
}

// TestRaiseZeroChangesNothing: slack 0 neither executes the program again
// nor changes the slack a child gets.
func TestRaiseZeroChangesNothing(t *testing.T) {
	own, _ := raised(t)
	r := runChild(t, 0)
	if r.Reexecuted {
		t.Error("Raise(0) executed the program again")
	}
	if r.Before != int64(own) || r.Child != int64(own) || r.AfterFork != int64(own) {
		t.Errorf("before %d, child %d, thread after %d; want all %d", r.Before, r.Child, r.AfterFork, own)
	}
}
