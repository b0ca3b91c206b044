package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// TestThroughputOf: the rate spans the first creation to the last finish,
// whichever tasks those are, and a task that did not succeed is an error,
// the first one read back included (it was dereferenced before its check).
func TestThroughputOf(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	task := func(created, started, finished time.Duration) client.Task {
		s, f := t0.Add(started), t0.Add(finished)
		return client.Task{ID: "t", Status: "succeeded", CreatedAt: t0.Add(created), StartedAt: &s, FinishedAt: &f}
	}
	// Four tasks over 2 s: the first created is the second read back, the
	// last finished the first.
	got, err := throughputOf([]client.Task{
		task(500*time.Millisecond, 600*time.Millisecond, 2*time.Second),
		task(0, 100*time.Millisecond, 200*time.Millisecond),
		task(time.Second, 1100*time.Millisecond, 1200*time.Millisecond),
		task(1500*time.Millisecond, 1600*time.Millisecond, 1700*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.rate-2) > 1e-9 {
		t.Errorf("rate %v, want 4 tasks / 2 s = 2", got.rate)
	}
	if math.Abs(got.q2s50-100) > 1e-9 {
		t.Errorf("queued->started p50 %v ms, want 100", got.q2s50)
	}

	unfinished := task(0, 0, 0)
	unfinished.Status, unfinished.FinishedAt = "running", nil
	for _, done := range [][]client.Task{{unfinished, task(0, 1, 2)}, {task(0, 1, 2), unfinished}} {
		if _, err := throughputOf(done); err == nil || !strings.Contains(err.Error(), "ended running") {
			t.Errorf("a task still running: err %v, want one saying it ended running", err)
		}
	}
	if _, err := throughputOf(nil); err == nil {
		t.Error("no task: no error")
	}
}

// TestPeerInE2E: the old system's runs with workers are made in the e2e
// phase when both phases run, so that each ratio to the old system pairs
// figures taken seconds apart; otherwise the peer phase makes them.
func TestPeerInE2E(t *testing.T) {
	for _, c := range []struct {
		peer   string
		phases string
		want   bool
	}{
		{"seed-server", "submit,e2e,peer,memory,assign", true},
		{"seed-server", "e2e,peer", true},
		{"seed-server", "peer,e2e", true},
		{"seed-server", "peer", false},
		{"seed-server", "submit,e2e", false},
		{"", "submit,e2e,peer", false},
	} {
		o := options{peer: c.peer, phases: strings.Split(c.phases, ",")}
		if got := peerInE2E(o); got != c.want {
			t.Errorf("peer %q, phases %s: %v, want %v", c.peer, c.phases, got, c.want)
		}
	}
}
