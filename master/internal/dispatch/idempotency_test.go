package dispatch

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// countTasks returns how many tasks the store holds.
func countTasks(t *testing.T, d *Dispatcher) int {
	t.Helper()
	p, err := d.List(ctx, Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(p.Tasks)
}

// checkAgain submits again with first's key and wants the task first made
// back (differ ""), or a conflict naming the fields in differ that creates
// and changes nothing.
func checkAgain(t *testing.T, d *Dispatcher, first task.Task, again Submission, differ string) {
	t.Helper()
	again.IdempotencyKey = first.IdempotencyKey
	n := countTasks(t, d)
	got, created, err := d.Submit(ctx, again)
	if differ == "" {
		if err != nil || created || got.ID != first.ID {
			t.Fatalf("same request again = %s created %v, %v; want a replay of %s", got.ID, created, err, first.ID)
		}
		return
	}
	want := fmt.Sprintf("idempotency key %q was already used for another request (task %s); fields that differ: %s.", first.IdempotencyKey, first.ID, differ)
	if !errors.Is(err, task.ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("a request that differs in %s = %s created %v, %v; want ErrConflict saying %q", differ, got.ID, created, err, want)
	}
	if m := countTasks(t, d); m != n {
		t.Fatalf("the conflict left %d tasks, there were %d", m, n)
	}
	if now, err := d.Get(ctx, first.ID); err != nil || now.Priority != first.Priority || !now.RunAt.Equal(first.RunAt) || now.Cmd != first.Cmd {
		t.Fatalf("the conflict changed the task: %+v, %v; was %+v", now, err, first)
	}
}

// The same key with the same request is a replay; with a request that asks
// for anything else, a conflict naming what differs. Defaults count as
// given: a field left out matches its default given explicitly.
func TestIdempotentReplayComparesTheWholeRequest(t *testing.T) {
	d, _ := newTest(t)
	at := time.Date(2026, 3, 1, 9, 30, 0, 123456789, time.UTC) // ahead of the clock: scheduled
	full := Submission{Cmd: "echo full", Timeout: 90 * time.Second, MaxAttempts: 5, Priority: 2, Requires: req("gpu=nvidia,zone=eu"),
		RunAt: at, RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: 2 * time.Second, MaxBackoff: time.Minute}
	with := func(change func(*Submission)) Submission {
		s := full
		s.Requires, s.RetryOn = maps.Clone(full.Requires), slices.Clone(full.RetryOn)
		change(&s)
		return s
	}
	both := []task.Outcome{task.OutcomeFailed, task.OutcomeTimedOut}
	tests := []struct {
		name         string
		first, again Submission
		differ       string // "": a replay
	}{
		{"identical", full, full, ""},
		{"cmd", full, with(func(s *Submission) { s.Cmd = "echo other" }), "cmd"},
		{"timeout", full, with(func(s *Submission) { s.Timeout = time.Minute }), "timeout"},
		{"max_attempts", full, with(func(s *Submission) { s.MaxAttempts = 4 }), "max_attempts"},
		{"priority", full, with(func(s *Submission) { s.Priority = 1 }), "priority"},
		{"requires another value", full, with(func(s *Submission) { s.Requires["gpu"] = "amd" }), "requires"},
		{"requires one more", full, with(func(s *Submission) { s.Requires["disk"] = "ssd" }), "requires"},
		{"requires none", full, with(func(s *Submission) { s.Requires = nil }), "requires"},
		{"run_at a nanosecond later", full, with(func(s *Submission) { s.RunAt = at.Add(time.Nanosecond) }), "run_at"},
		{"run_at in another zone", full, with(func(s *Submission) { s.RunAt = at.In(time.FixedZone("CET", 3600)) }), ""},
		{"run_at left out", full, with(func(s *Submission) { s.RunAt = time.Time{} }), "run_at"},
		{"run_at where there was none", Submission{Cmd: "now"}, Submission{Cmd: "now", RunAt: at}, "run_at"},
		{"delay for run_at", full, with(func(s *Submission) { s.RunAt, s.Delay = time.Time{}, time.Hour }), "delay"},
		{"the same delay, later", Submission{Cmd: "later", Delay: 10 * time.Minute}, Submission{Cmd: "later", Delay: 10 * time.Minute}, ""},
		{"another delay", Submission{Cmd: "later", Delay: 10 * time.Minute}, Submission{Cmd: "later", Delay: 10*time.Minute + time.Nanosecond}, "delay"},
		{"delay 0s is none", Submission{Cmd: "now"}, Submission{Cmd: "now", Delay: 0}, ""},
		{"run_at past, again", Submission{Cmd: "past", RunAt: at.AddDate(-1, 0, 0)}, Submission{Cmd: "past", RunAt: at.AddDate(-1, 0, 0)}, ""},
		{"retry_on another", full, with(func(s *Submission) { s.RetryOn = []task.Outcome{task.OutcomeTimedOut} }), "retry_on"},
		{"retry_on none", full, with(func(s *Submission) { s.RetryOn, s.Backoff, s.MaxBackoff = nil, 0, 0 }), "retry_on"},
		{"retry_on in another order", Submission{Cmd: "r", RetryOn: both}, Submission{Cmd: "r", RetryOn: []task.Outcome{task.OutcomeTimedOut, task.OutcomeFailed}}, ""},
		{"backoff", full, with(func(s *Submission) { s.Backoff = time.Second }), "backoff"},
		{"max_backoff", full, with(func(s *Submission) { s.MaxBackoff = 2 * time.Minute }), "max_backoff"},
		{"several", full, with(func(s *Submission) { s.Priority, s.RunAt, s.MaxBackoff = 5, at.Add(time.Second), 2*time.Minute }), "priority, run_at, max_backoff"},
		{"defaults left out, then given", Submission{Cmd: "d"},
			Submission{Cmd: "d", Timeout: time.Hour, MaxAttempts: 3, Priority: task.DefaultPriority, Requires: map[string]string{}}, ""},
		{"defaults given, then left out", Submission{Cmd: "d", Timeout: time.Hour, MaxAttempts: 3, Priority: task.DefaultPriority}, Submission{Cmd: "d"}, ""},
		{"a default left out, another value given", Submission{Cmd: "d"}, Submission{Cmd: "d", Timeout: 2 * time.Hour}, "timeout"},
		{"backoffs left out, then given", Submission{Cmd: "r", RetryOn: both},
			Submission{Cmd: "r", RetryOn: both, Backoff: defaultBackoff, MaxBackoff: defaultMaxBackoff}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.first.IdempotencyKey = fmt.Sprintf("key-%d", i)
			first, created, err := d.Submit(ctx, tt.first)
			if err != nil || !created {
				t.Fatalf("first = %v, %v", created, err)
			}
			checkAgain(t, d, first, tt.again, tt.differ)
			checkAgain(t, d, first, tt.first, "") // the key still names the task, unchanged
		})
	}
}

