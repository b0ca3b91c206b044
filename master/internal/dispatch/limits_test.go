package dispatch

import (
	"errors"
	"strings"
	"sync"
	"testing"
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

// A result for a delivery the master has no record of (it sent the task,
// then crashed before the send was on disk) is recorded, not dropped.
func TestResultForUnrecordedDeliveryIsRecorded(t *testing.T) {
	d, _ := newTest(t)
	ids := submit(t, d, 1)
	r := task.Result{TaskID: ids[0], WorkerID: "w1", InstanceID: "i1", Attempt: 1, ExitCode: 0, Stdout: []byte("done")}
	if dup, err := d.Report(ctx, r); err != nil || dup {
		t.Fatalf("report: dup=%v %v", dup, err)
	}
	tk, err := d.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.StatusSucceeded || tk.Stdout != "done" || tk.WorkerID != "w1" {
		t.Fatalf("task %s by %q with %q, want succeeded by w1 with its output", tk.Status, tk.WorkerID, tk.Stdout)
	}
	if len(tk.History) != 1 || tk.History[0].Outcome != task.OutcomeSucceeded {
		t.Fatalf("history %+v, want the one delivery, succeeded", tk.History)
	}
}
