package dispatch

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A running task canceled by the user: its worker is told to kill it and
// keeps the slot until it reports the kill, or until one grace has passed
// without a word, as for a delivery the master gave up; not until the
// task's whole timeout has run out.
func TestCanceledRunHoldsItsSlotOnlyForTheGrace(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	long := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	if got := deliver(d, w); fmt.Sprint(got) != fmt.Sprint([]string{long}) {
		t.Fatalf("w got %v", got)
	}
	if _, err := d.Cancel(ctx, long); err != nil {
		t.Fatal(err)
	}
	if _, cancels := take(w); fmt.Sprint(cancels) != fmt.Sprint([]string{long}) {
		t.Fatalf("w was told to kill %v, want %s", cancels, long)
	}
	next := submitOne(t, d, Submission{Cmd: "next"})
	pass(d, clk, reportGrace+2*time.Second, w) // w heartbeats, but never reports the kill
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{next}) {
		t.Fatalf("%s past the kill, w got %v; want its slot freed and %s sent (workers %+v)", reportGrace+2*time.Second, got, next, d.Workers())
	}
}

// A late failure of a delivery the master had given up must not end a
// task whose retry_on names that failure while its next delivery runs:
// that delivery is the retry. With max_attempts 3 this is so; with 2 the
// running delivery is killed and the task ends failed.
func TestLateRetryableFailureDoesNotKillTheRetryInFlight(t *testing.T) {
	for _, max := range []int{3, 2} {
		t.Run(fmt.Sprint("max_attempts=", max), func(t *testing.T) {
			d, clk := newTest(t)
			a := register(t, d, "a", 1)
			id := submitOne(t, d, Submission{Cmd: "flaky", MaxAttempts: max, RetryOn: []task.Outcome{task.OutcomeFailed}})
			drain(a)
			b := register(t, d, "b", 1)
			lose(d, clk, a) // a's run goes on out of sight; b gets attempt 2
			if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
				t.Fatalf("b got %v", got)
			}
			// a's run of attempt 1 fails, and a, back, reports it.
			if _, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: 1}); err != nil {
				t.Fatal(err)
			}
			if _, cancels := take(b); len(cancels) != 0 {
				t.Fatalf("b was told to kill %v: the retry in flight was given up", cancels)
			}
			if tk, _ := d.Get(ctx, id); tk.Status != task.StatusRunning {
				t.Fatalf("task %s after a late failure of attempt 1; want running attempt 2 (%d)", tk.Status, tk.Attempts)
			}
			finish(t, d, b, id, 0)
			if tk, _ := d.Get(ctx, id); tk.Status != task.StatusSucceeded {
				t.Fatalf("task %s; want attempt 2's success", tk.Status)
			}
		})
	}
}

