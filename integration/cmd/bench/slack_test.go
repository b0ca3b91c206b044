package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/timerslack/timerslacktest"
)

// TestServersRunWithTheMastersTimerSlack: the minimal and durable handlers
// and the floor master, the master's ceiling and bounds, run every thread
// with the master's default timer slack (1 ms), as the master does, so
// that they are measured alike.
func TestServersRunWithTheMastersTimerSlack(t *testing.T) {
	ours, err := timerslacktest.Own()
	if err != nil {
		t.Fatal(err)
	}
	want := max(ours, time.Millisecond) // Raise never lowers it
	dir := t.TempDir()
	for _, s := range []struct {
		role string
		env  []string
	}{
		{"minimal-handler", nil},
		{"durable-handler", []string{durableDBEnv + "=" + filepath.Join(dir, "durable.db")}},
		{"floor-master", []string{durableDBEnv + "=" + filepath.Join(dir, "floor.db")}},
	} {
		_, cmd, err := startHandler(s.role, s.env...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		// It printed its address, so it serves: Raise came first.
		timerslacktest.Want(t, s.role, cmd.Process.Pid, want)
	}
}
