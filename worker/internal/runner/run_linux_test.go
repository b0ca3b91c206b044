//go:build linux && !runner_portable

package runner

import (
	"path/filepath"
	"testing"
	"time"
)

func TestRunWithoutPidfd(t *testing.T) {
	// Kernels before 5.2 give no pidfd: Run then looks for the shell's exit
	// every pollTick. The same behaviours must hold. Not parallel: noPidfd
	// is package state.
	noPidfd = true
	t.Cleanup(func() { noPidfd = false })
	t.Run("output and status", func(t *testing.T) {
		res := run(t, "echo hi; echo err >&2; exit 4", 0, 1024)
		if res.ExitCode != 4 || res.Err != "" || string(res.Stdout) != "hi\n" || string(res.Stderr) != "err\n" {
			t.Errorf("exit %d, err %q, stdout %q, stderr %q; want 4, hi, err", res.ExitCode, res.Err, res.Stdout, res.Stderr)
		}
	})
	t.Run("large output", func(t *testing.T) {
		res := run(t, "head -c 1000000 /dev/zero", 0, 100)
		if res.ExitCode != 0 || len(res.Stdout) != 100 || !res.StdoutTruncated {
			t.Errorf("exit %d, kept %d bytes, truncated %v; want 0, 100, true", res.ExitCode, len(res.Stdout), res.StdoutTruncated)
		}
	})
	t.Run("timeout kills the group", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		res := run(t, "sleep 30 & echo $! > "+pidFile+"; sleep 30", 200*time.Millisecond, 1024)
		if !res.TimedOut || res.ExitCode != -1 {
			t.Fatalf("timed out %v, exit %d; want a timeout", res.TimedOut, res.ExitCode)
		}
		pid := readPID(t, pidFile)
		eventually(t, func() bool { return gone(pid) }, 5*time.Second, "background child "+pid+" still alive after the timeout")
	})
	t.Run("shell exits leaving a child", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		res := run(t, "sleep 30 & echo $! > "+pidFile+"; exit 5", 0, 1024)
		if pid := readPID(t, pidFile); !gone(pid) {
			t.Errorf("background child %s still alive when Run returned", pid)
		}
		if res.ExitCode != 5 {
			t.Errorf("exit %d, want 5", res.ExitCode)
		}
	})
}
