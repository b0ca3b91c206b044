package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// fakeClock is the dispatcher's time in tests: it moves only when told to
// (and by 1ms on each reading, so that times are distinct and ordered).
// It has a wall clock and a monotonic one: Advance moves both, as time
// passing does; Step moves the wall clock alone, as NTP or a VM resume does.
type fakeClock struct {
	mu   sync.Mutex // protects now, mono and tick
	now  time.Time
	mono time.Duration
	// tick, when set, is how far each reading of Mono moves both clocks:
	// time passes while the dispatcher works, as it does on a real one.
	tick time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Millisecond)
	c.mono += time.Millisecond
	return c.now
}

func (c *fakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.tick)
	c.mono += c.tick
	return c.mono
}

// setTick sets tick (see fakeClock).
func (c *fakeClock) setTick(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick = d
}

// wall reads the wall clock without moving it.
func (c *fakeClock) wall() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.mono += d
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const workerTimeout = 10 * time.Second

// newTest returns a dispatcher on a fresh database, with a fake clock and
// sequential IDs (t0001, t0002, ...) so tests can name tasks in order.
func newTest(t *testing.T) (*Dispatcher, *fakeClock) {
	t.Helper()
	return newOnDB(t, filepath.Join(t.TempDir(), "rh.db"), &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, 0)
}

func newOnDB(t *testing.T, path string, clock *fakeClock, firstID int, opts ...store.Option) (*Dispatcher, *fakeClock) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(path, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := firstID
	d := New(Params{
		Log:            log,
		Store:          st,
		Now:            clock.Now,
		Mono:           clock.Mono,
		NewID:          func() string { n++; return testID(n) },
		MaxCmdBytes:    1024,
		DefaultTimeout: time.Hour,
		MaxTimeout:     24 * time.Hour,
		MaxAttempts:    3,
		WorkerTimeout:  workerTimeout,
	})
	if err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d, clock
}

var ctx = context.Background()

func register(t *testing.T, d *Dispatcher, id string, slots int, running ...string) *Session {
	t.Helper()
	var claims []Delivery
	for _, r := range running {
		claims = append(claims, Delivery{TaskID: r})
	}
	s, _, err := d.Register(ctx, Registration{WorkerID: id, InstanceID: id + "-instance", Slots: slots, Running: claims})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return s
}

// lose ends s as its stream closing does, and lets the claim window pass
// with every other worker's lease renewed: the tasks s held are re-queued.
func lose(d *Dispatcher, clk *fakeClock, s *Session) {
	d.Unregister(s)
	clk.Advance(workerTimeout)
	for _, w := range d.Workers() {
		d.mu.Lock()
		other := d.sessionLocked(w.ID)
		d.mu.Unlock()
		d.Heartbeat(other.WorkerID, other.InstanceID, nil)
	}
	d.Sweep()
}

func submit(t *testing.T, d *Dispatcher, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		tk, _, err := d.Submit(ctx, Submission{Cmd: fmt.Sprintf("echo %d", i)})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		ids = append(ids, tk.ID)
	}
	return ids
}

// drain returns the IDs of the tasks sent to a session since the last
// look, and drops the cancels.
func drain(s *Session) []string {
	ids, _ := take(s)
	return ids
}

// take returns the IDs of the tasks, and of the cancels, sent to a session
// since the last look. Like the stream handler, it waits until each task's
// delivery is on disk.
func take(s *Session) (tasks, cancels []string) {
	for _, m := range s.Take() {
		if m.Task != nil {
			if err := m.Ready(context.Background(), nil); err != nil {
				panic(fmt.Sprintf("delivery of %s not stored: %v", m.Task.ID, err))
			}
			tasks = append(tasks, m.Task.ID)
		} else {
			cancels = append(cancels, m.Cancel)
		}
	}
	return tasks, cancels
}

