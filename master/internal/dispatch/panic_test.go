package dispatch

import (
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// grpcapi's recovery interceptor turns a panic in a handler into an
// Internal error so that the master keeps serving. That holds only if the
// panic does not leave d.mu locked: every later call (submissions,
// heartbeats, reports, sweeps) would wait for it forever. ReportStatus
// calls Report, which publishes under the lock; an observer that panics
// there stands in for any panic under it.
func TestPanicInReportLeavesTheLockFree(t *testing.T) {
	d, _ := newTest(t)
	h := events.NewHub(100, 100)
	boom := true
	h.Observe(func(e events.Event) {
		if e.Type == events.TaskFinished && boom {
			boom = false
			panic("observer failed")
		}
	})
	d.p.Events = h
	w := register(t, d, "w1", 1)
	ids := submit(t, d, 1)
	drain(w)

	func() { // as recoverUnary does
		defer func() {
			if v := recover(); v == nil {
				t.Fatal("the observer did not panic: the test tests nothing")
			}
		}()
		d.Report(ctx, result(t, d, w, ids[0], 1, 0))
	}()
	if !d.mu.TryLock() {
		t.Fatal("a panic in Report left the dispatcher's lock held: the master would hang on its next call")
	}
	d.mu.Unlock()
	// And it goes on serving: the worker's next report is answered.
	if _, err := d.Report(ctx, result(t, d, w, ids[0], 1, 0)); err != nil {
		t.Fatalf("report after the panic: %v", err)
	}
}
