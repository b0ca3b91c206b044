package main

import (
	"net"
	"testing"
	"time"
)

// TestExecLogCounts feeds an old-system worker's console, as it prints it,
// and checks what is counted as executed and when the last task ended.
func TestExecLogCounts(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	lines := []struct {
		text string
		at   time.Time
	}{
		{"Starting worker node w1 connecting to localhost:50051...", at(0)},
		{"Worker w1 starting, connecting to master at localhost:50051", at(1)},
		{"Worker w1 connected to master", at(2)},
		{"Worker w1 received command: true", at(10)},
		{"Worker w1: Command output:", at(11)},
		{"", at(11)}, // true's empty output
		{"Worker w1 received command: echo Worker w1 received command: x", at(20)},
		{"Worker w1: Command output:", at(21)},
		{"Worker w1 received command: x", at(21)}, // the echo's output: indistinguishable, and counted
		{"", at(21)},
		{"Worker w1 received command: false", at(30)},
		{"Worker w1: Command failed: exit status 1", at(31)},
		{"Worker w1 received command: sleep 9", at(40)}, // still running
		{"hello from a command", at(50)},
		{"Worker", at(60)},
	}
	var l execLog
	for _, ln := range lines {
		l.observe(ln.text, ln.at)
	}
	got := tally([]*execLog{&l})
	want := execTally{connected: 1, received: 5, finished: 3, last: at(40)}
	if got != want {
		t.Errorf("tally = %+v, want %+v", got, want)
	}

	// A second worker: the tally sums the counts and keeps the latest line.
	var l2 execLog
	l2.observe("Worker w2 connected to master", at(0))
	l2.observe("Worker w2 received command: true", at(100))
	l2.observe("Worker w2: Command output:", at(101))
	got = tally([]*execLog{&l, &l2})
	want = execTally{connected: 2, received: 6, finished: 4, last: at(101)}
	if got != want {
		t.Errorf("tally of two = %+v, want %+v", got, want)
	}
	if got := tally(nil); got != (execTally{}) {
		t.Errorf("tally of none = %+v", got)
	}
}

func TestPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if err := portFree(port); err == nil {
		t.Errorf("portFree(%s) with a listener on it: nil error", port)
	}
	l.Close()
	if err := portFree(port); err != nil {
		t.Errorf("portFree(%s) once closed: %v", port, err)
	}
}

func TestCheckPeerNeedsAnExecutable(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{dir, dir + "/missing"} {
		if err := checkPeer(path); err == nil {
			t.Errorf("checkPeer(%s) = nil, want an error", path)
		}
	}
}
