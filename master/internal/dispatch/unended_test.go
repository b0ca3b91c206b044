package dispatch

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// canceledThenRetried runs a task on w, cancels it (the kill is sent; w
// has not reported it) and retries it by hand; with x, the retry runs on
// x as delivery 2. The store is flushed: the master may stop now.
func canceledThenRetried(t *testing.T, path string, clk *fakeClock, withX bool) string {
	t.Helper()
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, w)
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Retry(ctx, id); err != nil { // queued: w's only slot holds the killed run
		t.Fatal(err)
	}
	if withX {
		x := register(t, d, "x", 1)
		if got := deliver(d, x); len(got) != 1 || got[0] != id {
			t.Fatalf("x got %v, want the retry of %s", got, id)
		}
	}
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return id
}

// A run canceled, then retried by hand, whose kill was not reported when
// the master stopped, is running in the history of a live task (queued, or
// running again elsewhere): the restarted master must give its worker the
// claim window too, then end it lost, as README says; it stayed running
// for good.
func TestRunFromBeforeARetryOverARestart(t *testing.T) {
	for _, c := range []struct {
		name  string
		withX bool // the retry runs on x when the master stops
		back  bool // w comes back, without the run
	}{
		{"retry queued, worker never comes back", false, false},
		{"retry queued, worker comes back without it", false, true},
		{"retry running elsewhere, worker never comes back", true, false},
		{"retry running elsewhere, worker comes back without it", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rh.db")
			clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			id := canceledThenRetried(t, path, clk, c.withX)

			d2, _ := newOnDB(t, path, clk, 100)
			if c.back {
				register(t, d2, "w", 1)
			} else {
				pass(d2, clk, workerTimeout+2*time.Second)
			}
			for where, tk := range shownAndStored(t, d2, id) {
				if len(tk.History) == 0 {
					t.Fatalf("%s: no history", where)
				}
				if a := tk.History[0]; a.Outcome != task.OutcomeLost || !strings.Contains(a.Error, "restarted") || a.FinishedAt.IsZero() {
					t.Errorf("%s: delivery 1 (canceled, then the task retried) %+v; want lost, the master restarted", where, a)
				}
			}
		})
	}
}

// The same run, its worker back holding it within the window: it is told
// to kill it, keeps it until it reports (nothing ends it lost meanwhile),
// and its report is recorded.
func TestRunFromBeforeARetryHeldOverARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	id := canceledThenRetried(t, path, clk, false)

	d2, _ := newOnDB(t, path, clk, 100)
	w := backHolding(t, d2, &Session{WorkerID: "w", InstanceID: "w-instance"}, id, 1)
	if _, cancels := take(w); len(cancels) != 1 || cancels[0] != id {
		t.Fatalf("w was told to kill %v, want %s", cancels, id)
	}
	pass(d2, clk, workerTimeout+2*time.Second, w)
	if tk, _ := d2.Get(ctx, id); tk.History[0].Outcome != task.OutcomeRunning {
		t.Fatalf("delivery 1 %+v while w holds it; want running until w reports", tk.History[0])
	}
	r := result(t, d2, w, id, 1, -1)
	r.Canceled = true
	if _, err := d2.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	if tk, _ := d2.Get(ctx, id); tk.History[0].ExitCode == nil || tk.Status.Final() {
		t.Errorf("after w's report: %s, delivery 1 %+v; want the report recorded, the retry still to run", tk.Status, tk.History[0])
	}
}

// A master that restarts between a cancel and the worker's report of the
// kill forgets it waited for that report. Start-up reads such runs back
// (store.Unended): one whose worker never comes back, or comes back
// without it, ends lost, as without the restart; one its worker still
// holds is killed, and its report recorded.
func TestCanceledRunOverARestart(t *testing.T) {
	for _, how := range []string{"worker never comes back", "worker comes back without it", "worker comes back holding it"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rh.db")
			clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			id := canceledWhileRunning(t, path, clk)

			d2, _ := newOnDB(t, path, clk, 100)
			outcome := func() task.Attempt {
				t.Helper()
				if err := d2.p.Store.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				tk, err := d2.p.Store.Get(ctx, id)
				if err != nil || tk.Status != task.StatusCanceled || len(tk.History) != 1 {
					t.Fatalf("on disk: %+v, %v; want canceled with one delivery", tk, err)
				}
				return tk.History[0]
			}
			switch how {
			case "worker never comes back":
				pass(d2, clk, workerTimeout+2*time.Second)
				if a := outcome(); a.Outcome != task.OutcomeLost || !strings.Contains(a.Error, "did not come back") || a.FinishedAt.IsZero() {
					t.Errorf("delivery %+v; want lost, its worker not back in time", a)
				}
			case "worker comes back without it":
				register(t, d2, "w", 1)
				if a := outcome(); a.Outcome != task.OutcomeLost || !strings.Contains(a.Error, "came back without it") {
					t.Errorf("delivery %+v; want lost, its worker back without it", a)
				}
			case "worker comes back holding it":
				w2 := register(t, d2, "w", 1, id)
				if _, cancels := take(w2); fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
					t.Errorf("w was told to kill %v, want %s", cancels, id)
				}
				pass(d2, clk, workerTimeout+2*time.Second, w2)
				if a := outcome(); a.Outcome != task.OutcomeRunning {
					t.Errorf("delivery %+v while w holds it; want running until w reports", a)
				}
				r := result(t, d2, w2, id, 1, -1)
				r.Canceled = true
				if dup, err := d2.Report(ctx, r); err != nil || dup {
					t.Fatalf("report of the kill: dup=%v %v", dup, err)
				}
				if a := outcome(); a.Outcome != task.OutcomeCanceled || a.Duplicate {
					t.Errorf("delivery %+v after the report; want canceled, no duplicate", a)
				}
			}
		})
	}
}

