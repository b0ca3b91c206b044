package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
)

// A task still running on its worker when the master restarts runs on once
// the worker comes back holding it (README, Master restarts), and what it
// prints from then on is live output like any running delivery's: the
// follower is told of the delivery and gets its output, and GET .../output
// answers from the live buffer. The restarted master's buffers knew nothing
// of the delivery (no event started it), so every chunk was dropped: the
// follow stayed silent until the end, and GET showed live false and no
// output while the task printed.
func TestLiveOutputOfATaskKeptAcrossAMasterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(hub *events.Hub) *dispatch.Dispatcher {
		st, err := store.Open(path, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		d := dispatch.New(dispatch.Params{
			Log: log, Store: st, Now: time.Now, NewID: func() string { return uuid.Must(uuid.NewV7()).String() }, Events: hub,
			MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second,
		})
		if err := d.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		return d
	}

	// The master before the restart sends the task to w1.
	before := open(nil)
	s, _, err := before.Register(t.Context(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := before.Submit(t.Context(), dispatch.Submission{Cmd: "while :; do date; sleep 1; done"}); err != nil {
		t.Fatal(err)
	}
	a, ok := nextTask(s) // sent once its delivery is on disk
	if !ok {
		t.Fatal("the task was not sent to w1")
	}
	before.Close()

	// The master after it, wired as main wires it: the live buffers follow
	// the hub from the end of Recover on.
	hub := events.NewHub(100, 100)
	after := open(hub)
	live := liveout.New(1 << 16)
	hub.Observe(live.Observe)
	srv := httptest.NewServer(New(Params{Dispatcher: after, Log: log, MaxBodyBytes: 256, MaxWait: 5 * time.Second,
		Ready: func() error { return nil }, Events: hub, LiveOutput: live, Heartbeat: 20 * time.Millisecond}))
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close)
	t.Cleanup(live.Close) // before srv.Close, which waits for open follows

	ch := follow(t, srv.URL, a.ID) // while the task waits for its worker to come back
	if _, _, err := after.Register(t.Context(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1,
		Running: []dispatch.Delivery{{TaskID: a.ID, Attempt: a.Attempt}}}); err != nil {
		t.Fatal(err)
	}
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0, "worker_id": "w1"})
	// The worker goes on from where its output was when the master stopped.
	if !live.Append(line(a, "w1", 6, "tick 2\n")) {
		t.Fatal("a chunk of the delivery its worker kept across the restart was dropped")
	}
	expect(t, ch, "skipped", map[string]any{"attempt": 1.0, "stream": "stdout", "bytes": 6.0})
	expect(t, ch, "output", map[string]any{"attempt": 1.0, "stream": "stdout", "offset": 6.0, "text": "tick 2\n"})

	code, _, body := do(t, http.MethodGet, srv.URL+"/tasks/"+a.ID+"/output", "")
	if code != http.StatusOK || body["live"] != true || body["stdout"] != "tick 2\n" || body["stdout_offset"] != 6.0 || body["attempt"] != 1.0 {
		t.Fatalf("GET output of the task running on = %d %v", code, body)
	}
}