// The comparison reads the task a restarted master has: a live one it
// loaded, and a final one it reads by its key from the store.
func TestIdempotentReplayComparesAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	ranSub := Submission{Cmd: "true", IdempotencyKey: "ran", Priority: 2, RunAt: time.Date(2025, 6, 1, 0, 0, 0, 987654321, time.UTC)}
	ran := submitOne(t, d, ranSub)
	drain(w)
	finish(t, d, w, ran, 0)
	d.Unregister(w)
	delayedSub := Submission{Cmd: "later", IdempotencyKey: "delayed", Delay: time.Hour, Requires: req("gpu=nvidia"), RetryOn: []task.Outcome{task.OutcomeFailed}}
	delayed := submitOne(t, d, delayedSub)
	queuedSub := Submission{Cmd: "queued", IdempotencyKey: "queued", Priority: 5, Timeout: time.Minute}
	queued := submitOne(t, d, queuedSub)
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clk, 100)
	for _, c := range []struct {
		id  string
		sub Submission
	}{{ran, ranSub}, {delayed, delayedSub}, {queued, queuedSub}} {
		first, err := d2.Get(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		checkAgain(t, d2, first, c.sub, "")
		other := c.sub
		other.Priority = 1
		checkAgain(t, d2, first, other, "priority")
		other = c.sub
		other.RunAt, other.Delay = time.Time{}, time.Hour+time.Nanosecond
		checkAgain(t, d2, first, other, "delay")
	}
}

