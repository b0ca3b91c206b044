package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens a store in a fresh directory and closes it when the test ends.
func open(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	s, err := Open(path, discard())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// apply applies ws and waits for the commit.
func apply(t testing.TB, s *Store, ws ...Write) {
	t.Helper()
	if err := <-s.Apply(ws...); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func intp(v int) *int { return &v }

// at returns a time with nanoseconds, in a zone other than UTC, so that a
// round trip that lost either would show.
func at(sec int) time.Time {
	return time.Date(2026, 3, 1, 12, 0, sec, 123456789, time.FixedZone("CET", 3600))
}

func newTask(id string, created time.Time, st task.Status) *task.Task {
	return &task.Task{ID: id, Cmd: "echo " + id, Status: st, MaxAttempts: 3, Timeout: time.Minute, CreatedAt: created}
}

// utc returns t with every time in UTC, as the store returns them.
func utc(t task.Task) task.Task {
	fix := func(tm *time.Time) {
		if !tm.IsZero() {
			*tm = tm.UTC()
		}
	}
	fix(&t.CreatedAt)
	fix(&t.AssignedAt)
	fix(&t.StartedAt)
	fix(&t.FinishedAt)
	fix(&t.RunAt)
	if t.Request != nil {
		r := *t.Request
		fix(&r.RunAt)
		t.Request = &r
	}
	t.History = append([]task.Attempt(nil), t.History...)
	if len(t.History) == 0 {
		t.History = nil
	}
	for i := range t.History {
		fix(&t.History[i].AssignedAt)
		fix(&t.History[i].FinishedAt)
	}
	return t
}

func mustGet(t *testing.T, s *Store, id string) task.Task {
	t.Helper()
	got, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	s, _ := open(t)
	full := task.Task{
		ID: "t1", Cmd: "make test", Status: task.StatusSucceeded, Attempts: 2, WorkerID: "w2",
		ExitCode: intp(0), Stdout: "out\x01ü", Stderr: "err", StdoutCut: true, StderrCut: false,
		Error: "", CreatedAt: at(1), AssignedAt: at(2), StartedAt: at(3), FinishedAt: at(4),
		Timeout: 90 * time.Second, MaxAttempts: 5, IdempotencyKey: "key-1",
		History: []task.Attempt{
			{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeLost, Error: "worker vanished", AssignedAt: at(1)},
			{TaskID: "t1", N: 2, WorkerID: "w2", Outcome: task.OutcomeSucceeded, ExitCode: intp(0), AssignedAt: at(2), FinishedAt: at(4)},
		},
	}
	failed := task.Task{
		ID: "t2", Cmd: "false", Status: task.StatusFailed, Attempts: 1, WorkerID: "w1",
		ExitCode: intp(7), Error: "exit status 7", StderrCut: true, CreatedAt: at(5), FinishedAt: at(6),
		Timeout: time.Second, MaxAttempts: 1,
		History: []task.Attempt{{TaskID: "t2", N: 1, WorkerID: "w1", Outcome: task.OutcomeFailed, ExitCode: intp(7), Error: "exit status 7", AssignedAt: at(5), FinishedAt: at(6)}},
	}
	queued := task.Task{ID: "t3", Cmd: "sleep 1", Status: task.StatusQueued, MaxAttempts: 3, CreatedAt: at(7)}

	for _, want := range []task.Task{full, failed, queued} {
		ws := []Write{{Task: &want}}
		for i := range want.History {
			ws = append(ws, Write{Attempt: &want.History[i]})
		}
		apply(t, s, ws...)
	}
	for _, want := range []task.Task{full, failed, queued} {
		t.Run(want.ID, func(t *testing.T) {
			got := mustGet(t, s, want.ID)
			if w := utc(want); !reflect.DeepEqual(got, w) {
				t.Errorf("Get:\n got %+v\nwant %+v", got, w)
			}
			if want.ExitCode != nil && (got.ExitCode == nil || *got.ExitCode != *want.ExitCode) {
				t.Errorf("ExitCode = %v, want %d", got.ExitCode, *want.ExitCode)
			}
		})
	}
	if got := mustGet(t, s, "t3"); got.ExitCode != nil || !got.FinishedAt.IsZero() || got.History != nil {
		t.Errorf("queued task: ExitCode %v, FinishedAt %v, History %v; want nil, zero, nil", got.ExitCode, got.FinishedAt, got.History)
	}

	if _, err := s.Get(context.Background(), "nope"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Get(nope) err = %v, want ErrNotFound", err)
	}
}

// Every scheduling field comes back through each read: Get, Live and List.
func TestRoundTripScheduling(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	scheduled := task.Task{
		ID: "s1", Cmd: "train", Status: task.StatusScheduled, Attempts: 3, MaxAttempts: 5, Timeout: time.Hour,
		CreatedAt: at(1), Priority: 1, Requires: map[string]string{"gpu": "nvidia", "zone": "eu", "example.com/arch": "x86_64"},
		RunAt: at(40), RetryOn: []task.Outcome{task.OutcomeFailed, task.OutcomeTimedOut},
		Backoff: 1500 * time.Millisecond, MaxBackoff: 10 * time.Minute, AttemptBase: 2,
	}
	queued := task.Task{
		ID: "s2", Cmd: "render", Status: task.StatusQueued, MaxAttempts: 3, CreatedAt: at(2),
		Priority: 5, Requires: map[string]string{"size": "large"}, RetryOn: []task.Outcome{task.OutcomeTimedOut},
	}
	// Final, with a run time from a delayed run it had: nothing is lost
	// when a task leaves the live statuses.
	failed := task.Task{
		ID: "s3", Cmd: "false", Status: task.StatusFailed, Attempts: 2, MaxAttempts: 2, ExitCode: intp(1),
		CreatedAt: at(3), FinishedAt: at(50), Priority: 2, RunAt: at(45),
		RetryOn: []task.Outcome{task.OutcomeFailed}, Backoff: time.Second, MaxBackoff: time.Minute,
	}
	apply(t, s, Write{Task: &scheduled}, Write{Task: &queued}, Write{Task: &failed})

	for _, want := range []task.Task{scheduled, queued, failed} {
		if got := mustGet(t, s, want.ID); !reflect.DeepEqual(got, utc(want)) {
			t.Errorf("Get(%s):\n got %+v\nwant %+v", want.ID, got, utc(want))
		}
	}
	live, err := s.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []task.Task{utc(scheduled), utc(queued)}; !reflect.DeepEqual(live, want) {
		t.Errorf("Live:\n got %+v\nwant %+v", live, want)
	}
	page, err := s.List(ctx, Query{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []task.Task{utc(failed), utc(queued), utc(scheduled)}; !reflect.DeepEqual(page.Tasks, want) {
		t.Errorf("List:\n got %+v\nwant %+v", page.Tasks, want)
	}

	// The columns hold the documented text forms, which other tools (and
	// the sqlite3 shell) read.
	var requires, retryOn string
	if err := s.db.QueryRow(`SELECT requires, retry_on FROM tasks WHERE id = 's1'`).Scan(&requires, &retryOn); err != nil {
		t.Fatal(err)
	}
	if requires != "example.com/arch=x86_64,gpu=nvidia,zone=eu" || retryOn != "failed,timed_out" {
		t.Errorf("stored requires %q, retry_on %q; want the canonical label string and failed,timed_out", requires, retryOn)
	}
}

// A task's request as sent (task.Request, kept for tasks with an
// idempotency key) comes back through every read, whichever statement
// wrote it, and survives the task's later writes; a task without one
// reads back without one.
func TestRoundTripRequest(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	// Inserted by taskSubmitSQL (nothing else set) and by taskInsertSQL
	// (a run time), and one without a request.
	plain := *newTask("r1", at(1), task.StatusQueued)
	plain.IdempotencyKey = "k1"
	plain.Request = &task.Request{DefaultTimeout: true}
	delayed := *newTask("r2", at(2), task.StatusScheduled)
	delayed.IdempotencyKey, delayed.RunAt = "k2", at(30)
	delayed.Request = &task.Request{RunAt: at(30), DefaultMaxAttempts: true}
	none := *newTask("r3", at(3), task.StatusQueued)
	apply(t, s, Write{Task: &plain, Kind: Insert}, Write{Task: &delayed, Kind: Insert}, Write{Task: &none, Kind: Insert})

	// Then delivered and retried: RunAt moves on, the request stays.
	delayed.Status, delayed.Attempts, delayed.WorkerID, delayed.AssignedAt = task.StatusRunning, 1, "w1", at(31)
	apply(t, s, Write{Task: &delayed, Kind: Update})
	delayed.Status, delayed.RunAt = task.StatusScheduled, at(40)
	apply(t, s, Write{Task: &delayed, Kind: Update})
	// And a whole-row upsert (a manual retry's restore) keeps it too.
	plain.Status = task.StatusCanceled
	apply(t, s, Write{Task: &plain, Kind: Upsert})

	for _, want := range []task.Task{plain, delayed, none} {
		if got := mustGet(t, s, want.ID); !reflect.DeepEqual(got, utc(want)) {
			t.Errorf("Get(%s):\n got %+v (request %+v)\nwant %+v (request %+v)", want.ID, got, got.Request, utc(want), want.Request)
		}
	}
	got, err := s.FindByIdempotencyKey(ctx, "k2")
	if err != nil || !reflect.DeepEqual(got.Request, utc(delayed).Request) {
		t.Errorf("FindByIdempotencyKey(k2) = request %+v, %v; want %+v", got.Request, err, delayed.Request)
	}
	live, err := s.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []task.Task{utc(delayed), utc(none)}; !reflect.DeepEqual(live, want) {
		t.Errorf("Live:\n got %+v\nwant %+v", live, want)
	}
	var bits sql.NullInt64
	var runAt int64
	if err := s.db.QueryRow(`SELECT req_defaults, req_run_at FROM tasks WHERE id = 'r2'`).Scan(&bits, &runAt); err != nil {
		t.Fatal(err)
	}
	if !bits.Valid || bits.Int64 != reqMaxAttempts || runAt != at(30).UnixNano() {
		t.Errorf("stored req_defaults %v, req_run_at %d; want %d, %d", bits, runAt, reqMaxAttempts, at(30).UnixNano())
	}
}

func TestUpsert(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	apply(t, s, Write{Task: tk})

	running := *tk
	running.Status, running.Attempts, running.WorkerID, running.AssignedAt = task.StatusRunning, 1, "w1", at(1)
	a1 := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	apply(t, s, Write{Task: &running, Attempt: &a1})

	done := running
	done.Status, done.ExitCode, done.FinishedAt = task.StatusSucceeded, intp(0), at(2)
	a1done := a1
	a1done.Outcome, a1done.ExitCode, a1done.FinishedAt = task.OutcomeSucceeded, intp(0), at(2)
	apply(t, s, Write{Task: &done, Attempt: &a1done})

	// Attempt 2 went to another worker and was lost; its late result comes
	// after the task is final: it updates attempt 2's own row, as duplicate.
	a2 := task.Attempt{TaskID: "t1", N: 2, WorkerID: "w2", Outcome: task.OutcomeLost, AssignedAt: at(1), FinishedAt: at(2)}
	apply(t, s, Write{Attempt: &a2})
	dup := a2
	dup.Outcome, dup.ExitCode, dup.FinishedAt, dup.Duplicate = task.OutcomeFailed, intp(1), at(3), true
	apply(t, s, Write{Attempt: &dup})

	want := done
	want.History = []task.Attempt{a1done, dup}
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(want)) {
		t.Errorf("Get:\n got %+v\nwant %+v", got, utc(want))
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	live := newTask("a", at(0), task.StatusQueued)
	final := newTask("b", at(1), task.StatusSucceeded)
	final.ExitCode = intp(0)
	final.IdempotencyKey = "k"
	a := task.Attempt{TaskID: "b", N: 1, WorkerID: "w", Outcome: task.OutcomeSucceeded, ExitCode: intp(0)}
	// Not waited on: Close must flush it.
	s.Apply(Write{Task: live}, Write{Task: final, Attempt: &a})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path, discard())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()

	wantB := utc(*final)
	wantB.History = []task.Attempt{a}
	if got := mustGet(t, s, "b"); !reflect.DeepEqual(got, wantB) {
		t.Errorf("Get after reopen:\n got %+v\nwant %+v", got, wantB)
	}
	got, err := s.Live(ctx)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], utc(*live)) {
		t.Errorf("Live after reopen = %+v, %v; want [%+v]", got, err, utc(*live))
	}
	page, err := s.List(ctx, Query{})
	if err != nil || len(page.Tasks) != 2 || page.Tasks[0].ID != "b" || page.Tasks[1].ID != "a" {
		t.Errorf("List after reopen = %+v, %v; want b, a", page, err)
	}
	if got, err := s.FindByIdempotencyKey(ctx, "k"); err != nil || got.ID != "b" {
		t.Errorf("FindByIdempotencyKey after reopen = %v, %v; want b", got.ID, err)
	}

	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(migrations))
	}
}