// result is a report from s for the delivery of id it was given last.
func result(t *testing.T, d *Dispatcher, s *Session, id string, attempt, code int) task.Result {
	t.Helper()
	return task.Result{TaskID: id, WorkerID: s.WorkerID, InstanceID: s.InstanceID, Attempt: attempt, ExitCode: code, Stdout: []byte("out")}
}

func finish(t *testing.T, d *Dispatcher, s *Session, id string, code int) bool {
	t.Helper()
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := d.Report(ctx, result(t, d, s, id, tk.Attempts, code))
	if err != nil {
		t.Fatalf("report %s: %v", id, err)
	}
	return dup
}

func status(t *testing.T, d *Dispatcher, id string) (task.Status, string) {
	t.Helper()
	tk, err := d.Get(ctx, id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return tk.Status, tk.WorkerID
}

func TestRoundRobinFollowsRegistrationOrder(t *testing.T) {
	d, _ := newTest(t)
	w := []*Session{register(t, d, "w2", 3), register(t, d, "w1", 3), register(t, d, "w3", 3)}
	ids := submit(t, d, 9)
	for i, id := range ids {
		st, worker := status(t, d, id)
		if want := w[i%3].WorkerID; st != task.StatusRunning || worker != want {
			t.Errorf("task %d: %s on %q, want running on %q", i, st, worker, want)
		}
	}
	for i, s := range w {
		want := []string{ids[i], ids[i+3], ids[i+6]}
		if got := drain(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s got %v, want %v", s.WorkerID, got, want)
		}
	}
}

func TestNeverMoreThanFreeSlots(t *testing.T) {
	d, _ := newTest(t)
	a := register(t, d, "a", 1)
	b := register(t, d, "b", 2)
	ids := submit(t, d, 5)
	// a takes 1, b takes 2; the other two wait.
	if got := drain(a); fmt.Sprint(got) != fmt.Sprint([]string{ids[0]}) {
		t.Fatalf("a got %v", got)
	}
	if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{ids[1], ids[2]}) {
		t.Fatalf("b got %v", got)
	}
	for _, id := range ids[3:] {
		if st, _ := status(t, d, id); st != task.StatusQueued {
			t.Fatalf("%s is %s, want queued", id, st)
		}
	}
	// A finished task frees a slot for the next queued task, on the worker
	// that has a free slot (b), even though a is next in the rotation.
	finish(t, d, b, ids[1], 0)
	if got := drain(b); fmt.Sprint(got) != fmt.Sprint([]string{ids[3]}) {
		t.Fatalf("after b finished, b got %v, want %v", got, ids[3])
	}
	if got := drain(a); len(got) != 0 {
		t.Fatalf("a has no free slot but got %v", got)
	}
}

func TestTaskWaitsForFirstWorker(t *testing.T) {
	d, _ := newTest(t)
	ids := submit(t, d, 2)
	for _, id := range ids {
		if st, _ := status(t, d, id); st != task.StatusQueued {
			t.Fatalf("%s is %s with no workers, want queued", id, st)
		}
	}
	w := register(t, d, "w1", 1)
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint(ids[:1]) {
		t.Fatalf("w1 got %v, want %v", got, ids[:1])
	}
	finish(t, d, w, ids[0], 0)
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint(ids[1:]) {
		t.Fatalf("w1 got %v, want %v", got, ids[1:])
	}
}

