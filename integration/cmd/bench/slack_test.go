package main

import (
	"path/filepath"
	"strconv"
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
		// It printed its address, so it serves: Raise came first.
		slacks, denied, err := timerslacktest.Threads(strconv.Itoa(cmd.Process.Pid))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		switch {
		case err != nil:
			t.Fatal(err)
		case denied && testing.Short():
			t.Skip("-short: reading another process's timer slack needs CAP_SYS_NICE")
		case denied:
			t.Fatal("reading another process's timer slack needs CAP_SYS_NICE: run the tests as root, as CI does, or with -short to skip this check")
		}
		if len(slacks) < 2 {
			t.Errorf("%s has %d threads; want the runtime's too", s.role, len(slacks))
		}
		for tid, ns := range slacks {
			if ns != int64(want) {
				t.Errorf("%s's thread %s has %d ns of timer slack, want %d", s.role, tid, ns, want)
			}
		}
	}
}
