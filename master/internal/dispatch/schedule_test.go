package dispatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// registerWith registers a worker with labels ("k=v,k=v").
func registerWith(t *testing.T, d *Dispatcher, id string, slots int, lbls string) *Session {
	t.Helper()
	set, err := labels.Parse(lbls)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := d.Register(ctx, Registration{WorkerID: id, InstanceID: id + "-instance", Slots: slots, Labels: set})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return s
}

// submitOne submits sub and returns the task's ID.
func submitOne(t *testing.T, d *Dispatcher, sub Submission) string {
	t.Helper()
	if sub.Cmd == "" {
		sub.Cmd = "true"
	}
	tk, _, err := d.Submit(ctx, sub)
	if err != nil {
		t.Fatalf("submit %+v: %v", sub, err)
	}
	return tk.ID
}

func req(s string) map[string]string {
	set, err := labels.Parse(s)
	if err != nil {
		panic(err)
	}
	return set
}

// The most urgent task goes first, oldest first within a priority, and a
// task re-queued after its worker was lost keeps its place in its priority.
func TestPriorityOrder(t *testing.T) {
	d, _ := newTest(t)
	w := register(t, d, "w", 1)
	busy := submitOne(t, d, Submission{Priority: 5})
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{busy}) {
		t.Fatalf("first task: got %v", got)
	}
	var order []string
	for i, p := range []int{5, 5, 1, 3, 1, 0} {
		id := submitOne(t, d, Submission{Cmd: fmt.Sprint("echo ", i), Priority: p})
		order = append(order, id)
	}
	want := []string{order[2], order[4], order[3], order[5], order[0], order[1]} // 1, 1, 3, 3 (the default), 5, 5
	var got []string
	running := busy
	for range want {
		finish(t, d, w, running, 0)
		next := drain(w)
		if len(next) != 1 {
			t.Fatalf("after a result the worker got %v, want one task", next)
		}
		running = next[0]
		got = append(got, running)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v (priority 1s, 3s, 5s, oldest first in each)", got, want)
	}
	if st := d.Stats(); st.ByPriority != [5]int{} || st.Queued != 0 {
		t.Fatalf("stats after all ran: %+v", st)
	}
}

// Tasks that require a label run only where it is, round-robin among the
// workers that have it; tasks that require nothing go round the whole
// rotation.
func TestRoutingByLabelsIsRoundRobinAmongEligible(t *testing.T) {
	d, _ := newTest(t)
	ws := []*Session{
		registerWith(t, d, "plain-1", 10, ""),
		registerWith(t, d, "gpu-1", 10, "gpu=nvidia,zone=eu"),
		registerWith(t, d, "plain-2", 10, "zone=eu"),
		registerWith(t, d, "gpu-2", 10, "gpu=nvidia"),
	}
	on := map[string]string{}
	runOn := func(sub Submission) string { // the worker the task went to
		id := submitOne(t, d, sub)
		for _, s := range ws {
			for _, got := range drain(s) {
				on[got] = s.WorkerID
			}
		}
		return on[id]
	}
	var gpuOrder []string
	for i := range 8 {
		gpuOrder = append(gpuOrder, runOn(Submission{Cmd: fmt.Sprint("gpu ", i), Requires: req("gpu=nvidia")}))
	}
	if want := "gpu-1 gpu-2 gpu-1 gpu-2 gpu-1 gpu-2 gpu-1 gpu-2"; strings.Join(gpuOrder, " ") != want {
		t.Fatalf("gpu tasks ran on %v, want %s", gpuOrder, want)
	}
	var plainOrder []string
	for i := range 4 {
		plainOrder = append(plainOrder, runOn(Submission{Cmd: fmt.Sprint("plain ", i)}))
	}
	// The last gpu task went to gpu-2, the last in the rotation: plain
	// tasks go on from the start.
	if want := "plain-1 gpu-1 plain-2 gpu-2"; strings.Join(plainOrder, " ") != want {
		t.Fatalf("plain tasks ran on %v, want %s", plainOrder, want)
	}
	id := submitOne(t, d, Submission{Requires: req("zone=eu,gpu=nvidia")})
	if got := drain(ws[1]); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Fatalf("a task requiring gpu=nvidia,zone=eu: gpu-1 got %v, want it (the only worker with both)", got)
	}
}