func TestOrder(t *testing.T) {
	s, _ := open(t)
	const n = 300
	var last <-chan error
	for i := range n {
		tk := newTask("t", at(0), task.StatusRunning)
		tk.Attempts = i
		last = s.Apply(Write{Task: tk})
	}
	if err := <-last; err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "t"); got.Attempts != n-1 {
		t.Errorf("Attempts = %d, want %d (the last Apply)", got.Attempts, n-1)
	}
}

// Apply copies its writes: changing a task after Apply returns does not
// change what is stored.
func TestApplyCopies(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t", at(0), task.StatusQueued)
	tk.ExitCode = intp(1)
	tk.Requires = map[string]string{"gpu": "nvidia"}
	tk.RetryOn = []task.Outcome{task.OutcomeFailed}
	ch := s.Apply(Write{Task: tk})
	tk.Status, *tk.ExitCode = task.StatusFailed, 2
	tk.Requires["gpu"], tk.Requires["zone"] = "amd", "eu"
	tk.RetryOn[0] = task.OutcomeTimedOut
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, "t")
	if got.Status != task.StatusQueued || *got.ExitCode != 1 {
		t.Errorf("stored %s, exit %d; want queued, exit 1", got.Status, *got.ExitCode)
	}
	if !reflect.DeepEqual(got.Requires, map[string]string{"gpu": "nvidia"}) || !reflect.DeepEqual(got.RetryOn, []task.Outcome{task.OutcomeFailed}) {
		t.Errorf("stored requires %v, retry on %v; want map[gpu:nvidia], [failed]", got.Requires, got.RetryOn)
	}
}

