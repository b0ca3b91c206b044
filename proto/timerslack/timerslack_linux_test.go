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
)

// childEnv makes the test binary play the program that calls Raise: it
// raises the slack to the value given, then prints what the process has.
const childEnv = "TIMERSLACK_TEST_RAISE"

type report struct {
	PID     int
	Threads map[string]int64 // tid: its slack in ns
	Before  int64
	Env     bool // envBefore was still visible
	Child   int64
	Comm    string // the process's name
	Err     string
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
	var r report
	r.PID = os.Getpid()
	if err := Raise(d); err != nil {
		r.Err = err.Error()
	}
	runtime.GC() // some work, so that the runtime has started its threads
	r.Threads = threadSlacks()
	r.Before = int64(Before())
	_, r.Env = os.LookupEnv(envBefore)
	r.Child = childSlack()
	comm, _ := os.ReadFile("/proc/self/comm")
	r.Comm = strings.TrimSpace(string(comm))
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// threadSlacks reads the timer slack of every thread of this process.
func threadSlacks() map[string]int64 {
	out := map[string]int64{}
	tids, _ := os.ReadDir("/proc/self/task")
	for _, t := range tids {
		b, err := os.ReadFile("/proc/" + t.Name() + "/timerslack_ns")
		if err != nil {
			continue // the thread has exited
		}
		out[t.Name()], _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	return out
}

// childSlack is the slack a child forked after Restore starts with.
func childSlack() int64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := Restore(); err != nil {
		return -1
	}
	b, err := exec.Command("/bin/sh", "-c", "cat /proc/self/timerslack_ns").Output()
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func runChild(t *testing.T, slack string) report {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+slack)
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

func ownSlack(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// TestRaiseSetsEveryThread: after Raise, every thread of the process,
// the runtime's own among them, has the slack asked for, while a child
// forked after Restore gets the slack the process started with, and the
// variable that carried it is gone.
func TestRaiseSetsEveryThread(t *testing.T) {
	start := ownSlack(t)
	want := max(3*time.Millisecond, 2*time.Duration(start))
	r := runChild(t, want.String())
	if len(r.Threads) < 2 {
		t.Fatalf("read %d threads; want the runtime's too: %v", len(r.Threads), r.Threads)
	}
	for tid, ns := range r.Threads {
		if ns != int64(want) {
			t.Errorf("thread %s has %d ns of timer slack, want %d", tid, ns, want)
		}
	}
	if r.Before != start {
		t.Errorf("Before() = %d, want the slack the process started with, %d", r.Before, start)
	}
	if r.Child != start {
		t.Errorf("a child forked after Restore has %d ns, want %d", r.Child, start)
	}
	if r.Env {
		t.Errorf("%s is still in the environment", envBefore)
	}
	// The kernel keeps the first 15 bytes of the name.
	if want := filepath.Base(os.Args[0]); r.Comm != want[:min(len(want), 15)] {
		t.Errorf("the program runs as %q, want %q: it must be executed by its own path", r.Comm, want)
	}
}

// TestRaiseZeroChangesNothing: slack 0 neither executes the program again
// nor changes a thread.
func TestRaiseZeroChangesNothing(t *testing.T) {
	start := ownSlack(t)
	r := runChild(t, "0s")
	for tid, ns := range r.Threads {
		if ns != start {
			t.Errorf("thread %s has %d ns of timer slack, want %d as before", tid, ns, start)
		}
	}
	if r.Before != start || r.Child != start {
		t.Errorf("Before() %d, child %d; want both %d", r.Before, r.Child, start)
	}
}