// A task nobody can run waits, says why, and runs once a worker that can
// joins; it does not hold up the tasks behind it.
func TestUnroutableTaskSaysWhyAndRunsWhenAWorkerJoins(t *testing.T) {
	d, _ := newTest(t)
	plain := registerWith(t, d, "plain", 5, "zone=eu")
	tk, _, err := d.Submit(ctx, Submission{Cmd: "train", Priority: 1, Requires: req("gpu=nvidia,zone=eu")})
	if err != nil {
		t.Fatal(err)
	}
	if want := "no connected worker has gpu=nvidia,zone=eu; the nearest lacks gpu=nvidia"; tk.Status != task.StatusQueued || tk.WaitingFor != want {
		t.Fatalf("submitted: status %s, waiting_for %q; want queued, waiting for %q", tk.Status, tk.WaitingFor, want)
	}
	behind := submitOne(t, d, Submission{Priority: 5})
	if got := drain(plain); fmt.Sprint(got) != fmt.Sprint([]string{behind}) {
		t.Fatalf("the plain worker got %v, want the priority-5 task behind the one it cannot run", got)
	}
	got, err := d.Get(ctx, tk.ID)
	if err != nil || got.Status != task.StatusQueued || got.WaitingFor != tk.WaitingFor {
		t.Fatalf("Get = %s %q, %v", got.Status, got.WaitingFor, err)
	}
	b := d.Backlog()
	if b.Queued != 1 || b.ByPriority[0] != 1 || len(b.Groups) != 1 || b.Groups[0].Eligible != 0 ||
		labels.String(b.Groups[0].Requires) != "gpu=nvidia,zone=eu" || !strings.Contains(b.Groups[0].WaitingFor, "gpu=nvidia") {
		t.Fatalf("backlog = %+v", b)
	}
	gpu := registerWith(t, d, "gpu", 1, "gpu=nvidia,zone=eu")
	if got := drain(gpu); fmt.Sprint(got) != fmt.Sprint([]string{tk.ID}) {
		t.Fatalf("the gpu worker got %v, want %s", got, tk.ID)
	}
	if b := d.Backlog(); b.Queued != 0 || len(b.Groups) != 0 {
		t.Fatalf("backlog after it ran = %+v", b)
	}
	if got, _ := d.Get(ctx, tk.ID); got.WaitingFor != "" {
		t.Fatalf("a running task waits for %q", got.WaitingFor)
	}
}

