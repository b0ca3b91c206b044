//go:build linux && !runner_portable

package runner

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const devNullChildEnv = "RUNNER_TEST_DEVNULL_CHILD"

// A run that cannot open /dev/null for lack of descriptors fails; once
// descriptors are free again, runs must work again. devNull is opened once
// per process, so the test runs in a process of its own in which the
// first run is the one that runs out.
func TestRunRecoversFromATransientOpenFailure(t *testing.T) {
	if inChild(t, devNullChildEnv) {
		devNullChild(t)
	}
}

func devNullChild(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// No descriptor left: the first run's open of /dev/null fails.
	low := lim
	low.Cur = uint64(lowestFreeFD(t)) // an open gets the lowest free number, which must be below the limit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	res := Run(context.Background(), "echo hi", Options{MaxOutput: 1024})
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Err, "too many open files") {
		t.Fatalf("run with no descriptor left: err %q, want too many open files", res.Err)
	}
	// Descriptors are free again: the next task must run.
	res = Run(context.Background(), "echo hi", Options{MaxOutput: 1024})
	if res.ExitCode != 0 || res.Err != "" || string(res.Stdout) != "hi\n" {
		t.Fatalf("run after descriptors were freed: exit %d, err %q, stdout %q; want exit 0 and hi (every later task fails the same way until the worker restarts)", res.ExitCode, res.Err, res.Stdout)
	}
}

func lowestFreeFD(t *testing.T) int {
	t.Helper()
	for fd := 0; ; fd++ {
		if _, err := os.Lstat("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
			return fd
		}
	}
}
