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

// A task retried by hand is queued anew: it runs after the tasks that
// were already waiting, whatever its ID, as it does when its ID is not a
// UUID.
func TestManualRetryQueuesAtTheBack(t *testing.T) {
	for _, first := range []int{1, 2} { // the retried task is t0001 (an alias) or ...0002 (a UUID)
		t.Run(map[int]string{1: "alias", 2: "uuid"}[first], func(t *testing.T) {
			d, _ := newTest(t)
			if first == 2 {
				submitOne(t, d, Submission{Cmd: "pad"}) // t0001 queued, waits with the rest
			}
			retried := submitOne(t, d, Submission{Cmd: "retried"}) // queued: no worker yet
			other := submitOne(t, d, Submission{Cmd: "other"})
			if _, err := d.Cancel(ctx, retried); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Retry(ctx, retried); err != nil {
				t.Fatal(err)
			}
			ran := runOneByOne(t, d, register(t, d, "w", 1), 3)
			i, j := slices.Index(ran, other), slices.Index(ran, retried)
			if i < 0 || j < 0 || j < i {
				t.Fatalf("ran %v; want %s (queued first) before %s (retried after it was queued)", ran, other, retried)
			}
		})
	}
}

// A task retried by hand runs again: a late result of a delivery made
// before the retry is recorded on that delivery, but does not decide the
// retried task.
func TestManualRetryIsNotDecidedByAnOlderDelivery(t *testing.T) {
	d, clk := newTest(t)
	a := register(t, d, "a", 1)
	id := submitOne(t, d, Submission{Cmd: "exit 1", MaxAttempts: 1})
	drain(a)
	lose(d, clk, a) // out of attempts: failed
	if st, _ := status(t, d, id); st != task.StatusFailed {
		t.Fatalf("status %s, want failed", st)
	}
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	// The old run, out of sight all along, ends now and its report arrives.
	if _, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: 1}); err != nil {
		t.Fatal(err)
	}
	tk, _ := d.Get(ctx, id)
	if tk.Status != task.StatusQueued {
		t.Fatalf("the retried task is %s after attempts %d; want it queued to run again (the retry never ran)", tk.Status, tk.Attempts)
	}
}

// A retry by hand puts a task back in the queue: the queue limit holds for
// it as for a submission.
func TestManualRetryRespectsTheQueueLimit(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxQueued = 1
	id := submitOne(t, d, Submission{Cmd: "a"})
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	submitOne(t, d, Submission{Cmd: "b"})
	_, err := d.Retry(ctx, id)
	if st := d.Stats(); st.Queued > d.p.MaxQueued {
		t.Fatalf("retry answered %v and %d tasks are queued; MaxQueued is %d", err, st.Queued, d.p.MaxQueued)
	}
}

// A task canceled while its worker is away, then retried by hand, then the
// master restarts: when the worker comes back listing the canceled run, it
// must be told to kill it (the cancel must reach it, as README promises),
// and the retry must run as a new delivery, not be taken over by the run
// the user canceled.
func TestCanceledRunIsKilledAfterRetryByHandAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, _ := newOnDB(t, path, clk, 0)
	w := register(t, d, "w", 1)
	id := submit(t, d, 1)[0]
	drain(w)
	d.Unregister(w) // cut off: it may come back to claim id
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newOnDB(t, path, clk, 100)
	w2 := register(t, d2, "w", 2, id) // still running the canceled delivery 1
	got, cancels := take(w2)
	if fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
		t.Errorf("w was told to kill %v, want %s: the user canceled that run", cancels, id)
	}
	if st, worker := status(t, d2, id); st == task.StatusRunning && worker == "w" && len(got) == 0 {
		t.Errorf("after the retry the task is running on w as its canceled delivery 1; want it queued for a new delivery")
	}
	x := register(t, d2, "x", 1)
	if got := drain(x); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Errorf("x got %v, want the retry of %s as a new delivery", got, id)
	}
}