func TestGroupCommit(t *testing.T) {
	s, _ := open(t)
	const n = 500
	before := s.commits.Load()
	chs := make([]<-chan error, n)
	for i := range n {
		chs[i] = s.Apply(Write{Task: newTask(fmt.Sprintf("t%03d", i), at(0), task.StatusQueued)})
	}
	for i, ch := range chs {
		if err := <-ch; err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	commits := s.commits.Load() - before
	if commits >= n {
		t.Errorf("%d commits for %d Applies; want batching", commits, n)
	}
	t.Logf("%d Applies in %d commits", n, commits)

	page, err := s.List(context.Background(), Query{Limit: 1000})
	if err != nil || len(page.Tasks) != n {
		t.Errorf("List: %d tasks, %v; want %d", len(page.Tasks), err, n)
	}
}

func TestBadWriteIsolation(t *testing.T) {
	s, _ := open(t)
	first := newTask("a", at(0), task.StatusQueued)
	first.IdempotencyKey = "k"
	apply(t, s, Write{Task: first})

	clash := newTask("b", at(1), task.StatusQueued)
	clash.IdempotencyKey = "k"
	before := s.commits.Load()
	chs := queueTogether(s,
		[]Write{{Task: newTask("c", at(2), task.StatusQueued)}},
		[]Write{{Task: clash}},
		[]Write{{Task: newTask("d", at(3), task.StatusQueued)}, {Task: newTask("e", at(4), task.StatusQueued)}},
	)
	for i, want := range []error{nil, task.ErrConflict, nil} {
		err := <-chs[i]
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("Apply %d: err = %v, want %v", i, err, want)
		}
	}
	// One failed batch, then one transaction per call of which two commit.
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d commits; want 2 (the batch failed as a whole, then was retried call by call)", got)
	}
	for _, id := range []string{"a", "c", "d", "e"} {
		mustGet(t, s, id)
	}
	if _, err := s.Get(context.Background(), "b"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Get(b) err = %v, want ErrNotFound", err)
	}
}