// A retry under the task's retry_on, or by hand, replaces its run_at; the
// request's run time is compared all the same, with the one it was
// submitted with (task.Request): the same request still replays, and one
// with another run time is a conflict.
func TestIdempotentReplayAfterRetries(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	past := time.Date(2025, 6, 1, 0, 0, 0, 5, time.UTC)

	retried := Submission{Cmd: "exit 1", IdempotencyKey: "retried", RunAt: past, MaxAttempts: 3, RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: time.Minute}
	id := submitOne(t, d, retried)
	drain(w)
	finish(t, d, w, id, 1) // scheduled to run again in a minute: run_at is the retry's
	first, _ := d.Get(ctx, id)
	if first.Status != task.StatusScheduled || first.RunAt.Equal(past) {
		t.Fatalf("after a failure the task is %s to run at %s; want it scheduled for its retry", first.Status, first.RunAt)
	}
	checkAgain(t, d, first, retried, "")
	other := retried
	other.RunAt = first.RunAt // the retry's time is not what was asked for
	checkAgain(t, d, first, other, "run_at")

	plain := Submission{Cmd: "exit 0", IdempotencyKey: "plain", RunAt: past}
	id = submitOne(t, d, plain)
	drain(w)
	finish(t, d, w, id, 0)
	first, _ = d.Get(ctx, id)
	checkAgain(t, d, first, plain, "")
	later := plain
	later.RunAt = past.Add(time.Nanosecond)
	checkAgain(t, d, first, later, "run_at")

	if _, err := d.Retry(ctx, id); err != nil { // by hand: run_at cleared
		t.Fatal(err)
	}
	first, _ = d.Get(ctx, id)
	if !first.RunAt.IsZero() {
		t.Fatalf("a retry by hand left run_at %s", first.RunAt)
	}
	checkAgain(t, d, first, plain, "")
	checkAgain(t, d, first, later, "run_at")
	none := plain
	none.RunAt = time.Time{}
	checkAgain(t, d, first, none, "run_at")
}

// A task canceled while scheduled, before it ever ran, and then retried
// by hand has no run_at left; a replay of its request, run_at and all, is
// still that request.
func TestIdempotentReplayAfterACancelAndARetry(t *testing.T) {
	d, clk := newTest(t)
	sub := Submission{Cmd: "later", IdempotencyKey: "later", RunAt: clk.Now().Add(time.Hour)}
	id := submitOne(t, d, sub)
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	first, _ := d.Get(ctx, id)
	if first.Status != task.StatusQueued || !first.RunAt.IsZero() {
		t.Fatalf("canceled and retried: %s, run_at %s; want queued without one", first.Status, first.RunAt)
	}
	checkAgain(t, d, first, sub, "")
	delay := sub
	delay.RunAt, delay.Delay = time.Time{}, sub.RunAt.Sub(first.CreatedAt) // the same instant, said another way
	checkAgain(t, d, first, delay, "")
	other := sub
	other.RunAt = sub.RunAt.Add(time.Second)
	checkAgain(t, d, first, other, "run_at")
}

// A field both requests leave out agrees whatever the master's setting was
// for the first and is now: a master restarted with another
// MASTER_TASK_TIMEOUT or MASTER_MAX_ATTEMPTS still replays the same
// request. A field only one of them leaves out counts as the default
// applied to it: then, for the first; now, for the replay.
func TestIdempotentReplayAfterTheDefaultsChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	plain := Submission{Cmd: "true", IdempotencyKey: "ran"} // timeout 1h, max_attempts 3: the defaults
	ran := submitOne(t, d, plain)
	drain(w)
	finish(t, d, w, ran, 0)
	d.Unregister(w)
	queuedSub := Submission{Cmd: "queued", IdempotencyKey: "queued"}
	queued := submitOne(t, d, queuedSub)
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clk, 100)
	d2.p.DefaultTimeout, d2.p.MaxAttempts = 2*time.Hour, 5
	for _, c := range []struct {
		id  string
		sub Submission
	}{{ran, plain}, {queued, queuedSub}} {
		first, err := d2.Get(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if first.Timeout != time.Hour || first.MaxAttempts != 3 {
			t.Fatalf("task %s: timeout %s, max_attempts %d; want the defaults it was submitted with", c.id, first.Timeout, first.MaxAttempts)
		}
		checkAgain(t, d2, first, c.sub, "")
		given := c.sub
		given.Timeout, given.MaxAttempts = time.Hour, 3 // what the first got by default
		checkAgain(t, d2, first, given, "")
		given.Timeout, given.MaxAttempts = 2*time.Hour, 5 // what a new one would
		checkAgain(t, d2, first, given, "timeout, max_attempts")
	}

	// Given explicitly the first time: a replay that leaves it out asks
	// for today's default, and that differs.
	explicit := Submission{Cmd: "true", IdempotencyKey: "explicit", Timeout: time.Hour, MaxAttempts: 3}
	id := submitOne(t, d2, explicit)
	d2.p.DefaultTimeout, d2.p.MaxAttempts = time.Hour, 3
	first, _ := d2.Get(ctx, id)
	checkAgain(t, d2, first, Submission{Cmd: "true"}, "") // today's defaults are what it gave
	d2.p.DefaultTimeout = 2 * time.Hour
	checkAgain(t, d2, first, Submission{Cmd: "true"}, "timeout")
}