// The same without a restart, with another worker taking the retry: the
// canceled run must still be killed when its worker comes back.
func TestCanceledRunIsKilledWhenItsWorkerReturnsAfterARetryByHand(t *testing.T) {
	d, _, _, id := canceledAwayThenRetried(t)
	w := register(t, d, "w", 1, id)
	if _, cancels := take(w); fmt.Sprint(cancels) != fmt.Sprint([]string{id}) {
		t.Errorf("w was told to kill %v, want %s: the user canceled that run", cancels, id)
	}
}

// canceledAwayThenRetried runs a task on w, cuts w off, cancels the task
// (the kill cannot reach w), retries it by hand, and has x take the retry.
// w is the session that was cut off.
func canceledAwayThenRetried(t *testing.T) (d *Dispatcher, w, x *Session, id string) {
	t.Helper()
	d, _ = newTest(t)
	w = register(t, d, "w", 1)
	id = submit(t, d, 1)[0]
	drain(w)
	d.Unregister(w)
	if _, err := d.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	x = register(t, d, "x", 1)
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := drain(x); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Fatalf("x got %v, want the retry of %s", got, id)
	}
	return d, w, x, id
}

// A run the user canceled while its worker was away finishes there anyway
// (the kill never reached it). The task is retried by hand and runs again
// on x. When w comes back and reports the canceled run's result, that
// result must not decide the task, nor kill the retry's run on x.
func TestResultOfARunCanceledBeforeARetryByHandDoesNotDecideIt(t *testing.T) {
	d, w, x, id := canceledAwayThenRetried(t)
	// w's Report stream delivers the result it held of the canceled run.
	r := result(t, d, w, id, 1, 0)
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	tk, _ := d.Get(ctx, id)
	_, cancels := take(x)
	if tk.Status != task.StatusRunning || tk.WorkerID != "x" || len(cancels) != 0 {
		t.Fatalf("after the canceled run's result: %s on %q, x told to kill %v; want the retry still running on x", tk.Status, tk.WorkerID, cancels)
	}
}

// A task retried by hand is queued, not scheduled, and has not been sent:
// like a new one, it shows no run_at, assigned_at or started_at (those of
// the run before stay in its history), on disk as in memory; so a restart
// also queues it by its creation, as README says.
func TestManualRetryClearsTheTimesOfTheRunBefore(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "exit 1", MaxAttempts: 1, Delay: time.Second})
	pass(d, clk, 2*time.Second, w)
	drain(w)
	finish(t, d, w, id, 1)
	d.Unregister(w) // the retry waits in the queue
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	check := func(where string, tk task.Task) {
		t.Helper()
		if !tk.RunAt.IsZero() || !tk.AssignedAt.IsZero() || !tk.StartedAt.IsZero() || !tk.FinishedAt.IsZero() {
			t.Errorf("%s: the retried task, queued, has run_at %v, assigned_at %v, started_at %v, finished_at %v; want none", where, tk.RunAt, tk.AssignedAt, tk.StartedAt, tk.FinishedAt)
		}
		if len(tk.History) != 1 || tk.History[0].AssignedAt.IsZero() {
			t.Errorf("%s: history %+v, want the run before with its times", where, tk.History)
		}
	}
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	check("in memory", tk)
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stored, err := d.p.Store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	check("on disk", stored)
}