// Retention deletes what finished more than MASTER_RETENTION ago by the
// master's clock. A worker whose clock is a month behind (a VM restored
// from a snapshot, a board without an RTC) reports a finished_at a month
// old: the result it just reported must not be deleted by the next round.
func TestRetentionKeepsAFreshResultOfAWorkerWithASlowClock(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submit(t, d, 1)[0]
	drain(w)
	r := result(t, d, w, id, 1, 0)
	r.StartedAt = clk.Now().Add(-30*24*time.Hour - time.Second)
	r.FinishedAt = clk.Now().Add(-30 * 24 * time.Hour) // within 1970..2262: kept as the worker's
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	// A retention round of 7 days (retainOnce's cutoff), a minute later.
	clk.Advance(time.Minute)
	n, err := d.p.Store.DeleteFinished(ctx, clk.Now().Add(-7*24*time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, id); err != nil || n != 0 {
		t.Fatalf("a minute after its result was recorded, retention deleted %d task(s) and Get says %v; want the task kept for 7 days", n, err)
	}
}

// A worker lists every delivery it holds when it registers. One that comes
// back (a new process, say) without a task that waited for it to claim it
// does not hold it, and no other worker can claim it: the task is queued
// again at once, not after the claim window (MASTER_WORKER_TIMEOUT), in
// one process as after a master restart.
func TestWorkerBackWithoutItsTaskRequeuesItAtOnce(t *testing.T) {
	check := func(t *testing.T, d *Dispatcher, id string) {
		t.Helper()
		tk, err := d.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Status != task.StatusRunning || tk.Attempts != 2 || len(tk.History) != 2 || tk.History[0].Outcome != task.OutcomeLost {
			t.Fatalf("task %s, attempt %d, history %+v; want its delivery 1 lost and delivery 2 running, with no time passed", tk.Status, tk.Attempts, tk.History)
		}
	}
	t.Run("reconnect", func(t *testing.T) {
		d, _ := newTest(t)
		w := register(t, d, "w", 1)
		id := submitOne(t, d, Submission{Cmd: "sleep 60"})
		drain(w)
		d.Unregister(w) // its connection closed: the task waits for it
		w = register(t, d, "w", 1)
		if got := drain(w); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
			t.Fatalf("w, back without %s, got %v; want it sent again", id, got)
		}
		check(t, d, id)
	})
	t.Run("master restart", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rh.db")
		clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		d, _ := newOnDB(t, path, clk, 0)
		w := register(t, d, "w", 1)
		id := submitOne(t, d, Submission{Cmd: "sleep 60"})
		drain(w)
		if err := d.p.Store.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		d2, _ := newOnDB(t, path, clk, 100)
		x := register(t, d2, "x", 1)
		register(t, d2, "w", 1) // a new process: it holds nothing
		if got := drain(x); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
			t.Fatalf("x got %v; want %s, which w came back without", got, id)
		}
		check(t, d2, id)
	})
}

// The master's wall clock steps back (NTP, a VM restored) while a task
// runs; the worker's clock is right. Its times stand: now on the master's
// clock is before assigned_at and bounds nothing, and the run must not be
// dated before it was sent.
func TestWorkerTimesStandWhenTheMasterClockStepsBack(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "true"})
	drain(w)
	tk, _ := d.Get(ctx, id)
	assigned := tk.AssignedAt
	clk.Advance(2 * time.Second)
	clk.Step(-time.Hour) // the master's wall clock goes back an hour
	r := result(t, d, w, id, 1, 0)
	r.StartedAt, r.FinishedAt = assigned.Add(time.Second), assigned.Add(2*time.Second) // the worker's, right
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	tk, _ = d.Get(ctx, id)
	if !tk.StartedAt.Equal(r.StartedAt) || !tk.FinishedAt.Equal(r.FinishedAt) {
		t.Fatalf("assigned_at %s, started_at %s, finished_at %s: want the worker's %s and %s, after it was sent", tk.AssignedAt, tk.StartedAt, tk.FinishedAt, r.StartedAt, r.FinishedAt)
	}
}

// A canceled run whose worker never reports the kill does not stay
// "running" in the task's history for good: once the master stops holding
// its slot, the delivery is recorded lost, in memory and on disk, whether
// the worker heartbeats on without a word (the grace passes), its
// connection ends, or it was away when the task was canceled and never
// came back. A report that comes after all still records the run's end.
func TestCanceledRunNeverReportedEndsLost(t *testing.T) {
	for _, how := range []string{"grace passes", "worker leaves", "worker stops listing it", "worker was away", "worker was away, reports later"} {
		t.Run(how, func(t *testing.T) {
			d, clk := newTest(t)
			w := register(t, d, "w", 1)
			id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
			deliver(d, w)
			switch how {
			case "worker was away", "worker was away, reports later":
				d.Unregister(w)
			case "worker stops listing it":
				// Back after a blip, it claims the run, which is canceled;
				// then its heartbeats list nothing: the run ended, and its
				// report never came.
				d.Unregister(w)
				w = register(t, d, "w", 1, id)
			}
			if _, err := d.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "grace passes":
				pass(d, clk, reportGrace+2*time.Second, w)
			case "worker leaves":
				d.Unregister(w)
			case "worker stops listing it":
				d.Heartbeat(w.WorkerID, w.InstanceID, []Delivery{})
			default:
				pass(d, clk, workerTimeout+2*time.Second)
			}
			check := func(what string, tk task.Task, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if tk.Status != task.StatusCanceled || len(tk.History) != 1 {
					t.Fatalf("%s: task %s, history %+v; want canceled with one delivery", what, tk.Status, tk.History)
				}
				if a := tk.History[0]; a.Outcome != task.OutcomeLost || !strings.Contains(a.Error, "never reported") || a.FinishedAt.IsZero() {
					t.Fatalf("%s: delivery %+v; want lost, the kill never reported, with its end", what, a)
				}
			}
			if err := <-d.p.Store.Apply(); err != nil { // what was queued is on disk
				t.Fatal(err)
			}
			tk, err := d.Get(ctx, id)
			check("Get", tk, err)
			tk, err = d.p.Store.Get(ctx, id)
			check("on disk", tk, err)

			if how == "worker was away, reports later" {
				w = register(t, d, "w", 1, id)
				r := result(t, d, w, id, 1, -1)
				r.Canceled = true
				if dup, err := d.Report(ctx, r); err != nil || dup {
					t.Fatalf("late report of the kill: dup=%v %v", dup, err)
				}
				if tk, _ := d.Get(ctx, id); tk.History[0].Outcome != task.OutcomeCanceled {
					t.Fatalf("after the late report: delivery %+v; want canceled", tk.History[0])
				}
			}
		})
	}
}

