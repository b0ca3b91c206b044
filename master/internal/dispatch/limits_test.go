package dispatch

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func TestQueueLimit(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxQueued = 3
	ids := submit(t, d, 3)
	keyed, _, err := d.Submit(ctx, Submission{Cmd: "echo keyed", IdempotencyKey: "k1"})
	if !errors.Is(err, task.ErrFull) || !strings.Contains(err.Error(), "MASTER_MAX_QUEUED") {
		t.Fatalf("4th submission: %v %v, want ErrFull naming MASTER_MAX_QUEUED", keyed, err)
	}
	page, err := d.List(ctx, Query{})
	if err != nil || len(page.Tasks) != 3 {
		t.Fatalf("stored tasks after a refusal: %d %v, want 3", len(page.Tasks), err)
	}

	// A canceled task frees its place, even while its ID is still queued.
	if _, err := d.Cancel(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, created, err := d.Submit(ctx, Submission{Cmd: "echo keyed", IdempotencyKey: "k1"}); err != nil || !created {
		t.Fatalf("after a cancel: created=%v %v, want a new task", created, err)
	}
	// Full again, yet a replay of a known key still answers with its task.
	if _, _, err := d.Submit(ctx, Submission{Cmd: "echo more"}); !errors.Is(err, task.ErrFull) {
		t.Fatalf("full again: %v, want ErrFull", err)
	}
	if tk, created, err := d.Submit(ctx, Submission{Cmd: "echo keyed", IdempotencyKey: "k1"}); err != nil || created || tk.Cmd != "echo keyed" {
		t.Fatalf("replay on a full queue: %v created=%v %v, want the earlier task", tk, created, err)
	}
	// Tasks sent to a worker leave the queue.
	s := register(t, d, "w1", 2)
	if got := len(drain(s)); got != 2 {
		t.Fatalf("assigned %d, want 2", got)
	}
	submit(t, d, 2)
	if _, _, err := d.Submit(ctx, Submission{Cmd: "echo over"}); !errors.Is(err, task.ErrFull) {
		t.Fatalf("after 2 assigned and 2 more queued: %v, want ErrFull", err)
	}
}

// Concurrent submissions never overshoot the limit, though each waits for
// the disk outside the lock.
func TestQueueLimitUnderConcurrency(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxQueued = 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, full := 0, 0
	for range 40 {
		wg.Go(func() {
			_, _, err := d.Submit(ctx, Submission{Cmd: "echo x"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, task.ErrFull):
				full++
			default:
				t.Errorf("submit: %v", err)
			}
		})
	}
	wg.Wait()
	if accepted != 5 || full != 35 {
		t.Fatalf("accepted %d, refused %d; want 5 and 35", accepted, full)
	}
}

func TestReportedOutputIsBounded(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxOutputBytes = 10
	ids := submit(t, d, 2)
	s := register(t, d, "w1", 2)
	drain(s)
	r := result(t, d, s, ids[0], 1, 0)
	r.Stdout = []byte("0123456789é-more") // the cut falls inside "é"
	r.Stderr = []byte("ok\xff")           // short, but not UTF-8
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	tk, err := d.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if tk.Stdout != "0123456789" || !tk.StdoutCut {
		t.Errorf("stdout %q cut=%v, want the first 10 bytes and cut", tk.Stdout, tk.StdoutCut)
	}
	if tk.Stderr != "ok\uFFFD" || tk.StderrCut {
		t.Errorf("stderr %q cut=%v, want \"ok\\uFFFD\", not cut", tk.Stderr, tk.StderrCut)
	}
	// The worker's own truncation flag is kept.
	r = result(t, d, s, ids[1], 1, 0)
	r.StdoutCut = true
	if _, err := d.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	if tk, _ = d.Get(ctx, ids[1]); !tk.StdoutCut || !utf8.ValidString(tk.Stdout) {
		t.Errorf("worker's stdout_truncated lost: %+v", tk)
	}
}

// A result for a delivery the master never sent (every delivery is on disk
// before it is sent, so a confused or forged worker) is refused: it decides
// nothing, and takes no attempt number a real delivery will need.
func TestResultForUnknownDeliveryIsRefused(t *testing.T) {
	d, _ := newTest(t)
	ids := submit(t, d, 1)
	r := task.Result{TaskID: ids[0], WorkerID: "w1", InstanceID: "i1", Attempt: 1, ExitCode: 0, Stdout: []byte("done")}
	if _, err := d.Report(ctx, r); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("report of a delivery never sent: %v, want ErrNotFound", err)
	}
	w := register(t, d, "w2", 1)
	if got := drain(w); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("w2 got %v, want %v: the task still waits", got, ids)
	}
	tk, err := d.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusRunning || tk.Attempts != 1 || len(tk.History) != 1 || tk.History[0].WorkerID != "w2" {
		t.Fatalf("task %s, attempts %d, history %+v; want running as w2's attempt 1", tk.Status, tk.Attempts, tk.History)
	}
	// w1's result for attempt 1, which is w2's, is refused too.
	if _, err := d.Report(ctx, r); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("report for another worker's delivery: %v, want ErrNotFound", err)
	}
}