func TestSchedulingFieldsAreChecked(t *testing.T) {
	d, _ := newTest(t)
	for _, tt := range []struct {
		name string
		sub  Submission
		want string
	}{
		{"priority too low", Submission{Priority: -1}, "priority must be between 1"},
		{"priority too high", Submission{Priority: 6}, "priority must be between 1"},
		{"bad label key", Submission{Requires: map[string]string{"-gpu": "x"}}, "requires: label key"},
		{"bad label value", Submission{Requires: map[string]string{"gpu": "a b"}}, "requires: label gpu"},
		{"run_at and delay", Submission{RunAt: time.Now(), Delay: time.Second}, "not both"},
		{"negative delay", Submission{Delay: -time.Second}, "delay must be"},
		{"delay too long", Submission{Delay: 400 * 24 * time.Hour}, "delay must be"},
		{"run_at before 1970", Submission{RunAt: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}, "run_at must be"},
		// The store keeps times as int64 nanoseconds: 2300 would wrap to 1715.
		{"run_at past 2262", Submission{RunAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, "run_at must be"},
		// Year 10000 in UTC: the 202 had no body, its JSON refused.
		{"run_at in 9999 west of UTC", Submission{RunAt: time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -5*3600))}, "run_at must be"},
		{"retry on success", Submission{RetryOn: []task.Outcome{task.OutcomeSucceeded}}, "retry_on"},
		{"backoff without retry_on", Submission{Backoff: time.Second}, "only with retry_on"},
		{"backoff too short", Submission{RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: time.Millisecond}, "backoff must be"},
		{"max_backoff below backoff", Submission{RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: time.Minute, MaxBackoff: time.Second}, "max_backoff must be"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.sub.Cmd = "true"
			_, _, err := d.Submit(ctx, tt.sub)
			if !errors.Is(err, task.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Submit = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
	if st := d.Stats(); st.Queued+st.Scheduled != 0 {
		t.Fatalf("refused submissions left tasks: %+v", st)
	}
	s, err := d.Normalize(Submission{Cmd: "true", RetryOn: []task.Outcome{task.OutcomeFailed, task.OutcomeFailed}, Requires: map[string]string{}})
	if err != nil || s.Priority != task.DefaultPriority || s.Backoff != time.Second || s.MaxBackoff != 5*time.Minute ||
		len(s.RetryOn) != 1 || s.Requires != nil {
		t.Fatalf("defaults: %+v, %v", s, err)
	}
	// Only max_backoff, under the default backoff: it is the first wait too,
	// not a max_backoff below backoff that nobody gave.
	s, err = d.Normalize(Submission{Cmd: "true", RetryOn: []task.Outcome{task.OutcomeFailed}, MaxBackoff: 500 * time.Millisecond})
	if err != nil || s.Backoff != 500*time.Millisecond || s.MaxBackoff != 500*time.Millisecond {
		t.Fatalf("max_backoff 500ms alone: backoff %s, max_backoff %s, %v; want both 500ms", s.Backoff, s.MaxBackoff, err)
	}
	if _, _, err := d.Register(ctx, Registration{WorkerID: "w", InstanceID: "i", Slots: 1, Labels: map[string]string{"a": "b=c"}}); !errors.Is(err, task.ErrInvalid) {
		t.Fatalf("register with a bad label: %v, want ErrInvalid", err)
	}
}

// A delayed task is scheduled until its time on the monotonic clock: a
// wall-clock step does not move it, it is queued when due, and cancel
// works while it waits.
func TestDelayedRun(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 5)
	tk, _, err := d.Submit(ctx, Submission{Cmd: "later", Delay: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusScheduled || tk.RunAt.Sub(tk.CreatedAt) != 30*time.Second || !strings.Contains(tk.WaitingFor, "run time") {
		t.Fatalf("submitted: %s run_at=%s created=%s waiting_for=%q", tk.Status, tk.RunAt, tk.CreatedAt, tk.WaitingFor)
	}
	gone := submitOne(t, d, Submission{Delay: time.Second})
	if _, err := d.Cancel(ctx, gone); err != nil {
		t.Fatal(err)
	}
	past := submitOne(t, d, Submission{RunAt: clk.Now().Add(-time.Hour)})
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{past}) {
		t.Fatalf("a run_at in the past: the worker got %v, want it at once", got)
	}
	if st := d.Stats(); st.Scheduled != 1 {
		t.Fatalf("stats: %+v, want 1 scheduled", st)
	}
	clk.Step(time.Hour) // the wall clock jumps: nothing is due
	pass(d, clk, 29*time.Second, w)
	if got := drain(w); len(got) != 0 {
		t.Fatalf("ran %v before its time", got)
	}
	pass(d, clk, time.Second, w)
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{tk.ID}) {
		t.Fatalf("when due the worker got %v, want %s (and never the canceled one)", got, tk.ID)
	}
	if st, _ := status(t, d, gone); st != task.StatusCanceled {
		t.Fatalf("canceled scheduled task is %s", st)
	}
	if st := d.Stats(); st.Scheduled != 0 || st.Queued != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// pass moves the clock on by dur, a second at a time, sweeping, with the
// leases of the given workers renewed.
func pass(d *Dispatcher, clk *fakeClock, dur time.Duration, alive ...*Session) {
	for dur > 0 {
		step := min(dur, time.Second)
		clk.Advance(step)
		dur -= step
		for _, s := range alive {
			d.Heartbeat(s.WorkerID, s.InstanceID, nil)
		}
		d.Sweep()
	}
}

// Run queues a scheduled task when it is due, between sweeps, on its own.
func TestRunQueuesWhenDue(t *testing.T) {
	d, _ := newTest(t)
	start := time.Now()
	d.p.Mono = func() time.Duration { return time.Since(start) }
	w := register(t, d, "w", 1)
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	go func() { defer close(done); d.Run(runCtx) }()
	defer func() { stop(); <-done }()
	id := submitOne(t, d, Submission{Delay: 50 * time.Millisecond}) // far below the sweep interval
	var got []string
	eventually(t, "the delayed task to be sent", func() bool { got = append(got, drain(w)...); return len(got) > 0 })
	if fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Fatalf("sent %v, want %s", got, id)
	}
}

// retrying returns a dispatcher without jitter, a worker, and a task that
// retries failures up to 3 attempts with a 1s backoff.
func retrying(t *testing.T) (*Dispatcher, *fakeClock, *Session, string) {
	d, clk := newTest(t)
	d.rand = func() float64 { return 0 }
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "exit 3", MaxAttempts: 3, RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: time.Second, MaxBackoff: 90 * time.Second})
	return d, clk, w, id
}

