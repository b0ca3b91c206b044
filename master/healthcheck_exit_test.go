package main

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// TestHealthcheckBadConfigExits1: `master healthcheck` exits 0 or 1 (README),
// since Docker reserves a healthcheck's exit status 2. With a configuration
// it cannot load (a token file gone, a bad value) it exited 2, the start-up
// error's status, as `worker healthcheck` takes care not to. The test runs
// main in a child process of the test binary, as the image runs it.
func TestHealthcheckBadConfigExits1(t *testing.T) {
	if os.Getenv("MASTER_TEST_RUN_MAIN") == "1" {
		os.Args = []string{"master", "healthcheck"}
		main()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHealthcheckBadConfigExits1$")
	cmd.Env = append(os.Environ(), "MASTER_TEST_RUN_MAIN=1", "MASTER_MAX_WAIT=0s")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("master healthcheck with a bad configuration: %v, want exit status 1; output:\n%s", err, out)
	}
}
