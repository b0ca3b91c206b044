package httpapi

import (
	"net/http"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
)

// A final task retried by hand waits in the queue: a follow that starts
// then waits for its re-run. While an earlier follower of the task had not
// closed yet (still writing its end to a slow client, say), the live
// buffers still held the task as final, and the new follow was ended at
// once with "end" and the status "queued".
func TestFollowOfARetriedTaskWaitsForItsReRun(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	old := w.live.Follow(a.ID) // a follower that has not closed yet
	defer old.Close()
	w.report(t, s, a, "one\n")
	w.d.Unregister(s) // no worker free: the retried task stays queued
	if code, _, body := do(t, http.MethodPost, w.srv.URL+"/tasks/"+a.ID+"/retry", ""); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("POST retry = %d %v", code, body)
	}
	ch := follow(t, w.srv.URL, a.ID)
	if _, _, err := w.d.Register(t.Context(), dispatch.Registration{WorkerID: "w2", InstanceID: "i-w2", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	// The first thing the follow says is the re-run, on the worker that
	// came: not the end of the first run.
	expect(t, ch, "attempt", map[string]any{"attempt": 2.0, "worker_id": "w2"})
}