// A worker that comes back holding a run it must kill (its task was
// canceled while it was away) keeps that run's slot for the grace after
// the kill is sent, as for a kill sent to a connected worker: not for the
// claim window on top of it.
func TestKillSentAtRegistrationHoldsTheSlotForTheGrace(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, w)
	d.Unregister(w)
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	w = register(t, d, "w", 1, id)
	if _, cancels := take(w); fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
		t.Fatalf("w was told to kill %v, want %s", cancels, id)
	}
	running := func() int {
		for _, wi := range d.Workers() {
			if wi.ID == "w" {
				return wi.Running
			}
		}
		t.Fatal("w is not connected")
		return 0
	}
	pass(d, clk, reportGrace-2*time.Second, w)
	if n := running(); n != 1 {
		t.Fatalf("w runs %d before the grace passed; want the killed run's slot held", n)
	}
	pass(d, clk, 4*time.Second, w)
	if n := running(); n != 0 {
		t.Errorf("w runs %d once the grace passed without the kill's report; want its slot free", n)
	}
}

// canceledWhileRunning runs a task on w and cancels it (the kill is sent; w
// has not reported it), on the database at path. The store is flushed: the
// master may stop now.
func canceledWhileRunning(t *testing.T, path string, clk *fakeClock) string {
	t.Helper()
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, w)
	if _, err := d.Cancel(ctx, id); err != nil { // the kill is sent; no report yet
		t.Fatal(err)
	}
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return id
}

// The end of a run whose worker is away, recorded as the cancel or the
// result that made the task final is, lands with that task's final state,
// in one transaction. In two, a master killed between them restarted with
// the task running on disk and that very delivery lost in its history: a
// worker coming back holding it kept running it as its current delivery,
// shown lost meanwhile. The write lock is held from outside while the call
// queues its writes, so that the store commits them as they were queued
// (one call at a time once it retries): one commit, not two.
func TestAnAwayRunsEndLandsWithItsTask(t *testing.T) {
	for _, how := range []string{"canceled", "decided by a late result"} {
		t.Run(how, func(t *testing.T) {
			d, clk, path := newFlaky(t)
			w := register(t, d, "w", 1)
			id := submit(t, d, 1)[0]
			drain(w)
			away, want := w, task.StatusCanceled
			call := func() error { _, err := d.Cancel(ctx, id); return err }
			if how == "decided by a late result" {
				// w is lost, the task runs again on x (attempt 2), and x
				// goes away; w's result of attempt 1 comes late and decides.
				x := register(t, d, "x", 1)
				lose(d, clk, w)
				if got := drain(x); len(got) != 1 {
					t.Fatalf("x got %v, want the task again", got)
				}
				away, want = x, task.StatusSucceeded
				call = func() error { _, err := d.Report(ctx, result(t, d, w, id, 1, 0)); return err }
			}
			d.Unregister(away) // its connection closed: nobody holds the run now
			if err := d.p.Store.Flush(ctx); err != nil {
				t.Fatal(err)
			}

			unlock := storetest.HoldWriteLock(t, path)
			done := goErr(call)
			failing(t, d)
			before := d.p.Store.Counts().Commits
			unlock()
			if err := within(t, "the call", done); err != nil {
				t.Fatal(err)
			}
			if n := d.p.Store.Counts().Commits - before; n != 1 {
				t.Errorf("the task's final state and the away run's end took %d commits, want 1", n)
			}
			tk, err := d.p.Store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if last := tk.History[len(tk.History)-1]; tk.Status != want || last.WorkerID != away.WorkerID || last.Outcome != task.OutcomeLost {
				t.Errorf("on disk: %s, history %+v; want %s with %s's run lost", tk.Status, tk.History, want, away.WorkerID)
			}
		})
	}
}