// A task canceled while its worker w was away is retried by hand, and the
// retry, running on x, is canceled too. w then reports the run of the
// first delivery, from before the retry: it is a late result of a task
// that is final, so it is a duplicate, as README says of every result
// that comes after the task is final, and as it is when the retry ended
// any other way.
func TestResultFromBeforeARetryByHandIsADuplicateOnceTheRetryIsCanceled(t *testing.T) {
	d, w, _, id := canceledAwayThenRetried(t)
	if _, err := d.Cancel(ctx, id); err != nil { // the retry, running on x
		t.Fatal(err)
	}
	dup, err := d.Report(ctx, result(t, d, w, id, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := d.Get(ctx, id)
	if !dup || !tk.History[0].Duplicate {
		t.Fatalf("w's result of attempt 1 (from before the retry): duplicate %v, history %+v; want it marked duplicate", dup, tk.History)
	}
	if tk.Status != task.StatusCanceled {
		t.Fatalf("task %s, want canceled", tk.Status)
	}
}

// A retry by hand reads a task that left memory from the store, without
// the lock; a retention round that deletes it (attempts and all) between
// that read and the retry's write must not cost it its history: the retry
// was accepted, and the task, history included, is on disk after it.
func TestManualRetryRacingRetentionKeepsTheHistory(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	id := submitOne(t, d, Submission{Cmd: "false"})
	deliver(d, w)
	finish(t, d, w, id, 1) // failed, final, and off memory once on disk
	if err := <-d.p.Store.Apply(); err != nil {
		t.Fatal(err)
	}
	retryReadHook = func() {
		if n, err := d.p.Store.DeleteFinished(ctx, clk.Now().Add(time.Hour), 10); err != nil || n != 1 {
			t.Errorf("retention between the retry's read and its write: %d, %v; want the task deleted", n, err)
		}
	}
	t.Cleanup(func() { retryReadHook = func() {} })
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	got, err := d.p.Store.Get(ctx, id)
	if err != nil {
		t.Fatalf("on disk after the retry: %v", err)
	}
	if got.Status.Final() || len(got.History) == 0 || got.History[0].N != 1 || got.History[0].Outcome != task.OutcomeFailed || got.History[0].WorkerID != "w" {
		t.Fatalf("on disk after the retry: %s, history %+v; want live again, with attempt 1 failed on w", got.Status, got.History)
	}
}

// A retry by hand reads a final task off disk without the lock. A worker's
// report of a delivery of it that landed between that read and the
// retry's write (acknowledged: the worker forgets it) must not be undone
// by the retry writing the history it read: the attempt stays as reported.
func TestManualRetryKeepsAReportThatLandedAfterItsRead(t *testing.T) {
	d, _ := newTest(t)
	w, id := canceledOffMemory(t, d)
	retryReadHook = func() {
		r := result(t, d, w, id, 1, -1)
		r.Canceled = true
		if _, err := d.Report(ctx, r); err != nil {
			t.Errorf("the kill's report: %v", err)
		}
	}
	t.Cleanup(func() { retryReadHook = func() {} })
	if _, err := d.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := <-d.p.Store.Apply(); err != nil {
		t.Fatal(err)
	}
	got, err := d.p.Store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.History) == 0 || got.History[0].Outcome != task.OutcomeCanceled {
		t.Fatalf("attempt 1 on disk after the retry: %+v; want canceled, as its worker reported (and was acknowledged)", got.History)
	}
	// The retry is live, answered from memory: the same history there (it
	// showed attempt 1 running, as Retry had read it).
	mem, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(mem.History) == 0 || mem.History[0].Outcome != task.OutcomeCanceled {
		t.Fatalf("attempt 1 in memory after the retry: %+v; want canceled, as on disk", mem.History)
	}
}

// The same with the end the master records itself: a restarted master
// ends lost a canceled task's run whose worker did not come back (Sweep)
// between a retry's read of the task and its lock. The retry, live in
// memory, shows that end, as the disk does.
func TestManualRetryKeepsAnEndSweepRecordedAfterItsRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	id := canceledWhileRunning(t, path, clk)

	d2, _ := newOnDB(t, path, clk, 100) // the run is unended, its task off memory
	once := false
	retryReadHook = func() {
		if !once {
			once = true
			pass(d2, clk, workerTimeout+2*time.Second) // w never came back
		}
	}
	t.Cleanup(func() { retryReadHook = func() {} })
	if _, err := d2.Retry(ctx, id); err != nil {
		t.Fatal(err)
	}
	for where, tk := range shownAndStored(t, d2, id) {
		if tk.Status != task.StatusQueued || len(tk.History) != 1 || tk.History[0].Outcome != task.OutcomeLost {
			t.Errorf("%s after the retry: %s, history %+v; want queued, attempt 1 lost (its worker did not come back)", where, tk.Status, tk.History)
		}
	}
}