func TestRetryBackoff(t *testing.T) {
	d, clk, w, id := retrying(t)
	for n, wait := range []time.Duration{time.Second, 2 * time.Second} {
		if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
			t.Fatalf("attempt %d: the worker got %v", n+1, got)
		}
		finish(t, d, w, id, 3)
		tk, _ := d.Get(ctx, id)
		if tk.Status != task.StatusScheduled || *tk.ExitCode != 3 || tk.History[n].Outcome != task.OutcomeFailed {
			t.Fatalf("after attempt %d failed: %+v", n+1, tk)
		}
		clk.Advance(wait - time.Millisecond)
		d.Sweep()
		if got := drain(w); len(got) != 0 {
			t.Fatalf("attempt %d started before its backoff of %s", n+2, wait)
		}
		clk.Advance(time.Millisecond)
		d.Sweep()
	}
	drain(w)
	finish(t, d, w, id, 3)
	tk, _ := d.Get(ctx, id)
	if tk.Status != task.StatusFailed || tk.Attempts != 3 || len(tk.History) != 3 {
		t.Fatalf("after 3 failures: %s with %d attempts, want failed after exactly 3", tk.Status, tk.Attempts)
	}
	// Timed out is not in retry_on: that ends the task at once.
	id2 := submitOne(t, d, Submission{MaxAttempts: 3, RetryOn: []task.Outcome{task.OutcomeFailed}})
	drain(w)
	r := result(t, d, w, id2, 1, -1)
	r.TimedOut = true
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	if st, _ := status(t, d, id2); st != task.StatusTimedOut {
		t.Fatalf("a timeout not named in retry_on: %s, want timed_out", st)
	}
}

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	d, _ := newTest(t)
	tk := &task.Task{Backoff: time.Second, MaxBackoff: 10 * time.Second, RetryOn: []task.Outcome{task.OutcomeFailed}}
	failures := func(n int) []task.Attempt {
		h := make([]task.Attempt, n)
		for i := range h {
			h[i] = task.Attempt{N: i + 1, Outcome: task.OutcomeFailed}
		}
		return h
	}
	for _, tt := range []struct {
		attempts int
		rand     float64
		want     time.Duration
	}{
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{3, 0, 4 * time.Second},
		{4, 0, 8 * time.Second},
		{5, 0, 10 * time.Second},
		{60, 0, 10 * time.Second}, // no overflow
		{1, 0.5, 900 * time.Millisecond},
		{3, 0.999999, 3200*time.Millisecond + 4*time.Microsecond/5}, // never below 80%
	} {
		d.rand = func() float64 { return tt.rand }
		tk.Attempts, tk.History = tt.attempts, failures(tt.attempts)
		if got := d.backoffLocked(tk); got.Round(time.Millisecond) != tt.want.Round(time.Millisecond) {
			t.Errorf("after %d attempts, rand %v: wait %s, want %s", tt.attempts, tt.rand, got, tt.want)
		}
	}
	// A delivery lost with its worker is no retry: the first failure after
	// it waits the first backoff. Nor do deliveries before a retry by hand
	// count: the budget starts again.
	d.rand = func() float64 { return 0 }
	tk.History = []task.Attempt{{N: 1, Outcome: task.OutcomeLost}, {N: 2, Outcome: task.OutcomeFailed}}
	tk.Attempts = 2
	if got := d.backoffLocked(tk); got != time.Second {
		t.Errorf("a failure after a lost delivery waits %s, want the first backoff, 1s", got)
	}
	tk.History, tk.Attempts, tk.AttemptBase = append(failures(3), task.Attempt{N: 4, Outcome: task.OutcomeFailed}), 4, 3
	if got := d.backoffLocked(tk); got != time.Second {
		t.Errorf("the first failure after a retry by hand waits %s, want the first backoff, 1s", got)
	}
}

