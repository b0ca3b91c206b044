package dispatch

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// The tasks of a worker whose connection closed, re-queued once its claim
// window passes (or at once, when it comes back without them; or after a
// master restart), and deliveries given up together, go back to the head of the queue oldest first, as those of
// a worker that timed out do: FIFO within a priority holds for them, and
// the task queued behind them still runs last. (x joins once they are
// queued again, or it would take the one task queued meanwhile.)
func TestUnclaimedTasksAreRequeuedOldestFirst(t *testing.T) {
	for _, how := range []string{"window passed", "came back without them", "master restarted", "no result in time"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rh.db")
			clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			d, _ := newOnDB(t, path, clk, 0)
			const n = 8
			w := register(t, d, "w", n)
			var want []string
			for i := range n {
				want = append(want, submitOne(t, d, Submission{Cmd: fmt.Sprint("run ", i), Timeout: 2 * time.Second}))
			}
			if got := deliver(d, w); len(got) != n {
				t.Fatalf("w got %v, want %d tasks", got, n)
			}
			want = append(want, submitOne(t, d, Submission{Cmd: "behind"})) // queued: w is full
			var x *Session
			switch how {
			case "window passed":
				d.Unregister(w)
				pass(d, clk, d.ClaimWindow())
				x = register(t, d, "x", 1)
			case "came back without them":
				d.Unregister(w)
				x = register(t, d, "w", 1) // a new process: it holds none of them
			case "master restarted":
				if err := d.p.Store.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				d, _ = newOnDB(t, path, clk, 100)
				pass(d, clk, workerTimeout)
				x = register(t, d, "x", 1)
			case "no result in time": // given up together, in one sweep
				clk.Advance(2*time.Second + reportGrace + time.Millisecond)
				beat(d, w)
				d.Sweep()
				x = register(t, d, "x", 1)
			}
			if got := runOneByOne(t, d, x, n+1); !slices.Equal(got, want) {
				t.Fatalf("ran %v; want %v, oldest first", got, want)
			}
		})
	}
}

// Workers dropped in one sweep (a network cut that silences several at
// once) have their tasks re-queued oldest first across all of them, not
// worker by worker, where each worker's would go in front of the last's.
func TestTasksOfWorkersDroppedTogetherAreRequeuedOldestFirst(t *testing.T) {
	d, clk := newTest(t)
	a := register(t, d, "a", 1)
	b := register(t, d, "b", 1)
	older := submitOne(t, d, Submission{Cmd: "older"}) // to a
	newer := submitOne(t, d, Submission{Cmd: "newer"}) // to b
	if ga, gb := drain(a), drain(b); !slices.Equal(ga, []string{older}) || !slices.Equal(gb, []string{newer}) {
		t.Fatalf("a got %v and b %v; want %s and %s", ga, gb, older, newer)
	}
	behind := submitOne(t, d, Submission{Cmd: "behind"})
	clk.Advance(workerTimeout) // neither beats
	d.Sweep()
	if n := len(d.Workers()); n != 0 {
		t.Fatalf("%d workers left, want both dropped", n)
	}
	want := []string{older, newer, behind}
	if got := runOneByOne(t, d, register(t, d, "x", 1), len(want)); !slices.Equal(got, want) {
		t.Fatalf("ran %v; want %v, oldest first", got, want)
	}
}
