package dispatch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// follow makes d publish to a fresh hub and returns a subscription to it.
func follow(t *testing.T, d *Dispatcher) *events.Subscription {
	t.Helper()
	h := events.NewHub(100, 100)
	d.p.Events = h
	s, _, _ := h.Subscribe(0, false)
	return s
}

// received returns the events waiting on s, one line each:
// "type task worker attempt status reason".
func received(s *events.Subscription) []string {
	var out []string
	for {
		select {
		case e := <-s.C():
			out = append(out, strings.Join(strings.Fields(fmt.Sprintf("%s %s %s %d %s %s", e.Type, e.TaskID, e.WorkerID, e.Attempt, e.Status, e.Reason)), " "))
		default:
			return out
		}
	}
}

func TestDispatcherPublishesTransitions(t *testing.T) {
	d, clock := newTest(t)
	sub := follow(t, d)
	w1 := register(t, d, "w1", 1)
	register(t, d, "w2", 1)
	ids := submit(t, d, 3) // t0001 -> w1, the second (a UUID, testID) -> w2, t0003 waits
	drain(w1)
	finish(t, d, w1, ids[0], 0) // w1 takes t0003
	clock.Advance(workerTimeout)
	d.Heartbeat("w1", "w1-instance", nil)
	d.Sweep() // w2 is silent: the second goes back to the queue
	if _, err := d.Cancel(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Drain("w1", "w1-instance"); err != nil {
		t.Fatal(err)
	}
	lose(d, clock, w1) // still holding t0003

	want := []string{
		"worker.joined w1 0",
		"worker.joined w2 0",
		"task.queued t0001 0",
		"task.assigned t0001 w1 1",
		"task.queued 019a0000-0000-7000-8000-000000000002 0",
		"task.assigned 019a0000-0000-7000-8000-000000000002 w2 1",
		"task.queued t0003 0",
		"task.finished t0001 w1 1 succeeded",
		"task.assigned t0003 w1 1",
		"worker.timed_out w2 0 timed_out",
		"worker.left w2 0 timed_out",
		"task.requeued 019a0000-0000-7000-8000-000000000002 w2 1 worker_timed_out",
		"task.canceled 019a0000-0000-7000-8000-000000000002 0 canceled",
		"worker.draining w1 0",
		"worker.left w1 0 drained",
		"task.requeued t0003 w1 1 worker_drained",
	}
	got := received(sub)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEventFields(t *testing.T) {
	d, clock := newTest(t)
	sub := follow(t, d)
	ids := submit(t, d, 1)
	clock.Advance(3e9) // three seconds in the queue
	w := register(t, d, "w1", 2)
	drain(w)
	clock.Advance(2e9) // runs for about two seconds
	finish(t, d, w, ids[0], 7)
	var assigned, finished events.Event
	var last uint64
	for {
		var e events.Event
		select {
		case e = <-sub.C():
		default:
			goto done
		}
		if e.Seq != last+1 || e.Time.IsZero() {
			t.Errorf("event %s has seq %d after %d, time %v", e.Type, e.Seq, last, e.Time)
		}
		last = e.Seq
		switch e.Type {
		case events.TaskAssigned:
			assigned = e
		case events.TaskFinished:
			finished = e
		case events.WorkerJoined:
			if e.Slots != 2 || e.Position == nil || *e.Position != 0 {
				t.Errorf("worker.joined: slots %d position %v", e.Slots, e.Position)
			}
		}
	}
done:
	if assigned.WaitSeconds == nil || *assigned.WaitSeconds < 3 || *assigned.WaitSeconds > 3.1 {
		t.Errorf("task.assigned wait_seconds = %v, want about 3", assigned.WaitSeconds)
	}
	if finished.ExitCode == nil || *finished.ExitCode != 7 || finished.Status != "failed" || finished.WorkerID != "w1" {
		t.Errorf("task.finished = %+v, want exit 7, failed, on w1", finished)
	}
	if finished.RunSeconds == nil || *finished.RunSeconds < 2 || *finished.RunSeconds > 2.1 {
		t.Errorf("task.finished run_seconds = %v, want about 2", finished.RunSeconds)
	}
}

func TestOutOfAttemptsFinishesAsFailed(t *testing.T) {
	d, clk := newTest(t)
	sub := follow(t, d)
	tk, _, err := d.Submit(ctx, Submission{Cmd: "sleep 1", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := register(t, d, "w1", 1)
	lose(d, clk, w)
	got := received(sub)
	if last := got[len(got)-1]; last != "task.finished "+tk.ID+" w1 1 failed out_of_attempts" {
		t.Fatalf("last event %q, want the task failed out of attempts; all: %v", last, got)
	}
}

func TestNextWorkerFollowsTheAssigner(t *testing.T) {
	nextOf := func(d *Dispatcher) string {
		next := ""
		for _, w := range d.Workers() {
			if w.Next {
				if next != "" {
					t.Fatalf("two workers marked next: %s and %s", next, w.ID)
				}
				next = w.ID
			}
		}
		return next
	}
	d, _ := newTest(t)
	if got := nextOf(d); got != "" {
		t.Fatalf("next with no workers = %q", got)
	}
	a := register(t, d, "a", 1)
	register(t, d, "b", 2)
	register(t, d, "c", 1)
	// Each prediction must match where the task then goes.
	for i, want := range []string{"a", "b", "c", "b", ""} {
		got := nextOf(d)
		if got != want {
			t.Fatalf("step %d: next = %q, want %q", i, got, want)
		}
		if want == "" {
			break
		}
		id := submit(t, d, 1)[0]
		if _, on := status(t, d, id); on != want {
			t.Fatalf("step %d: task went to %q, marked next was %q", i, on, want)
		}
	}
	// All full: a free slot on a makes it next; a draining worker never is.
	drain(a)
	tk, _ := d.Get(ctx, "t0001")
	finish(t, d, a, tk.ID, 0)
	if got := nextOf(d); got != "a" {
		t.Fatalf("after a finished: next = %q, want a", got)
	}
	if _, err := d.Drain("a", "a-instance"); err != nil {
		t.Fatal(err)
	}
	if got := nextOf(d); got != "" {
		t.Fatalf("only a has a free slot and it drains: next = %q, want none", got)
	}
}

func TestStats(t *testing.T) {
	d, _ := newTest(t)
	submit(t, d, 3)
	register(t, d, "w1", 2)
	if got, want := d.Stats(), (Stats{Queued: 1, ByPriority: [5]int{2: 1}, Running: 2, Workers: 1}); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}

// A worker that comes back holding its task is told as joined before its
// task is told as reclaimed by it: a follower (the dashboard) then knows the
// worker a reclaim names. Both ways: back within the claim window, and back
// after the task was re-queued for it.
func TestWorkerJoinsBeforeItsReclaims(t *testing.T) {
	d, clk := newTest(t)
	w := register(t, d, "w1", 1)
	ids := submit(t, d, 1)
	drain(w)
	sub := follow(t, d)
	d.Unregister(w) // stream closed; the claim window is open
	w = register(t, d, "w1", 1, ids[0])
	lose(d, clk, w) // re-queued, and no other worker to take it
	register(t, d, "w1", 1, ids[0])
	want := []string{
		"worker.left w1 0 disconnected",
		"worker.joined w1 0",
		"task.assigned " + ids[0] + " w1 1 reclaimed",
		"worker.left w1 0 disconnected",
		"task.requeued " + ids[0] + " w1 1 not_reclaimed",
		"worker.joined w1 0",
		"task.assigned " + ids[0] + " w1 1 reclaimed",
	}
	got := received(sub)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