func TestManualRetry(t *testing.T) {
	d, clk, w, id := retrying(t)
	if _, err := d.Retry(ctx, id); !errors.Is(err, task.ErrConflict) {
		t.Fatalf("retry of a running task: %v, want ErrConflict", err)
	}
	for range 3 {
		drain(w)
		finish(t, d, w, id, 3)
		clk.Advance(5 * time.Second) // past the backoff, within the worker's lease
		d.Heartbeat(w.WorkerID, w.InstanceID, nil)
		d.Sweep()
	}
	if st, _ := status(t, d, id); st != task.StatusFailed {
		t.Fatalf("status %s, want failed", st)
	}
	d.Sweep() // the final task leaves memory: Retry reads it from the store
	tk, err := d.Retry(ctx, id)
	if err != nil || tk.Status != task.StatusQueued || tk.AttemptBase != 3 || tk.ExitCode != nil {
		t.Fatalf("retry = %+v, %v", tk, err)
	}
	if _, err := d.Retry(ctx, id); !errors.Is(err, task.ErrConflict) {
		t.Fatalf("second retry while it runs: %v, want ErrConflict", err)
	}
	// A fresh budget: three more attempts, then failed again with the
	// whole history.
	for range 3 {
		if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
			t.Fatalf("the worker got %v", got)
		}
		finish(t, d, w, id, 3)
		clk.Advance(5 * time.Second)
		d.Heartbeat(w.WorkerID, w.InstanceID, nil)
		d.Sweep()
	}
	got, _ := d.Get(ctx, id)
	if got.Status != task.StatusFailed || got.Attempts != 6 || len(got.History) != 6 {
		t.Fatalf("after the retry: %s, %d attempts, %d in history; want failed, 6, 6", got.Status, got.Attempts, len(got.History))
	}
	if _, err := d.Retry(ctx, "nope"); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("retry of an unknown task: %v", err)
	}
}

