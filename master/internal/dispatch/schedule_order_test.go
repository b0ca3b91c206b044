package dispatch

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Tasks given the same run time are queued, when it comes, in the order
// they were submitted.
func TestSameRunTimeKeepsSubmissionOrder(t *testing.T) {
	d, clk := newTest(t)
	at := clk.Now().Add(time.Hour).Truncate(time.Second)
	var ids []string
	for i := range 8 {
		ids = append(ids, submitOne(t, d, Submission{Cmd: fmt.Sprint("at ", i), RunAt: at}))
	}
	pass(d, clk, time.Hour+time.Second)
	ran := runOneByOne(t, d, register(t, d, "w", 1), len(ids))
	if !slices.Equal(ran, ids) {
		t.Fatalf("ran %v; want %v, the order they were submitted in", ran, ids)
	}
}

// The same holds however long passes between a submission's readings of
// the wall and monotonic clocks, two calls apart (a goroutine may be
// preempted between them): its run time, less the wall clock, added to
// the monotonic one, is due that much later, and tasks given one run_at
// would otherwise be queued in the order of those delays, at random.
func TestSameRunTimeKeepsSubmissionOrderWhateverTheReadingsGap(t *testing.T) {
	d, clk := newTest(t)
	at := clk.Now().Add(time.Hour).Truncate(time.Second)
	clk.setTick(2 * time.Millisecond) // each monotonic reading: 2ms after the wall clock's
	first := submitOne(t, d, Submission{Cmd: "first", RunAt: at})
	clk.setTick(0)
	second := submitOne(t, d, Submission{Cmd: "second", RunAt: at})
	pass(d, clk, time.Hour+time.Second)
	want := []string{first, second}
	if ran := runOneByOne(t, d, register(t, d, "w", 1), 2); !slices.Equal(ran, want) {
		t.Fatalf("ran %v; want %v, the order they were submitted in", ran, want)
	}
}

// A restarted master queues the tasks again in the order they were queued:
// a delayed task that fell due after others were queued stays behind them.
func TestRestartKeepsTheOrderTasksWereQueuedIn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	delayed := submitOne(t, d, Submission{Cmd: "delayed", Delay: time.Minute})
	early := submitOne(t, d, Submission{Cmd: "early"})
	pass(d, clk, time.Minute)
	late := submitOne(t, d, Submission{Cmd: "late"})
	order := func(d *Dispatcher) []string { return runOneByOne(t, d, register(t, d, "w", 1), 3) }
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d2, _ := newOnDB(t, path, clk, 100)
	want := []string{early, delayed, late}
	if got := order(d2); !slices.Equal(got, want) {
		t.Fatalf("after a restart ran %v; want %v, the order they were queued in (as before it: %v)", got, want, order(d))
	}
}

// A delay is counted from the submission, on the monotonic clock: time
// the submission spent waiting for its write to land (a slow or busy disk)
// does not push the run back past its run_at.
func TestDelayCountsFromTheSubmissionNotItsCommit(t *testing.T) {
	d, clk, path := newFlaky(t)
	w := register(t, d, "w", 1)
	unlock := storetest.HoldWriteLock(t, path)
	ch := make(chan submitAnswer, 1)
	go func() {
		tk, _, err := d.Submit(ctx, Submission{Cmd: "later", Delay: 30 * time.Second})
		ch <- submitAnswer{tk, err}
	}()
	failing(t, d) // the insert waits for the disk
	for range 2 { // for 10s
		clk.Advance(5 * time.Second)
		beat(d, w)
	}
	unlock()
	p := within(t, "the submission", ch)
	if p.err != nil {
		t.Fatal(p.err)
	}
	pass(d, clk, 20*time.Second+time.Second, w) // 31s after the submission
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{p.t.ID}) {
		tk, _ := d.Get(ctx, p.t.ID)
		t.Fatalf("31s after a submission with a 30s delay (run_at %s, now %s) the task is %s and w got %v", tk.RunAt, clk.Now(), tk.Status, got)
	}
}