// A worker's result for a task off memory is read from the store without
// the lock. A retry by hand that puts the task back in memory between
// that read and the lock makes it a result from before the retry: it
// decides nothing, is recorded as a late one, and shows in the retry's
// history in memory as on disk (it was judged against the final task
// read, and written to disk alone).
func TestResultRacingARetryByHandIsRecordedOnTheRetry(t *testing.T) {
	d, _ := newTest(t)
	w, id := canceledOffMemory(t, d)
	once := false
	reportReadHook = func() {
		if !once {
			once = true
			if _, err := d.Retry(ctx, id); err != nil {
				t.Errorf("the retry: %v", err)
			}
		}
	}
	t.Cleanup(func() { reportReadHook = func() {} })
	// w's run ended before the kill reached it.
	dup, err := d.Report(ctx, result(t, d, w, id, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !dup {
		t.Errorf("the result was not told a duplicate; it came after the retry, which it must not decide")
	}
	for where, tk := range shownAndStored(t, d, id) {
		if tk.Status.Final() || len(tk.History) == 0 {
			t.Fatalf("%s: %s, history %+v; want the retry live", where, tk.Status, tk.History)
		}
		if a := tk.History[0]; a.N != 1 || a.Outcome != task.OutcomeSucceeded || !a.Duplicate {
			t.Errorf("%s: attempt 1 %+v; want succeeded, a duplicate (from before the retry)", where, a)
		}
	}
}

// The same with a report whose write was queued before the retry looked
// for the task, and had not landed when it read it: the retry must not put
// in memory a history without it. The write lock is held from outside
// until the retry has read the task (or has waited a while, should it wait
// for the write first, as it must).
func TestManualRetryKeepsAReportQueuedBeforeItsRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	d, _ := newOnDB(t, path, &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, 0)
	w, id := canceledOffMemory(t, d)
	unlock := storetest.HoldWriteLock(t, path)
	r := result(t, d, w, id, 1, -1)
	r.Canceled = true
	p := d.ReportAsync(ctx, r) // recorded, queued; it cannot land yet
	read := make(chan struct{}, 1)
	retryReadHook = func() {
		select {
		case read <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { retryReadHook = func() {} })
	retried := goErr(func() error { _, err := d.Retry(ctx, id); return err })
	select {
	case <-read: // it read the task while the report's write could not land
	case <-time.After(200 * time.Millisecond): // it waits for that write
	}
	unlock()
	if err := within(t, "the retry", retried); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for where, tk := range shownAndStored(t, d, id) {
		if tk.Status.Final() || len(tk.History) == 0 || tk.History[0].Outcome != task.OutcomeCanceled {
			t.Errorf("%s after the retry: %s, history %+v; want live, attempt 1 canceled (as its worker reported, and was acknowledged)", where, tk.Status, tk.History)
		}
	}
}

// A task that failed out of attempts waits in memory until a sweep finds
// its final write on disk (evictLocked). Retried by hand meanwhile, and
// canceled, that sweep must not drop it from memory before the cancel's
// write lands: a worker's report of the kill, read off disk then, found
// the retry still running there, took it back, and stored it queued over
// the cancel, a task in no queue that a restarted master would run again.
func TestRetryByHandOfATaskWaitingToLeaveMemoryKeepsItUntilItsOwnWriteLands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	d, clk := newOnDB(t, path, &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, 0)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour, MaxAttempts: 2})
	w := register(t, d, "w", 1)
	deliver(d, w)
	lose(d, clk, w) // re-queued
	w2 := register(t, d, "w2", 1)
	deliver(d, w2)
	unlock := storetest.HoldWriteLock(t, path)
	lose(d, clk, w2) // out of attempts: failed, in memory until a sweep finds its write on disk
	unlock()
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := status(t, d, id); st != task.StatusFailed {
		t.Fatalf("after two losses: %s, want failed", st)
	}
	if _, err := d.Retry(ctx, id); err != nil { // from memory
		t.Fatal(err)
	}
	x := register(t, d, "x", 1)
	deliver(d, x) // attempt 3
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	unlock = storetest.HoldWriteLock(t, path)
	canceled := goErr(func() error { _, err := d.Cancel(ctx, id); return err })
	eventually(t, "the cancel", func() bool { st, _ := status(t, d, id); return st == task.StatusCanceled })
	beat(d, x)
	d.Sweep() // the failure's write is on disk; the cancel's is not
	r := result(t, d, x, id, 3, -1)
	r.Canceled = true // x reports the kill
	p := d.ReportAsync(ctx, r)
	unlock()
	if err := within(t, "the cancel", canceled); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for where, tk := range shownAndStored(t, d, id) {
		if tk.Status != task.StatusCanceled || len(tk.History) != 3 || tk.History[2].Outcome != task.OutcomeCanceled {
			t.Errorf("%s: %s, history %+v; want canceled, attempt 3 canceled (its kill reported)", where, tk.Status, tk.History)
		}
	}
}