// A late result of a lost delivery decides a task while the worker of the
// delivery that replaced it is away: nobody can be told to kill that run,
// and nobody holds its slot. Like a run canceled while its worker was
// away, it must end lost in the history, not stay running for good.
func TestReplacementWhoseWorkerIsAwayEndsLostWhenALateResultDecides(t *testing.T) {
	d, clk := newTest(t)
	a, b, id := replacedRun(t, d, clk)
	d.Unregister(b) // b is away: its run waits for it to claim it
	if dup, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1}); err != nil || dup {
		t.Fatalf("a's late report: dup=%v %v", dup, err)
	}
	pass(d, clk, workerTimeout+reportGrace+2*time.Second) // b never comes back
	if err := <-d.p.Store.Apply(); err != nil {
		t.Fatal(err)
	}
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusSucceeded || len(tk.History) != 2 {
		t.Fatalf("task %s, history %+v; want succeeded with two deliveries", tk.Status, tk.History)
	}
	if h := tk.History[1]; h.Outcome != task.OutcomeLost || h.FinishedAt.IsZero() {
		t.Fatalf("b's delivery %+v; want lost, not running for good", h)
	}
}

// The task a user canceled is answered as it is on disk: the cancel's
// answer, and every read after it, show its run's end the same way. While
// writes fail, the store takes them one at a time, so the cancel's answer
// comes as soon as its own write lands.
func TestCancelWhileAwayIsOnDiskWhenAnswered(t *testing.T) {
	d, _, path := newFlaky(t)
	w := register(t, d, "w", 1)
	for i := range 10 {
		id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
		deliver(d, w)
		d.Unregister(w) // away when the task is canceled
		unlock := storetest.HoldWriteLock(t, path)
		type answer struct {
			t   task.Task
			err error
		}
		ch := make(chan answer, 1)
		go func() { c, err := d.Cancel(ctx, id); ch <- answer{c, err} }()
		failing(t, d)
		unlock()
		c := within(t, "the cancel", ch)
		if c.err != nil {
			t.Fatal(c.err)
		}
		tk, err := d.p.Store.Get(ctx, id) // what is on disk now
		if err != nil {
			t.Fatal(err)
		}
		if c.t.History[0].Outcome != task.OutcomeLost || tk.History[0].Outcome != c.t.History[0].Outcome {
			t.Fatalf("round %d: the cancel answered delivery %s, the disk has %s: the answer was not on disk", i, c.t.History[0].Outcome, tk.History[0].Outcome)
		}
		w = register(t, d, "w", 1) // back, without the run
	}
}

