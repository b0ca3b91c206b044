//go:build linux

package runner

import (
	"os"
	"os/exec"
	"testing"
)

// inChild runs the test t again in a process of its own, with env set to
// 1 and files as its descriptors 3 and up, and fails t if that process
// fails; it reports whether it is that process, which then runs the test's
// body. For what a process does once (descriptors opened or marked on the
// first run), which the test must see from its start.
func inChild(t *testing.T, env string, files ...*os.File) bool {
	t.Helper()
	if os.Getenv(env) != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.ExtraFiles = files
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return false
}