// runOneByOne has w, with one slot, run up to n tasks one after another,
// each finishing with exit code 0 before the next is sent, and returns
// their IDs in the order they ran; it stops early when w gets none.
func runOneByOne(t *testing.T, d *Dispatcher, w *Session, n int) []string {
	t.Helper()
	var ran []string
	for range n {
		got := drain(w)
		if len(got) != 1 {
			break
		}
		ran = append(ran, got[0])
		finish(t, d, w, got[0], 0)
	}
	return ran
}

// A free worker that cannot take the task at the head of its class,
// because it still runs an older delivery of it (it came back with the
// run, which then was re-queued again), takes the next task of that
// class: the most urgent task it can run, not a less urgent one, nor
// nothing until that older run ends (up to the task's timeout).
func TestAFreeWorkerHoldingTheHeadTakesTheNextTaskOfItsPriority(t *testing.T) {
	d, clk := newTest(t)
	w1 := register(t, d, "w1", 2)
	w2 := register(t, d, "w2", 1)
	x := submitOne(t, d, Submission{Cmd: "x"})
	if got := drain(w1); !slices.Equal(got, []string{x}) {
		t.Fatalf("w1 got %v, want %s", got, x)
	}
	lose(d, clk, w1) // x goes to w2, as attempt 2
	if got := drain(w2); !slices.Equal(got, []string{x}) {
		t.Fatalf("w2 got %v, want %s", got, x)
	}
	w1 = register(t, d, "w1", 2, x) // back, still running attempt 1: both run
	lose(d, clk, w2)                // x is queued again; w1 holds its attempt 1
	if got := drain(w1); len(got) != 0 {
		t.Fatalf("w1 got %v while it runs an older delivery of the only queued task", got)
	}
	y := submitOne(t, d, Submission{Cmd: "y"})
	z := submitOne(t, d, Submission{Cmd: "z", Priority: 5})
	if got := drain(w1); !slices.Equal(got, []string{y}) {
		t.Fatalf("w1, with a free slot, got %v; want %s, the most urgent task it can run", got, y)
	}
	if st := d.Stats(); st.Queued != 2 || st.ByPriority[2] != 1 || st.ByPriority[4] != 1 {
		t.Fatalf("stats %+v; want x and z queued", st)
	}
	finish(t, d, w1, y, 0)
	if got := drain(w1); !slices.Equal(got, []string{z}) {
		t.Fatalf("w1 got %v; want %s, the one queued task it can run", got, z)
	}
}

// Scheduled tasks that came due while the master was down are queued, at
// its restart, in the order of their run times, as they would have been
// had it kept running: not in the order they were submitted.
func TestRestartQueuesOverdueTasksByRunTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	late := submitOne(t, d, Submission{Cmd: "late", Delay: 10 * time.Minute})
	early := submitOne(t, d, Submission{Cmd: "early", Delay: time.Minute})
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Minute) // the master is down meanwhile
	d2, _ := newOnDB(t, path, clk, 100)
	d2.Sweep()
	want := []string{early, late}
	if got := runOneByOne(t, d2, register(t, d2, "w", 1), 2); !slices.Equal(got, want) {
		t.Fatalf("after a restart ran %v; want %v, the order they came due in", got, want)
	}
}

