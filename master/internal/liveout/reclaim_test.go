package liveout

import (
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// A delivery re-queued when its worker was lost, then reclaimed by that
// worker (dispatch.claimLocked, reason "reclaimed", same attempt), goes on:
// a follower that was already told attempt_end must be told it runs again
// and get its further output live, not wait silently for the end.
func TestFollowerSeesAReclaimAfterARequeue(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	f := b.Follow("t1")
	defer f.Close()
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "one\n"))
	b.Observe(requeued("t1", "w1", 1))
	if got := describe(drain(t, f)); got != "attempt 1 w1;stdout@0 one\n;end 1 lost;" {
		t.Fatalf("before the reclaim: %q", got)
	}
	b.Observe(reclaimed("t1", "w1", 1))
	if !b.Append(chunk("t1", "w1", 1, Stdout, 4, "two\n")) {
		t.Fatal("a chunk of the reclaimed delivery was refused")
	}
	if got, want := describe(drain(t, f)), "attempt 1 w1;stdout@4 two\n;"; got != want {
		t.Fatalf("after the reclaim the follower saw %q, want %q", got, want)
	}
}

// A follow that begins while the delivery is given up (re-queued, kept for
// a follower already there) and before its worker reclaims it must pick the
// delivery up when it goes on, as that earlier follower does. It waited for
// a later attempt instead, and saw nothing live until the task's end.
func TestFollowerThatBeginsBetweenARequeueAndAReclaimSeesTheReclaim(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	first := b.Follow("t1") // keeps the task's entry across the requeue
	defer first.Close()
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "one\n"))
	b.Observe(requeued("t1", "w1", 1))
	f := b.Follow("t1")
	defer f.Close()
	if got := describe(drain(t, f)); got != "" {
		t.Fatalf("before the reclaim: %q, want nothing (the task waits)", got)
	}
	b.Observe(reclaimed("t1", "w1", 1))
	if !b.Append(chunk("t1", "w1", 1, Stdout, 4, "two\n")) {
		t.Fatal("a chunk of the reclaimed delivery was refused")
	}
	if got, want := describe(drain(t, f)), "attempt 1 w1;stdout@0 one\ntwo\n;"; got != want {
		t.Fatalf("after the reclaim the follower saw %q, want %q", got, want)
	}
}

// requeued gives up a delivery (its worker timed out); reclaimed gives it
// back to that worker, the same attempt.
func requeued(id, worker string, attempt int) events.Event {
	return events.Event{Type: events.TaskRequeued, TaskID: id, WorkerID: worker, Attempt: attempt, Reason: "worker_timed_out"}
}

func reclaimed(id, worker string, attempt int) events.Event {
	return events.Event{Type: events.TaskAssigned, TaskID: id, WorkerID: worker, Attempt: attempt, Reason: "reclaimed"}
}
