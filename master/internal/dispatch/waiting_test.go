package dispatch

import "testing"

// A queued task that only a draining worker could run says so: nobody will
// take it, and GET /queue and GET /tasks/{id} should tell why.
func TestTaskOnlyADrainingWorkerCouldRunSaysWhy(t *testing.T) {
	d, _ := newTest(t)
	g := registerWith(t, d, "gpu", 1, "gpu=nvidia")
	if _, err := d.Drain(g.WorkerID, g.InstanceID); err != nil {
		t.Fatal(err)
	}
	id := submitOne(t, d, Submission{Requires: req("gpu=nvidia")})
	tk, _ := d.Get(ctx, id)
	b := d.Backlog()
	if tk.WaitingFor == "" || len(b.Groups) != 1 || b.Groups[0].WaitingFor == "" {
		t.Fatalf("waiting_for %q, groups %+v; want a reason (the only gpu worker is draining)", tk.WaitingFor, b.Groups)
	}
}
