package dispatch

import (
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// Both transports recover a handler's panic and go on serving (grpcapi's
// interceptors, httpapi's middleware). That holds only if the panic does
// not leave d.mu locked: every later call (submissions, heartbeats,
// reports, sweeps) would wait for it forever. The calls that let go of the
// lock to wait and take it again publish events under it; an observer that
// panics there stands in for any panic under the lock.
func TestAPanicUnderTheLockLeavesItFree(t *testing.T) {
	for _, tc := range []struct {
		name string
		on   events.Type // the event whose observer panics
		// setup brings d to where call panics; call is the handler's.
		setup func(t *testing.T, d *Dispatcher) func()
	}{
		{"submit, queued", events.TaskQueued, func(t *testing.T, d *Dispatcher) func() {
			return func() { d.Submit(ctx, Submission{Cmd: "true"}) }
		}},
		{"submit, straight to a free worker", events.TaskAssigned, func(t *testing.T, d *Dispatcher) func() {
			register(t, d, "w1", 1)
			return func() { d.Submit(ctx, Submission{Cmd: "true"}) }
		}},
		{"cancel", events.TaskCanceled, func(t *testing.T, d *Dispatcher) func() {
			id := submit(t, d, 1)[0]
			return func() { d.Cancel(ctx, id) }
		}},
		{"retry", events.TaskRetried, func(t *testing.T, d *Dispatcher) func() {
			id := submit(t, d, 1)[0]
			if _, err := d.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			return func() { d.Retry(ctx, id) }
		}},
		{"report", events.TaskFinished, func(t *testing.T, d *Dispatcher) func() {
			w := register(t, d, "w1", 1)
			id := submit(t, d, 1)[0]
			drain(w)
			return func() { d.Report(ctx, result(t, d, w, id, 1, 0)) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newTest(t)
			h := events.NewHub(100, 100)
			armed := false
			h.Observe(func(e events.Event) {
				if armed && e.Type == tc.on {
					armed = false
					panic("observer failed")
				}
			})
			d.p.Events = h
			call := tc.setup(t, d)
			armed = true
			func() { // as the transports' recovery does
				defer func() {
					if v := recover(); v == nil {
						t.Fatal("the observer did not panic: the test tests nothing")
					}
				}()
				call()
			}()
			if !d.mu.TryLock() {
				t.Fatal("a panic under the dispatcher's lock left it held: the master would hang on its next call")
			}
			d.mu.Unlock()
			// And it goes on serving.
			if _, _, err := d.Submit(ctx, Submission{Cmd: "true"}); err != nil {
				t.Fatalf("submit after the panic: %v", err)
			}
		})
	}
}