// Priorities, requirements, run times and retry policies are on disk: a
// restarted master keeps each scheduled task's time (counted from the wall
// clock once, at the restart) and runs queued tasks in priority order.
func TestSchedulingSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	d.rand = func() float64 { return 0 }
	w := register(t, d, "w", 1)
	retried := submitOne(t, d, Submission{Cmd: "exit 3", MaxAttempts: 2, RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: 10 * time.Second})
	drain(w)
	finish(t, d, w, retried, 3) // scheduled for 10s from now
	d.Unregister(w)             // the rest stay queued
	delayed := submitOne(t, d, Submission{Cmd: "later", Delay: 20 * time.Second, Priority: 1})
	low := submitOne(t, d, Submission{Cmd: "low", Priority: 5})
	gpu := submitOne(t, d, Submission{Cmd: "gpu", Priority: 2, Requires: req("gpu=nvidia")})
	high := submitOne(t, d, Submission{Cmd: "high", Priority: 1})
	far := submitOne(t, d, Submission{Cmd: "far", RunAt: task.LastTime})
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clk, 100)
	d2.rand = func() float64 { return 0 }
	for id, want := range map[string]task.Status{retried: task.StatusScheduled, delayed: task.StatusScheduled, low: task.StatusQueued, high: task.StatusQueued, far: task.StatusScheduled} {
		if st, _ := status(t, d2, id); st != want {
			t.Fatalf("after the restart %s is %s, want %s", id, st, want)
		}
	}
	if tk, _ := d2.Get(ctx, far); !tk.RunAt.Equal(task.LastTime) {
		t.Fatalf("after the restart the latest run time is %s, want %s", tk.RunAt, task.LastTime)
	}
	tk, _ := d2.Get(ctx, gpu)
	if tk.Priority != 2 || labels.String(tk.Requires) != "gpu=nvidia" {
		t.Fatalf("after the restart the gpu task has priority %d and requires %v", tk.Priority, tk.Requires)
	}
	tk, _ = d2.Get(ctx, retried)
	if len(tk.RetryOn) != 1 || tk.Backoff != 10*time.Second || tk.MaxAttempts != 2 {
		t.Fatalf("after the restart the retry policy is %v %s %d", tk.RetryOn, tk.Backoff, tk.MaxAttempts)
	}
	w2 := register(t, d2, "w", 1)
	var ran []string
	next := func() {
		got := drain(w2)
		if len(got) != 1 {
			t.Fatalf("the worker got %v, want one task", got)
		}
		ran = append(ran, got[0])
		finish(t, d2, w2, got[0], 0)
	}
	next() // high
	next() // low: the gpu task waits for a gpu worker, the others for their time
	pass(d2, clk, 10*time.Second, w2)
	next() // retried, attempt 2
	pass(d2, clk, 10*time.Second, w2)
	next() // delayed
	if want := []string{high, low, retried, delayed}; !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
	if tk, _ := d2.Get(ctx, retried); tk.Status != task.StatusSucceeded || tk.Attempts != 2 {
		t.Fatalf("retried task: %s after %d attempts", tk.Status, tk.Attempts)
	}
}

// The queue limit counts scheduled tasks: they are held in memory too.
func TestQueueLimitCountsScheduled(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxQueued = 2
	submitOne(t, d, Submission{Delay: time.Hour})
	submitOne(t, d, Submission{})
	if _, _, err := d.Submit(ctx, Submission{Cmd: "true", Delay: time.Minute}); !errors.Is(err, task.ErrFull) {
		t.Fatalf("third task: %v, want ErrFull", err)
	}
}

// TestRoutingProperty drives random workers (with random labels, joining,
// leaving and finishing tasks) and random tasks (with random requirements
// and priorities), and checks after every step that no task ever runs on a
// worker that lacks a label it requires, and that no queued task could run
// on a free worker (so every runnable task is assigned as soon as it can
// be). At the end a worker with every label joins, and every task runs.
func TestRoutingProperty(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Parallel() // each waits mostly for its own database's fsyncs
			routingProperty(t, seed)
		})
	}
}