// A worker that lists a delivery the master never sent it (confused, or
// forged) must not end another worker's run of that number: the end of a
// delivery it never had is no end of theirs.
func TestForeignClaimDoesNotEndAnotherWorkersRun(t *testing.T) {
	d, _ := newTest(t)
	b := register(t, d, "b", 1)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, b)
	if _, err := d.Cancel(ctx, id); err != nil { // b holds the run and is told to kill it
		t.Fatal(err)
	}
	s, _, err := d.Register(ctx, Registration{WorkerID: "a", InstanceID: "a-instance", Slots: 1,
		Running: []Delivery{{TaskID: id, Attempt: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	d.Heartbeat(s.WorkerID, s.InstanceID, []Delivery{}) // a lists nothing now
	if err := <-d.p.Store.Apply(); err != nil {
		t.Fatal(err)
	}
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if h := tk.History[0]; h.WorkerID != "b" || h.Outcome != task.OutcomeRunning || strings.Contains(h.Error, "worker a") {
		t.Fatalf("b's delivery %+v; want running still: b has not reported, nor has its grace passed", h)
	}
}

// A task canceled while two deliveries of it run (its first worker came
// back still running the one the master had replaced, and the first
// result would have won) is killed on both workers, not only on the one
// it runs on now: the other would run on until its timeout.
func TestCancelKillsEveryRunOfTheTask(t *testing.T) {
	d, clk := newTest(t)
	a, b, id := replacedRun(t, d, clk)
	a = backHolding(t, d, a, id, 1)
	if _, cancels := take(a); len(cancels) != 0 {
		t.Fatalf("a was told to kill %v on its return; want its run to go on, the first result winning", cancels)
	}
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Session{a, b} {
		if _, cancels := take(s); fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
			t.Errorf("%s was told to kill %v after the cancel; want %s", s.WorkerID, cancels, id)
		}
	}
}

// The same when the task ends by a result: the delivery now current
// succeeds while its first worker, back, still runs the replaced one.
// That run has nothing left to do, and is killed.
func TestResultKillsTheOlderRunOfTheTask(t *testing.T) {
	d, clk := newTest(t)
	a, b, id := replacedRun(t, d, clk)
	a = backHolding(t, d, a, id, 1)
	take(a)
	finish(t, d, b, id, 0)
	if _, cancels := take(a); fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
		t.Fatalf("a was told to kill %v once b's run decided the task; want %s", cancels, id)
	}
	if _, cancels := take(b); len(cancels) != 0 {
		t.Fatalf("b was told to kill %v: its run is over, reported", cancels)
	}
}

// replacedRun makes the run that two deliveries of one task share: a got
// attempt 1 and was lost, its run going on out of sight; b got attempt 2.
func replacedRun(t *testing.T, d *Dispatcher, clk *fakeClock) (a, b *Session, id string) {
	t.Helper()
	a = register(t, d, "a", 1)
	id = submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, a)
	b = register(t, d, "b", 1)
	lose(d, clk, a)
	if got := deliver(d, b); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Fatalf("b got %v, want %s", got, id)
	}
	return a, b, id
}