// A refused submission costs O(1): it neither scans nor rebuilds the queue,
// even when the queue still holds IDs of tasks that stopped waiting.
func TestRefusedSubmitLeavesTheQueueAlone(t *testing.T) {
	d, _ := newTest(t)
	d.p.MaxQueued = 3
	ids := submit(t, d, 3)
	if _, err := d.Cancel(ctx, ids[1]); err != nil { // its ID stays in the queue, stale
		t.Fatal(err)
	}
	ids = append(ids, submit(t, d, 1)...)
	d.mu.Lock()
	c := d.queue.levels[task.DefaultPriority-1][0]
	ring, n := &c.q.ring[0], d.queue.len()
	d.mu.Unlock()
	for range 3 {
		if _, _, err := d.Submit(ctx, Submission{Cmd: "echo over"}); !errors.Is(err, task.ErrFull) {
			t.Fatalf("4th waiting task: %v, want ErrFull", err)
		}
	}
	d.mu.Lock()
	if &c.q.ring[0] != ring || d.queue.len() != n || d.queue.stale != 1 {
		t.Errorf("after refusals: queue of %d (%d stale), ring moved=%v; want it untouched: %d with 1 stale",
			d.queue.len(), d.queue.stale, &c.q.ring[0] != ring, n)
	}
	d.mu.Unlock()
	checkWaiting(t, d, ids[0], ids[2], ids[3])
	// The stale ID goes when the assigner reaches it.
	s := register(t, d, "w1", 5)
	if got := drain(s); len(got) != 3 {
		t.Fatalf("assigned %v, want the 3 waiting tasks", got)
	}
	checkWaiting(t, d)
	if d.queue.len() != 0 || d.queue.stale != 0 {
		t.Fatalf("queue of %d (%d stale) after assigning all, want empty", d.queue.len(), d.queue.stale)
	}
}

// The count of waiting tasks follows every way a task enters or leaves the
// queue: submitted, sent, taken back, reclaimed by its worker, finished by a
// result for a delivery the master took back, canceled.
func TestWaitingCountFollowsEveryTransition(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w", 1)
	ids := submit(t, d, 3) // ids[0] runs on w
	checkWaiting(t, d, ids[1], ids[2])
	lose(d, clk, w) // ids[0] back at the front
	checkWaiting(t, d, ids...)
	w = register(t, d, "w", 1, ids[0]) // reclaimed: its ID stays in the queue, stale
	checkWaiting(t, d, ids[1], ids[2])
	lose(d, clk, w) // taken back again: its ID is in the queue twice
	checkWaiting(t, d, ids...)
	// The result of ids[0]'s delivery, taken back from w, finishes it while
	// it waits.
	if _, err := d.Report(ctx, task.Result{TaskID: ids[0], WorkerID: "w", InstanceID: w.InstanceID, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	checkWaiting(t, d, ids[1], ids[2])
	if _, err := d.Cancel(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	checkWaiting(t, d, ids[1])
	s := register(t, d, "other", 5)
	if got := drain(s); fmt.Sprint(got) != fmt.Sprint(ids[1:2]) {
		t.Fatalf("assigned %v, want only %s, once", got, ids[1])
	}
	checkWaiting(t, d)
	if d.queue.len() != 0 {
		t.Fatalf("%d IDs left in the queue, want none", d.queue.len())
	}
}

// Stale IDs are swept out once they outnumber the waiting ones, so a queue
// nobody pops (no worker) does not grow with tasks that were canceled.
func TestStaleIDsAreSweptOut(t *testing.T) {
	d, _ := newTest(t)
	const n = 3 * compactAt
	d.mu.Lock()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("q%06d", i)
		qt := &task.Task{ID: id, Cmd: "true", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Hour, CreatedAt: time.Unix(0, 0).UTC()}
		d.queue.push(qt, d.tasks.key(qt.ID), false)
		d.tasks.put(qt)
		ids = append(ids, id)
	}
	// Canceled as Cancel does it, without n writes to wait for.
	for i, id := range ids[:2*n/3] {
		tk, _ := d.tasks.get(id)
		d.finishLocked(tk, task.StatusCanceled, time.Unix(1, 0)) // leaves the queue too
		if i+1 < n/2 && d.queue.stale != i+1 {
			d.mu.Unlock()
			t.Fatalf("swept at %d stale of %d: too early", d.queue.stale, d.queue.len())
		}
	}
	length, stale := d.queue.len(), d.queue.stale
	head, _ := d.queue.levels[task.DefaultPriority-1][0].q.peek()
	front := d.tasks.id(head.key)
	d.mu.Unlock()
	// Swept when the (n/2+1)-th left; the rest stale since.
	if want := n - n/2 - 1; length != want || stale != 2*n/3-n/2-1 {
		t.Fatalf("queue of %d with %d stale, want %d with %d", length, stale, want, 2*n/3-n/2-1)
	}
	if want := ids[n/2+1]; front != want {
		t.Fatalf("front %s after the sweep, want %s: order lost", front, want)
	}
	checkWaiting(t, d, ids[2*n/3:]...)
}

// checkWaiting fails the test unless the live queued tasks are exactly
// want, the queue counts that many waiting, and each of them is in it.
func checkWaiting(t *testing.T, d *Dispatcher, want ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var queued []string
	for k := range d.tasks.queued.all() {
		queued = append(queued, d.tasks.id(k))
	}
	for _, tk := range d.tasks.full {
		if tk.Status == task.StatusQueued {
			queued = append(queued, tk.ID)
		}
	}
	slices.Sort(queued)
	if w := slices.Sorted(slices.Values(want)); !slices.Equal(queued, w) {
		t.Fatalf("queued tasks %v, want %v", queued, w)
	}
	if got := d.queue.waiting(); got != len(queued) {
		t.Fatalf("queue counts %d waiting (%d IDs, %d stale), but %d tasks are queued", got, d.queue.len(), d.queue.stale, len(queued))
	}
	in := map[string]bool{}
	for _, c := range d.queue.classes {
		for i := range c.q.len() {
			in[d.tasks.id(c.q.ring[c.q.at(i)].key)] = true
		}
	}
	for _, id := range queued {
		if !in[id] {
			t.Fatalf("queued task %s is not in the queue", id)
		}
	}
}
