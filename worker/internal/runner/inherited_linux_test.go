//go:build linux

package runner

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

const inheritedChildEnv = "RUNNER_TEST_INHERITED_CHILD"

// A descriptor the worker inherited without close-on-exec (from the shell
// or service manager that started it) must not reach the commands it runs:
// a command gets its stdin, stdout and stderr, nothing else. The test runs
// in a process of its own, started with such a descriptor as its fd 3,
// before any run of its own.
func TestRunPassesNoInheritedDescriptor(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if inChild(t, inheritedChildEnv, w) { // fd 3 in the child, without close-on-exec
		inheritedChild(t)
	}
}

func inheritedChild(t *testing.T) {
	flags, err := unix.FcntlInt(3, unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("fd 3: flags %#x, %v; want an inherited descriptor without close-on-exec", flags, err)
	}
	res := Run(context.Background(), "ls /proc/$$/fd", Options{MaxOutput: 1024})
	if res.ExitCode != 0 || string(res.Stdout) != "0\n1\n2\n" {
		t.Fatalf("the command's descriptors: exit %d, %q, stderr %q; want 0, 1 and 2 only", res.ExitCode, res.Stdout, res.Stderr)
	}
}