// queueTogether queues each ws as one Apply call while the writer cannot
// take any of them, so that it takes them all as one batch.
func queueTogether(s *Store, calls ...[]Write) []<-chan error {
	// The writer takes requests under s.mu; queue them all under it.
	s.mu.Lock()
	chs := make([]<-chan error, len(calls))
	for i, ws := range calls {
		done := make(chan error, 1)
		s.queue = append(s.queue, &request{ws: copyWrites(ws), done: done})
		chs[i] = done
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return chs
}

func TestFlush(t *testing.T) {
	s, _ := open(t)
	var chs []<-chan error
	for i := range 50 {
		chs = append(chs, s.Apply(Write{Task: newTask(fmt.Sprint(i), at(0), task.StatusQueued)}))
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every earlier write must have been answered already.
	for i, ch := range chs {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("Apply %d: %v", i, err)
			}
		default:
			t.Fatalf("Apply %d not committed when Flush returned", i)
		}
	}

	// Another connection holds the write lock, so the writer cannot commit
	// (it waits under busy_timeout) and Flush must give up on its context.
	ctx := context.Background()
	other, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	stuck := s.Apply(Write{Task: newTask("stuck", at(0), task.StatusQueued)})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = s.Flush(cctx)
	if _, rerr := other.ExecContext(ctx, "ROLLBACK"); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a cancelled context = %v, want context.Canceled", err)
	}
	if err := <-stuck; err != nil {
		t.Errorf("Apply behind the lock: %v", err)
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "db"), discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, task.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if err := <-s.Apply(Write{Task: newTask("a", at(0), task.StatusQueued)}); !errors.Is(err, task.ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
	if err := s.Flush(context.Background()); !errors.Is(err, task.ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
}

// Concurrent Applies and Closes from many goroutines: every Apply gets
// exactly one answer, either committed or ErrClosed. Run with -race.
func TestApplyDuringClose(t *testing.T) {
	s, path := open(t)
	var (
		wg        sync.WaitGroup
		committed atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				err := <-s.Apply(Write{Task: newTask(fmt.Sprintf("%d-%d", g, i), at(0), task.StatusQueued)})
				switch {
				case err == nil:
					committed.Add(1)
				case !errors.Is(err, task.ErrClosed):
					t.Errorf("Apply: %v", err)
				}
			}
		})
	}
	s.Close()
	wg.Wait()

	s2, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	p, err := s2.List(context.Background(), Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(p.Tasks)) != committed.Load() {
		t.Errorf("%d tasks stored, %d Applies answered nil", len(p.Tasks), committed.Load())
	}
}