// backHolding registers s's process again, listing its delivery attempt
// of task id as still running.
func backHolding(t *testing.T, d *Dispatcher, s *Session, id string, attempt int) *Session {
	t.Helper()
	back, _, err := d.Register(ctx, Registration{WorkerID: s.WorkerID, InstanceID: s.InstanceID, Slots: 1,
		Running: []Delivery{{TaskID: id, Attempt: attempt}}})
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// A late result of a replaced delivery is no retry, even of an outcome
// retry_on names: the task ran again at once, with no backoff, because the
// delivery was lost (README: "a delivery lost with its worker is none").
// The waits the task serves are backoff, then doubled: here 1s before the
// first retry and 2s before the second, whether the late failure of
// attempt 1 comes before attempt 2 fails or while the retry, attempt 3,
// runs. The late result is recorded as a duplicate: it decided nothing.
// Counted as a retry, it made the wait double once early (2s; or 1s, then
// 4s).
func TestLateRetryableResultOfAReplacedDeliveryIsNoRetry(t *testing.T) {
	for _, lateBefore := range []bool{true, false} {
		t.Run(map[bool]string{true: "late before the failure", false: "late while the retry runs"}[lateBefore], func(t *testing.T) {
			d, clk := newTest(t)
			d.rand = func() float64 { return 0 } // no jitter: each wait is exact
			sub := follow(t, d)
			a := register(t, d, "a", 1)
			id := submitOne(t, d, Submission{Cmd: "flaky", MaxAttempts: 4, RetryOn: []task.Outcome{task.OutcomeFailed},
				Backoff: time.Second, MaxBackoff: time.Minute})
			drain(a)
			b := register(t, d, "b", 1)
			lose(d, clk, a) // a's run of attempt 1 goes on out of sight; b gets attempt 2
			if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
				t.Fatalf("b got %v, want %s", got, id)
			}
			late := func() {
				t.Helper()
				dup, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: 1})
				if err != nil {
					t.Fatal(err)
				}
				if tk, _ := d.Get(ctx, id); tk.History[0].Outcome != task.OutcomeFailed || !dup || !tk.History[0].Duplicate {
					t.Errorf("a's late failure of attempt 1: told duplicate %v, recorded %+v; want failed, a duplicate (it decided nothing)", dup, tk.History[0])
				}
			}
			// failsAndWaits fails b's current delivery, attempt n, and checks
			// the retry's run_at (the task's and its task.scheduled event's)
			// and that the task is queued, and sent to b, no sooner than want.
			failsAndWaits := func(n int, want time.Duration) {
				t.Helper()
				received(sub)
				before := clk.Now()
				if _, err := d.Report(ctx, result(t, d, b, id, n, 1)); err != nil {
					t.Fatal(err)
				}
				tk, _ := d.Get(ctx, id)
				if tk.Status != task.StatusScheduled {
					t.Fatalf("after attempt %d failed: %s, want scheduled", n, tk.Status)
				}
				if got := tk.RunAt.Sub(before); got < want || got > want+50*time.Millisecond {
					t.Errorf("attempt %d failed: run_at is %s after it, want %s (the wait before retry %d)", n, got, want, n-1)
				}
				var scheduled *events.Event
				for {
					select {
					case e := <-sub.C():
						if e.Type == events.TaskScheduled {
							scheduled = &e
						}
						continue
					default:
					}
					break
				}
				if scheduled == nil || scheduled.RunAt == nil || !scheduled.RunAt.Equal(tk.RunAt) {
					t.Errorf("attempt %d failed: task.scheduled %+v, want one with run_at %s", n, scheduled, tk.RunAt)
				}
				pass(d, clk, want-100*time.Millisecond, b)
				if got := drain(b); len(got) != 0 {
					t.Fatalf("attempt %d sent %s after attempt %d failed, before its wait of %s", n+1, want-100*time.Millisecond, n, want)
				}
				pass(d, clk, 100*time.Millisecond, b)
				if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
					t.Fatalf("attempt %d not sent %s after attempt %d failed (b got %v); want it after its wait of %s", n+1, want, n, got, want)
				}
			}
			if lateBefore {
				late()
				failsAndWaits(2, time.Second) // the first retry
			} else {
				failsAndWaits(2, time.Second)
				late()                          // attempt 3 is running on b
				failsAndWaits(3, 2*time.Second) // the second retry
			}
		})
	}
}

// The late result stays no retry across a master restart: what tells it
// apart is on disk (its attempt is a duplicate), not in memory only.
func TestLateRetryableResultIsNoRetryAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	a := register(t, d, "a", 1)
	id := submitOne(t, d, Submission{Cmd: "flaky", MaxAttempts: 4, RetryOn: []task.Outcome{task.OutcomeFailed},
		Backoff: time.Second, MaxBackoff: time.Minute})
	drain(a)
	b := register(t, d, "b", 1)
	lose(d, clk, a)
	drain(b) // attempt 2
	if _, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clk, 100)
	d2.rand = func() float64 { return 0 }
	b2, _, err := d2.Register(ctx, Registration{WorkerID: "b", InstanceID: b.InstanceID, Slots: 1, Running: []Delivery{{TaskID: id, Attempt: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	before := clk.Now()
	if _, err := d2.Report(ctx, result(t, d2, b2, id, 2, 1)); err != nil {
		t.Fatal(err)
	}
	tk, _ := d2.Get(ctx, id)
	if got := tk.RunAt.Sub(before); tk.Status != task.StatusScheduled || got < time.Second || got > time.Second+50*time.Millisecond {
		t.Fatalf("attempt 2 failed after a restart: %s, run_at %s after it; want scheduled, 1s after (the first retry)", tk.Status, got)
	}
}