// A task its worker took back (it was lost, its task re-queued at the
// front, then it came back holding the run) and that is then queued again,
// by its retry policy or by hand, waits at the back of its priority: not
// at the place it had while re-queued, ahead of tasks queued before it
// was queued again. A priority-1 task keeps the worker busy meanwhile, so
// no assignment reaches the priority-5 class in between. Both ways a task
// ID is held (ids.go): an alias is not given again once its task left
// memory, a UUID's key is the same.
func TestReclaimedThenRetriedTaskQueuesAtTheBack(t *testing.T) {
	for _, how := range []string{"retry policy", "by hand"} {
		for _, id := range []string{"alias", "uuid"} {
			t.Run(how+"/"+id, func(t *testing.T) {
				d, clk := newTest(t)
				d.rand = func() float64 { return 0 }
				if id == "uuid" {
					submitOne(t, d, Submission{Cmd: "pad", Delay: time.Hour}) // t0001, scheduled throughout
				}
				w := register(t, d, "w", 1)
				sub := Submission{Cmd: "flaky", Priority: 5}
				if how == "retry policy" {
					sub.MaxAttempts, sub.RetryOn, sub.Backoff, sub.MaxBackoff = 3, []task.Outcome{task.OutcomeFailed}, time.Second, time.Second
				}
				a := submitOne(t, d, sub)
				if got := drain(w); !slices.Equal(got, []string{a}) {
					t.Fatalf("w got %v, want %s", got, a)
				}
				b := submitOne(t, d, Submission{Cmd: "b", Priority: 5})
				c := submitOne(t, d, Submission{Cmd: "c", Priority: 5})
				lose(d, clk, w)               // a is re-queued at the front of priority 5: a, b, c
				w = register(t, d, "w", 1, a) // back, running it: a runs on w again
				if st, on := status(t, d, a); st != task.StatusRunning || on != "w" {
					t.Fatalf("after w came back holding it, %s is %s on %q; want running on w", a, st, on)
				}
				u := submitOne(t, d, Submission{Cmd: "urgent", Priority: 1})
				finish(t, d, w, a, 1) // failed: scheduled for its retry, or final
				if got := drain(w); !slices.Equal(got, []string{u}) {
					t.Fatalf("w got %v after %s failed; want %s, the priority-1 task", got, a, u)
				}
				if how == "retry policy" {
					pass(d, clk, time.Second, w) // its backoff: a is queued again
				} else if _, err := d.Retry(ctx, a); err != nil {
					t.Fatal(err)
				}
				if st, _ := status(t, d, a); st != task.StatusQueued {
					t.Fatalf("%s is %s, want queued again", a, st)
				}
				if st := d.Stats(); st.Queued != 3 || st.ByPriority[4] != 3 {
					t.Fatalf("stats %+v; want a, b and c queued at priority 5", st)
				}
				finish(t, d, w, u, 0)
				want := []string{b, c, a} // a was queued again after b and c were queued
				if got := runOneByOne(t, d, w, 3); !slices.Equal(got, want) {
					t.Fatalf("ran %v; want %v, the order they were queued in", got, want)
				}
				if st := d.Stats(); st.Queued != 0 || st.ByPriority != [5]int{} {
					t.Fatalf("stats after all ran: %+v", st)
				}
			})
		}
	}
}

// A restarted master counts each scheduled task's remaining wait from one
// reading of its clocks: the time its recovery takes (a large backlog's
// may take seconds) neither delays a task past its run time nor reorders
// tasks whose run times are that close. Here every reading of the
// monotonic clock during the restart takes 1ms.
func TestRestartCountsEveryRemainingWaitFromOneInstant(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	at := clk.Now().Add(time.Hour).Truncate(time.Second)
	var ids []string
	for i := range 20 {
		ids = append(ids, submitOne(t, d, Submission{Cmd: fmt.Sprint("at ", i), RunAt: at}))
	}
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clk.setTick(time.Millisecond)
	d2, _ := newOnDB(t, path, clk, 100)
	clk.setTick(0)
	// The wall clock reaches the run time, and one reading's more (the
	// restart reads both clocks, one after the other).
	clk.Advance(at.Sub(clk.wall()) + time.Millisecond)
	d2.Sweep()
	if st := d2.Stats(); st.Scheduled != 0 || st.Queued != len(ids) {
		t.Fatalf("at their run time after a restart: %d scheduled, %d queued; want all %d queued", st.Scheduled, st.Queued, len(ids))
	}
	if ran := runOneByOne(t, d2, register(t, d2, "w", 1), len(ids)); !slices.Equal(ran, ids) {
		t.Fatalf("ran %v; want %v, the order they were submitted in", ran, ids)
	}
}