func TestPing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "db"), discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping of an open store: %v", err)
	}
	s.Close()
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("Ping of a closed store: want an error")
	}
}

// IfRunning records an attempt's end only over a running attempt: one
// with a result keeps it, and one that is not there (its task deleted)
// is no error and makes no row.
func TestAttemptIfRunning(t *testing.T) {
	s, _ := open(t)
	tk := newTask("a", at(0), task.StatusCanceled)
	running := task.Attempt{TaskID: "a", N: 1, WorkerID: "w", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	zero := 0
	done := task.Attempt{TaskID: "a", N: 2, WorkerID: "w", Outcome: task.OutcomeSucceeded, ExitCode: &zero, AssignedAt: at(2), FinishedAt: at(3)}
	apply(t, s, Write{Task: tk}, Write{Attempt: &running}, Write{Attempt: &done})

	end := func(n int) *task.Attempt {
		return &task.Attempt{TaskID: "a", N: n, WorkerID: "w", Outcome: task.OutcomeLost, Error: "never reported", FinishedAt: at(9)}
	}
	gone := end(1)
	gone.TaskID = "deleted"
	apply(t, s, Write{Attempt: end(1), AttemptKind: IfRunning}, Write{Attempt: end(2), AttemptKind: IfRunning},
		Write{Attempt: gone, AttemptKind: IfRunning})

	got := mustGet(t, s, "a")
	if len(got.History) != 2 {
		t.Fatalf("history %+v; want two attempts", got.History)
	}
	if a := got.History[0]; a.Outcome != task.OutcomeLost || a.Error != "never reported" || !a.FinishedAt.Equal(at(9)) || !a.AssignedAt.Equal(at(1)) {
		t.Errorf("running attempt after IfRunning: %+v; want lost, never reported, at 9, assigned at 1", a)
	}
	if a := got.History[1]; a.Outcome != task.OutcomeSucceeded || !a.FinishedAt.Equal(at(3)) {
		t.Errorf("finished attempt after IfRunning: %+v; want its success kept", a)
	}
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM attempts WHERE task_id = 'deleted'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("attempts of a missing task: %d, %v; want none", n, err)
	}
}
