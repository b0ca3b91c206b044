package dispatch

import (
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A task retried by hand waits in the queue from its retry: the
// task.assigned of its next delivery (and roundhouse_dispatch_latency_seconds,
// which observes it) tells that wait, not the time since its last run
// ended, or since it was created when it never ran.
func TestRetryByHandWaitsFromTheRetry(t *testing.T) {
	for _, ran := range []bool{true, false} {
		t.Run(map[bool]string{true: "ran before", false: "canceled before it ran"}[ran], func(t *testing.T) {
			d, clk := newTest(t)
			sub := follow(t, d)
			id := submitOne(t, d, Submission{Cmd: "echo hi"})
			if ran {
				w := register(t, d, "w1", 1)
				drain(w)
				finish(t, d, w, id, 0)
				d.Unregister(w) // no worker while the retry waits
			} else if _, err := d.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Hour) // final for an hour
			if _, err := d.Retry(ctx, id); err != nil {
				t.Fatal(err)
			}
			clk.Advance(2 * time.Second) // queued for two seconds
			drain(register(t, d, "w2", 1))
			var assigned *events.Event
			for {
				select {
				case e := <-sub.C():
					if e.Type == events.TaskAssigned && e.WorkerID == "w2" {
						assigned = &e
					}
					continue
				default:
				}
				break
			}
			if assigned == nil || assigned.WaitSeconds == nil {
				t.Fatalf("the retried task's task.assigned = %+v, want one with wait_seconds", assigned)
			}
			if w := *assigned.WaitSeconds; w < 1.9 || w > 2.1 {
				t.Fatalf("the retried task's task.assigned has wait_seconds %v, want 2 (queued at its retry, assigned two seconds later)", w)
			}
		})
	}
}

// Every task.scheduled carries the task's command, as README's event table
// says: the one of a run that failed and waits to retry too.
func TestRetryScheduledEventCarriesCmd(t *testing.T) {
	d, _ := newTest(t)
	sub := follow(t, d)
	id := submitOne(t, d, Submission{Cmd: "exit 1", RetryOn: []task.Outcome{task.OutcomeFailed}})
	w := register(t, d, "w1", 1)
	drain(w)
	finish(t, d, w, id, 1)
	for {
		select {
		case e := <-sub.C():
			if e.Type == events.TaskScheduled {
				if e.Reason != "retry" || e.Cmd != "exit 1" {
					t.Fatalf("task.scheduled has reason %q and cmd %q; want retry and %q", e.Reason, e.Cmd, "exit 1")
				}
				return
			}
			continue
		default:
		}
		t.Fatal("no task.scheduled for the retry")
	}
}

// A task.scheduled of a retry keeps the run time it announced: the next
// retry of the same task, scheduled later, does not change what a reader
// of the first event (one resuming the stream, say) sees.
func TestRetryScheduledEventKeepsItsRunAt(t *testing.T) {
	d, clk, w, id := retrying(t)
	sub := follow(t, d)
	var runAts []time.Time
	for range 2 {
		drain(w)
		finish(t, d, w, id, 3)
		tk, _ := d.Get(ctx, id)
		runAts = append(runAts, tk.RunAt)
		pass(d, clk, 5*time.Second, w)
	}
	var got []time.Time
	for len(got) < 2 {
		select {
		case e := <-sub.C():
			if e.Type == events.TaskScheduled {
				got = append(got, *e.RunAt)
			}
			continue
		default:
		}
		t.Fatalf("%d task.scheduled events, want 2", len(got))
	}
	if runAts[0].Equal(runAts[1]) || !got[0].Equal(runAts[0]) || !got[1].Equal(runAts[1]) {
		t.Fatalf("task.scheduled run_at %v; want %v, the run time of each retry", got, runAts)
	}
}