func TestLeavingWorkerIsSkippedAndItsTasksRequeued(t *testing.T) {
	d, clk := newTest(t)
	a := register(t, d, "a", 5)
	b := register(t, d, "b", 5)
	c := register(t, d, "c", 5)
	ids := submit(t, d, 3) // a, b, c
	drain(a)
	drain(c)
	lose(d, clk, b)
	select {
	case <-b.Done():
	default:
		t.Fatal("b's session not closed")
	}
	// b's task goes back to the head of the queue and to the next worker (c,
	// the rotation's next after a removal that shifted it).
	st, worker := status(t, d, ids[1])
	if st != task.StatusRunning || worker == "b" {
		t.Fatalf("b's task is %s on %q, want running elsewhere", st, worker)
	}
	if tk, _ := d.Get(ctx, ids[1]); tk.Attempts != 2 {
		t.Errorf("attempts = %d, want 2", tk.Attempts)
	}
	more := submit(t, d, 4)
	for _, id := range more {
		if _, worker := status(t, d, id); worker == "b" {
			t.Fatalf("task %s went to b after it left", id)
		}
	}
	if n := len(d.Workers()); n != 2 {
		t.Fatalf("workers = %d, want 2", n)
	}
	// b comes back and rejoins at the end of the rotation.
	b2 := register(t, d, "b", 5)
	got := d.Workers()
	if got[len(got)-1].ID != "b" {
		t.Fatalf("rotation after rejoin = %v, want b last", got)
	}
	submit(t, d, 3)
	if n := len(drain(b2)); n != 1 {
		t.Fatalf("rejoined b got %d of 3 new tasks, want 1", n)
	}
}

func TestReconnectFromSameProcessReplacesSession(t *testing.T) {
	d, _ := newTest(t)
	old := register(t, d, "w", 2)
	ids := submit(t, d, 2)
	drain(old)
	// The worker lost its stream; it reconnects, still running the first task
	// and having reported nothing about the second.
	s := register(t, d, "w", 2, ids[0])
	select {
	case <-old.Done():
	default:
		t.Fatal("stale session not ended")
	}
	d.Unregister(old) // the old handler notices late; must change nothing
	if n := len(d.Workers()); n != 1 {
		t.Fatalf("workers = %d, want 1", n)
	}
	// The second task was re-queued and goes to the new session; the first
	// stays with the worker and is not sent again.
	if got := drain(s); fmt.Sprint(got) != fmt.Sprint(ids[1:]) {
		t.Fatalf("new session got %v, want %v", got, ids[1:])
	}
	if st, w := status(t, d, ids[0]); st != task.StatusRunning || w != "w" {
		t.Fatalf("still-running task is %s on %q", st, w)
	}
	if finish(t, d, s, ids[0], 0) {
		t.Fatal("first result marked duplicate")
	}
	if st, _ := status(t, d, ids[0]); st != task.StatusSucceeded {
		t.Fatalf("status %s, want succeeded", st)
	}
}

