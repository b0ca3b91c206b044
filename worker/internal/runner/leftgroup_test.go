package runner

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// leftGroupEnv makes the test binary, run as a task's command, move itself
// into its parent's process group and write its PID to the file named.
const leftGroupEnv = "RUNNER_TEST_LEFT_GROUP_PIDFILE"

// The shell itself (here a program it exec'ed) moves out of its process
// group, into the worker's, which setpgid allows a group leader that is
// not a session leader. A kill of the group then misses it: a timeout or a
// cancel must still end it, and Run return, or the task holds its slot
// for good (a cancel from the master kills only the group again).
func TestRunShellThatLeftItsGroup(t *testing.T) {
	if file := os.Getenv(leftGroupEnv); file != "" {
		leftGroupChild(t, file)
		return
	}
	tests := []struct {
		name     string
		timeout  time.Duration
		cancel   bool // cancel once the command has left its group
		wantErr  string
		wantTime bool
	}{
		{name: "canceled", cancel: true, wantErr: "canceled"},
		{name: "timed out", timeout: 2 * time.Second, wantErr: "timed out after 2s", wantTime: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			t.Cleanup(func() {
				if b, err := os.ReadFile(pidFile); err == nil {
					if n, err := strconv.Atoi(string(b)); err == nil && !gone(string(b)) {
						_ = syscall.Kill(n, syscall.SIGKILL) // the test's leftover, by its own PID
					}
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan Result, 1)
			cmd := "exec '" + os.Args[0] + "' -test.run='^TestRunShellThatLeftItsGroup$'"
			env := append(os.Environ(), leftGroupEnv+"="+pidFile)
			go func() { done <- Run(ctx, cmd, Options{Timeout: tt.timeout, MaxOutput: 1024, Env: env}) }()
			eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, testDeadline, "the command never left its group")
			if tt.cancel {
				cancel()
			}
			var res Result
			select {
			case res = <-done:
			case <-time.After(testDeadline):
				t.Fatalf("Run still running %s after the command left its group; it was to be killed", testDeadline)
			}
			if res.Err != tt.wantErr || res.TimedOut != tt.wantTime || res.ExitCode != -1 {
				t.Errorf("err %q, timed out %v, exit %d; want %q, %v, -1", res.Err, res.TimedOut, res.ExitCode, tt.wantErr, tt.wantTime)
			}
			b, _ := os.ReadFile(pidFile)
			if !gone(string(b)) {
				t.Errorf("command %s still alive when Run returned", b)
			}
		})
	}
}

func leftGroupChild(t *testing.T, pidFile string) {
	pgid, err := syscall.Getpgid(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setpgid(0, pgid); err != nil {
		t.Fatal(err)
	}
	// Written whole at once, after the move: the parent waits for it.
	tmp := pidFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, pidFile); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute) // until killed: the parent's test fails long before
}