func routingProperty(t *testing.T, seed uint64) {
	d, clk := newTest(t)
	rng := rand.New(rand.NewPCG(seed, seed))
	pool := []string{"gpu=nvidia", "gpu=amd", "zone=eu", "zone=us", "size=large"}
	pick := func(max int) map[string]string {
		set := map[string]string{}
		for range rng.IntN(max + 1) {
			k, v, _ := strings.Cut(pool[rng.IntN(len(pool))], "=")
			set[k] = v
		}
		return set
	}
	sessions := map[string]*Session{}
	on := map[string]string{} // task -> the worker it runs on
	var all []string
	n := 0
	check := func(step string) {
		t.Helper()
		for _, s := range sessions {
			for _, id := range drain(s) {
				tk, _ := d.Get(ctx, id)
				if !labels.Satisfies(s.Labels, tk.Requires) {
					t.Fatalf("%s: task requiring %v ran on %s with %v", step, tk.Requires, s.WorkerID, s.Labels)
				}
				on[id] = s.WorkerID
			}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, id := range all {
			tk, _ := d.tasks.view(id)
			if tk.Status != task.StatusQueued {
				continue
			}
			for _, s := range d.rotation {
				if _, holds := s.inflight[id]; !holds && !s.draining && len(s.inflight) < s.Slots && labels.Satisfies(s.Labels, tk.Requires) {
					t.Fatalf("%s: task %s (requires %v) waits while %s (%v) has a free slot", step, id, tk.Requires, s.WorkerID, s.Labels)
				}
			}
		}
	}
	for step := range 200 {
		switch op := rng.IntN(10); {
		case op < 4:
			all = append(all, submitOne(t, d, Submission{Cmd: fmt.Sprint("t", step), Priority: 1 + rng.IntN(5), Requires: pick(2)}))
		case op < 6 && len(sessions) < 6:
			n++
			set := pick(3)
			s, _, err := d.Register(ctx, Registration{WorkerID: fmt.Sprint("w", n), InstanceID: "i", Slots: 1 + rng.IntN(2), Labels: set})
			if err != nil {
				t.Fatal(err)
			}
			sessions[s.WorkerID] = s
		case op < 7 && len(sessions) > 0:
			s := sessions[slices.Sorted(maps.Keys(sessions))[rng.IntN(len(sessions))]]
			delete(sessions, s.WorkerID)
			for id, w := range on {
				if w == s.WorkerID {
					delete(on, id)
				}
			}
			lose(d, clk, s)
		default:
			for id, wid := range on {
				if s := sessions[wid]; s != nil && rng.IntN(2) == 0 {
					finish(t, d, s, id, 0)
					delete(on, id)
				}
			}
		}
		check(fmt.Sprint("step ", step))
	}
	every := map[string]string{}
	for _, p := range pool {
		k, v, _ := strings.Cut(p, "=")
		every[k] = v // one value per key: the last one
	}
	for _, id := range all {
		tk, _ := d.Get(ctx, id)
		if !tk.Status.Final() && tk.Status != task.StatusRunning && !labels.Satisfies(every, tk.Requires) {
			if _, err := d.Cancel(ctx, id); err != nil { // no worker can have both gpu=nvidia and gpu=amd
				t.Fatal(err)
			}
		}
	}
	s, _, err := d.Register(ctx, Registration{WorkerID: "all", InstanceID: "i", Slots: 1, Labels: every})
	if err != nil {
		t.Fatal(err)
	}
	sessions["all"] = s
	for range len(all) + 1 {
		check("draining")
		for id, wid := range on {
			if s := sessions[wid]; s != nil {
				finish(t, d, s, id, 0)
			}
			delete(on, id)
		}
	}
	for _, id := range all {
		if st, _ := status(t, d, id); st == task.StatusQueued {
			t.Fatalf("task %s is still queued with a worker that can run it connected", id)
		}
	}
}

// A manual retry's fresh budget holds for lost workers too.
func TestManualRetryGivesLostWorkersAFreshBudget(t *testing.T) {
	d, clk := newTest(t)
	id := submitOne(t, d, Submission{MaxAttempts: 2})
	for range 2 {
		lose(d, clk, register(t, d, "w", 1))
	}
	if tk, _ := d.Get(ctx, id); tk.Status != task.StatusFailed || tk.Attempts != 2 {
		t.Fatalf("after two lost workers: %s with %d attempts, want failed with 2", tk.Status, tk.Attempts)
	}
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	lose(d, clk, register(t, d, "w", 1))
	if tk, _ := d.Get(ctx, id); tk.Status != task.StatusQueued || tk.Attempts != 3 {
		t.Fatalf("one lost worker after the retry: %s with %d attempts, want queued again with 3", tk.Status, tk.Attempts)
	}
}
