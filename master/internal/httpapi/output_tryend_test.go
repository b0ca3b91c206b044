package httpapi

import (
	"net/http"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A failed try with a retry to come ends with attempt_end; its result, the
// task's output until the next one, holds what its worker wrote last, which
// races the result from the worker (another stream) and is refused once the
// try has ended. The follower must get it before attempt_end, as it gets a
// deciding try's before end, and not again should the task end on that try.
func TestFollowOutputFillsInAFailedTryBeforeItsEnd(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w0", "true") // registers a worker; that task is not followed
	w.report(t, s, a, "")
	status, _, body := do(t, http.MethodPost, w.srv.URL+"/tasks", `{"cmd":"./flaky","retry_on":["failed"],"max_attempts":2,"backoff":"1h"}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST /tasks: %d %v", status, body)
	}
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w0"})
	w.live.Append(line(a, "w0", 0, "one\n"))
	expect(t, ch, "output", map[string]any{"attempt": 1.0, "offset": 0.0, "text": "one\n"})
	now := time.Now()
	if _, err := w.d.Report(t.Context(), task.Result{TaskID: a.ID, WorkerID: s.WorkerID, InstanceID: s.InstanceID, Attempt: a.Attempt,
		ExitCode: 1, Stdout: []byte("one\nerror: two\n"), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	// The last line never came live: the worker's chunk lost the race.
	expect(t, ch, "output", map[string]any{"attempt": 1.0, "stream": "stdout", "offset": 4.0, "text": "error: two\n"})
	expect(t, ch, "attempt_end", map[string]any{"attempt": 1.0, "outcome": "failed"})
	// Canceled while it waits for its retry: it ends on that try, whose
	// output the follower has whole.
	if code, _, body := do(t, http.MethodDelete, w.srv.URL+"/tasks/"+a.ID, ""); code != http.StatusOK {
		t.Fatalf("DELETE = %d %v", code, body)
	}
	expect(t, ch, "end", map[string]any{"status": "canceled"})
	expectClosed(t, ch)
}