func TestOtherProcessWithSameIDIsRefused(t *testing.T) {
	d, _ := newTest(t)
	register(t, d, "w", 1)
	_, _, err := d.Register(ctx, Registration{WorkerID: "w", InstanceID: "impostor", Slots: 1})
	if !errors.Is(err, task.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if n := len(d.Workers()); n != 1 {
		t.Fatalf("workers = %d, want 1", n)
	}
}

func TestFirstResultWinsLaterIsDuplicate(t *testing.T) {
	d, clk := newTest(t)
	a := register(t, d, "a", 1)
	ids := submit(t, d, 1)
	drain(a)
	lose(d, clk, a) // cut off while running: re-queued
	b := register(t, d, "b", 1)
	drain(b)
	if finish(t, d, b, ids[0], 0) {
		t.Fatal("b's result marked duplicate")
	}
	// a's late result, from its first delivery, arrives after b's.
	dup, err := d.Report(ctx, task.Result{TaskID: ids[0], WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: 7})
	if err != nil || !dup {
		t.Fatalf("late report: dup=%v err=%v, want duplicate", dup, err)
	}
	d.Sweep() // the final task leaves memory: read it back from the store
	tk, _ := d.Get(ctx, ids[0])
	if tk.Status != task.StatusSucceeded || tk.WorkerID != "b" || *tk.ExitCode != 0 {
		t.Fatalf("task = %s on %s exit %d; the first result must stand", tk.Status, tk.WorkerID, *tk.ExitCode)
	}
	if len(tk.History) != 2 {
		t.Fatalf("history = %+v, want 2 attempts", tk.History)
	}
	first, second := tk.History[0], tk.History[1]
	if first.WorkerID != "a" || !first.Duplicate || first.Outcome != task.OutcomeFailed || *first.ExitCode != 7 {
		t.Errorf("attempt 1 = %+v, want a's late exit 7 marked duplicate", first)
	}
	if second.WorkerID != "b" || second.Duplicate || second.Outcome != task.OutcomeSucceeded {
		t.Errorf("attempt 2 = %+v, want b succeeded", second)
	}
}

func TestReportOutcome(t *testing.T) {
	tests := []struct {
		name string
		res  task.Result
		want task.Status
	}{
		{"exit 0", task.Result{ExitCode: 0}, task.StatusSucceeded},
		{"exit 1", task.Result{ExitCode: 1}, task.StatusFailed},
		{"could not run", task.Result{ExitCode: -1, Error: "start: no such file"}, task.StatusFailed},
		{"timed out", task.Result{ExitCode: -1, Error: "timed out after 1s", TimedOut: true}, task.StatusTimedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newTest(t)
			w := register(t, d, "w", 1)
			id := submit(t, d, 1)[0]
			tt.res.TaskID, tt.res.WorkerID, tt.res.InstanceID, tt.res.Attempt = id, w.WorkerID, w.InstanceID, 1
			tt.res.Stdout = []byte("ok\xff")
			if _, err := d.Report(ctx, tt.res); err != nil {
				t.Fatal(err)
			}
			tk, _ := d.Get(ctx, id)
			if tk.Status != tt.want {
				t.Errorf("status = %s, want %s", tk.Status, tt.want)
			}
			if tk.Stdout != "ok\uFFFD" {
				t.Errorf("stdout = %q, want invalid UTF-8 replaced", tk.Stdout)
			}
			if tk.FinishedAt.IsZero() {
				t.Error("finished_at not set")
			}
			if ws := d.Workers(); ws[0].Completed != 1 || ws[0].Running != 0 {
				t.Errorf("worker stats = %+v", ws[0])
			}
		})
	}
}

func TestErrors(t *testing.T) {
	d, _ := newTest(t)
	if _, err := d.Get(ctx, "nope"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if _, err := d.Report(ctx, task.Result{TaskID: "nope", WorkerID: "w"}); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Report unknown: %v", err)
	}
	bad := []Submission{
		{Cmd: ""}, {Cmd: "   "}, {Cmd: string(make([]byte, 1025))}, {Cmd: "echo \x00"}, {Cmd: "echo \xff"},
		{Cmd: "true", Timeout: 25 * time.Hour}, {Cmd: "true", Timeout: -time.Second}, {Cmd: "true", MaxAttempts: -1},
	}
	for _, sub := range bad {
		if _, _, err := d.Submit(ctx, sub); !errors.Is(err, task.ErrInvalid) {
			t.Errorf("Submit(%+v): %v, want ErrInvalid", sub, err)
		}
	}
	w := register(t, d, "w", 1)
	d.Close()
	select {
	case <-w.Done():
	default:
		t.Error("Close did not end sessions")
	}
	if _, _, err := d.Submit(ctx, Submission{Cmd: "true"}); !errors.Is(err, task.ErrClosed) {
		t.Errorf("Submit after Close: %v", err)
	}
	if _, _, err := d.Register(ctx, Registration{WorkerID: "x", InstanceID: "x", Slots: 1}); !errors.Is(err, task.ErrClosed) {
		t.Errorf("Register after Close: %v", err)
	}
}

// testID is the n-th task ID of a test dispatcher: one in two is a UUID,
// as the master makes them, the other not, so that every test runs both
// ways the live tasks and the queue hold an ID (see ids.go). The UUIDs sort
// in the order they were made, as UUIDv7s do; the rest read t0001, t0003...
func testID(n int) string {
	if n%2 == 0 {
		return fmt.Sprintf("019a0000-0000-7000-8000-%012d", n)
	}
	return fmt.Sprintf("t%04d", n)
}