// shownAndStored flushes the store and returns task id as the dispatcher
// shows it (from memory while it is there) and as the store has it.
func shownAndStored(t *testing.T, d *Dispatcher, id string) map[string]task.Task {
	t.Helper()
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	shown, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := d.p.Store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]task.Task{"as shown": shown, "on disk": stored}
}

// canceledOffMemory runs a task on a worker w of d and cancels it: the
// task is settled (off memory, attempt 1 running on disk), and w has taken
// the kill but not reported it.
func canceledOffMemory(t *testing.T, d *Dispatcher) (w *Session, id string) {
	t.Helper()
	w = register(t, d, "w", 1)
	id = submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour})
	deliver(d, w)
	if _, err := d.Cancel(ctx, id); err != nil { // settled: off memory, attempt 1 running on disk
		t.Fatal(err)
	}
	take(w)
	return w, id
}

// A final task stays in memory until its final write is on disk and
// someone drops it (settle, or a sweep: evictLocked). Retention may delete
// its row meanwhile: its finished_at, a worker's clock, can be older than
// a short MASTER_RETENTION. A retry by hand of it then must put the row
// back with its history, as a retry of a task read off disk does
// (TestManualRetryRacingRetentionKeepsTheHistory), not a row without its
// past runs.
func TestManualRetryOfATaskInMemoryThatRetentionDeletedKeepsTheHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	d, clk := newOnDB(t, path, &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, 0)
	id := submitOne(t, d, Submission{Cmd: "sleep 3000", Timeout: time.Hour, MaxAttempts: 1})
	w := register(t, d, "w", 1)
	deliver(d, w)
	unlock := storetest.HoldWriteLock(t, path)
	lose(d, clk, w) // out of attempts: failed, in memory until a sweep finds its write on disk
	unlock()
	if err := d.p.Store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := d.p.Store.DeleteFinished(ctx, clk.Now().Add(time.Hour), 10); err != nil || n != 1 {
		t.Fatalf("retention: %d, %v; want the task deleted", n, err)
	}
	if tk, err := d.Retry(ctx, id); err != nil || tk.Status != task.StatusQueued {
		t.Fatalf("retry of the task in memory: %s, %v; want it queued", tk.Status, err)
	}
	for where, tk := range shownAndStored(t, d, id) {
		if tk.Status.Final() || len(tk.History) != 1 || tk.History[0].N != 1 || tk.History[0].Outcome != task.OutcomeLost || tk.History[0].WorkerID != "w" {
			t.Errorf("%s after the retry: %s, history %+v; want queued, with attempt 1 lost on w", where, tk.Status, tk.History)
		}
	}
}
