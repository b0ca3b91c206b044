package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/metrics"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// observed is a server wired as main wires it: events and metrics included.
type observed struct {
	srv *httptest.Server
	d   *dispatch.Dispatcher
	hub *events.Hub
	m   *metrics.Metrics
}

func newObserved(t *testing.T) *observed { return newObservedWith(t, nil, nil) }

// newObservedWith lets set change the API's Params, and configure the
// http.Server, before it starts; either may be nil.
func newObservedWith(t *testing.T, set func(*Params), configure func(*http.Server)) *observed {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(t.TempDir(), "rh.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hub := events.NewHub(100, 100)
	d := dispatch.New(dispatch.Params{
		Log: log, Store: st, Now: time.Now, NewID: func() string { return uuid.Must(uuid.NewV7()).String() }, Events: hub,
		MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second,
	})
	m := metrics.New(d.Stats)
	hub.Observe(m.Observe)
	p := Params{Dispatcher: d, Log: log, MaxBodyBytes: 256, MaxWait: 5 * time.Second,
		Ready: func() error { return nil }, Events: hub, Metrics: m.Handler(), Heartbeat: 20 * time.Millisecond}
	if set != nil {
		set(&p)
	}
	srv := httptest.NewUnstartedServer(New(p))
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close) // before srv.Close, which waits for open streams
	return &observed{srv: srv, d: d, hub: hub, m: m}
}

type sseEvent struct {
	id, event string
	data      events.Event
}

// openStream reads GET /events, sending the parsed events on the returned
// channel (closed at the end of the stream) and counting heartbeats.
func openStream(t *testing.T, url, lastID string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	resp := getEvents(t, url, lastID)
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %s", resp.Status)
	}
	ch := make(chan sseEvent, 100)
	go func() { // ends with the body
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" {
					ch <- cur
				}
				cur = sseEvent{}
			case line == ": heartbeat":
				ch <- sseEvent{event: "heartbeat"}
			case strings.HasPrefix(line, "id: "):
				cur.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				cur.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
					cur.event = "bad data: " + line
				}
			}
		}
	}()
	return ch, resp
}

// next returns the next event that is not a heartbeat.
func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("event stream ended")
			}
			if e.event != "heartbeat" {
				return e
			}
		case <-deadline:
			t.Fatal("no event within 10s")
		}
	}
}

// runOne registers worker w1 if needed, submits cmd over REST and reports
// it finished with exit code code.
func (o *observed) runOne(t *testing.T, s *dispatch.Session, cmd string, code int) string {
	t.Helper()
	status, _, body := do(t, http.MethodPost, o.srv.URL+"/tasks", `{"cmd":"`+cmd+`"}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST /tasks: %d %v", status, body)
	}
	a, ok := nextTask(s)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	if _, err := o.d.Report(t.Context(), task.Result{TaskID: a.ID, WorkerID: s.WorkerID, InstanceID: s.InstanceID, Attempt: a.Attempt,
		ExitCode: code, StartedAt: time.Now(), FinishedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

func TestEventStream(t *testing.T) {
	o := newObserved(t)
	ch, resp := openStream(t, o.srv.URL, "")
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	s, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := o.runOne(t, s, "echo hi", 0)

	want := []struct{ event, task, worker, status string }{
		{"worker.joined", "", "w1", ""},
		{"task.queued", id, "", ""},
		{"task.assigned", id, "w1", ""},
		{"task.finished", id, "w1", "succeeded"},
	}
	for i, w := range want {
		e := next(t, ch)
		if e.event != w.event || e.data.Type != events.Type(w.event) || e.data.TaskID != w.task || e.data.WorkerID != w.worker || e.data.Status != w.status {
			t.Fatalf("event %d = %s %+v, want %+v", i, e.event, e.data, w)
		}
		if e.id != strconv.FormatUint(e.data.Seq, 10) || e.data.Seq != uint64(i+1) {
			t.Errorf("event %d has id %q and seq %d, want %d", i, e.id, e.data.Seq, i+1)
		}
	}
	// An idle stream carries heartbeats.
	deadline := time.After(10 * time.Second)
	for beat := false; !beat; {
		select {
		case e := <-ch:
			beat = e.event == "heartbeat"
		case <-deadline:
			t.Fatal("no heartbeat on an idle stream")
		}
	}

	// A reconnecting reader resumes after the last event it saw.
	resumed, _ := openStream(t, o.srv.URL, "2")
	for _, w := range []string{"task.assigned", "task.finished"} {
		if e := next(t, resumed); e.event != w {
			t.Fatalf("after Last-Event-ID 2: %s, want %s", e.event, w)
		}
	}
	// One whose events are gone is told to resynchronise.
	stale, _ := openStream(t, o.srv.URL, "99")
	if e := next(t, stale); e.event != "gap" {
		t.Fatalf("after an unknown Last-Event-ID: %s, want gap", e.event)
	}

	// The master shutting down ends every stream.
	o.hub.Close()
	for _, c := range []<-chan sseEvent{ch, resumed, stale} {
		for range c { // drains, then ends
		}
	}
}

// A stream outlives the server's read and write timeouts, which main sets
// for ordinary requests.
func TestEventStreamOutlivesServerTimeouts(t *testing.T) {
	const timeout = 100 * time.Millisecond
	o := newObservedWith(t, nil, func(s *http.Server) { s.ReadTimeout, s.WriteTimeout = timeout, timeout })
	ch, _ := openStream(t, o.srv.URL, "")
	opened := time.Now()
	for time.Since(opened) < 5*timeout { // heartbeats keep coming past both timeouts
		if e, ok := <-ch; !ok {
			t.Fatalf("the stream ended %s after it opened", time.Since(opened).Round(time.Millisecond))
		} else if e.event != "heartbeat" {
			t.Fatalf("unexpected event %s", e.event)
		}
	}
	if _, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e.event != "worker.joined" {
		t.Fatalf("got %s, want worker.joined", e.event)
	}
}

func TestEventStreamBadLastEventID(t *testing.T) {
	o := newObserved(t)
	req, _ := http.NewRequest(http.MethodGet, o.srv.URL+"/events", nil)
	req.Header.Set("Last-Event-ID", "yesterday")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body errorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.Error, "Last-Event-ID") {
		t.Fatalf("bad Last-Event-ID: %d %+v %v, want 400 naming the header", resp.StatusCode, body, err)
	}
}

// GET /events takes one query parameter, last_event_id, once; anything
// else is a 400 that says so, as on every other route, not a stream that
// quietly ignores a misspelt resume.
func TestEventStreamUnknownQuery(t *testing.T) {
	o := newObserved(t)
	for _, q := range []string{"?last_id=5", "?last_event_id=1&last_event_id=2", "?task=t1"} {
		resp, err := http.Get(o.srv.URL + "/events" + q)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.Error, "query parameter") {
			t.Errorf("GET /events%s: %d %+v %v, want 400 naming the query parameter", q, resp.StatusCode, body, err)
		}
	}
}

// getEvents asks for GET /events once and returns the response, whose
// body the caller closes.
func getEvents(t *testing.T, url, lastID string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/events", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// heartbeat waits for a heartbeat on ch: proof that the stream is being
// served, not merely that its headers arrived.
func heartbeat(t *testing.T, ch <-chan sseEvent) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("event stream ended")
			}
			if e.event == "heartbeat" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat within 10s")
		}
	}
}

func TestEventStreamLimit(t *testing.T) {
	o := newObservedWith(t, func(p *Params) { p.MaxEventStreams = 2 }, nil)
	first, firstResp := openStream(t, o.srv.URL, "")
	second, _ := openStream(t, o.srv.URL, "")
	heartbeat(t, first)
	heartbeat(t, second)

	// Past the limit: refused before any of the stream is written. A bad
	// Last-Event-ID is still a 400, checked before the limit.
	tests := []struct {
		name, lastID string
		want         int
		wantErr      string
	}{
		{"new reader", "", http.StatusTooManyRequests, "too many event streams are open (MASTER_MAX_EVENT_STREAMS=2)"},
		{"resuming reader", "1", http.StatusTooManyRequests, "MASTER_MAX_EVENT_STREAMS=2"},
		{"bad Last-Event-ID", "yesterday", http.StatusBadRequest, "Last-Event-ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := getEvents(t, o.srv.URL, tt.lastID)
			defer resp.Body.Close()
			var body errorBody
			decodeJSON(t, resp, &body)
			if resp.StatusCode != tt.want || !strings.Contains(body.Error, tt.wantErr) {
				t.Fatalf("GET /events: %d %q, want %d with %q", resp.StatusCode, body.Error, tt.want, tt.wantErr)
			}
			if ra := resp.Header.Get("Retry-After"); (tt.want == http.StatusTooManyRequests) != (ra != "") {
				t.Errorf("Retry-After = %q on a %d", ra, resp.StatusCode)
			}
		})
	}

	// The refusals took nothing from the streams being served.
	if _, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan sseEvent{first, second} {
		if e := next(t, ch); e.event != "worker.joined" {
			t.Fatalf("got %s, want worker.joined", e.event)
		}
	}

	// A reader that leaves frees its place at once: the next one in is
	// served, and the one after it is refused again.
	firstResp.Body.Close()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		resp := getEvents(t, o.srv.URL, "")
		if resp.StatusCode == http.StatusOK {
			t.Cleanup(func() { resp.Body.Close() })
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("accepted stream has Content-Type %q", ct)
			}
			break
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("GET /events while a place frees: %s", resp.Status)
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("no stream accepted within 10s of one closing")
		}
	}
	resp := getEvents(t, o.srv.URL, "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third stream beside two open ones: %s, want 429", resp.Status)
	}
}

func TestMetricsFollowTasks(t *testing.T) {
	o := newObserved(t)
	scrape := func() string {
		resp, err := http.Get(o.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	before := scrape()
	for _, line := range []string{"roundhouse_tasks_submitted_total 0", "roundhouse_workers_connected 0", "go_goroutines ", "process_resident_memory_bytes "} {
		if !strings.Contains(before, line) {
			t.Errorf("/metrics before any task lacks %q", line)
		}
	}

	s, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	o.runOne(t, s, "true", 0)
	o.runOne(t, s, "false", 1)
	// One more that stays running, one that waits behind it.
	for range 2 {
		if status, _, _ := do(t, http.MethodPost, o.srv.URL+"/tasks", `{"cmd":"sleep 9"}`); status != http.StatusAccepted {
			t.Fatal(status)
		}
	}
	after := scrape()
	for _, line := range []string{
		"roundhouse_tasks_submitted_total 4",
		`roundhouse_tasks_finished_total{status="succeeded",worker="w1"} 1`,
		`roundhouse_tasks_finished_total{status="failed",worker="w1"} 1`,
		"roundhouse_queue_depth 1",
		"roundhouse_tasks_inflight 1",
		"roundhouse_workers_connected 1",
		"roundhouse_dispatch_latency_seconds_count 3",
		"roundhouse_task_run_seconds_count 2",
	} {
		if !strings.Contains(after, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}

	// The worker drains and leaves still holding it: its running task is
	// re-queued, and counted.
	if _, err := o.d.Drain(s.WorkerID, s.InstanceID); err != nil {
		t.Fatal(err)
	}
	o.d.Unregister(s)
	const requeues = `
# HELP roundhouse_task_requeues_total Tasks taken back from a worker and queued again, by reason (worker_timed_out, worker_drained, worker_replaced, not_reclaimed: its worker went away and did not claim it in time or came back without it, no_result: no result within the task's timeout plus grace, killed: its worker reported the kill of a delivery the master had given up).
# TYPE roundhouse_task_requeues_total counter
roundhouse_task_requeues_total{reason="worker_drained"} 1
`
	if err := testutil.GatherAndCompare(o.m.Registry(), strings.NewReader(requeues), "roundhouse_task_requeues_total"); err != nil {
		t.Error(err)
	}
	if got := gaugeFrom(t, o, "roundhouse_queue_depth"); got != 2 {
		t.Errorf("queue depth after the worker left = %v, want 2", got)
	}
}

// gaugeFrom reads one gauge's value through a scrape of the registry.
func gaugeFrom(t *testing.T, o *observed, name string) float64 {
	t.Helper()
	mfs, err := o.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestEventStreamTellsWhereItStarts: a reader that connects, gets no event
// (a quiet cluster) and loses the stream has seen no id to resume from.
// The stream must tell it where it starts (an id line before any event),
// so that its reconnect gets the events published while it was away
// rather than, without a Last-Event-ID, only those after it is back.
func TestEventStreamTellsWhereItStarts(t *testing.T) {
	o := newObserved(t)
	if _, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w0", InstanceID: "i0", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	resp := getEvents(t, o.srv.URL, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %s", resp.Status)
	}
	// The lines up to the first blank one: what a reader has before any event.
	var id string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "" {
		if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			id = v
		}
	}
	resp.Body.Close() // the stream breaks
	if _, _, err := o.d.Register(context.Background(), dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	if id != "1" {
		t.Fatalf("the stream starts with id %q, want 1 (worker.joined of w0, before it)", id)
	}
	resumed, _ := openStream(t, o.srv.URL, id)
	if e := next(t, resumed); e.event != "worker.joined" || e.data.WorkerID != "w1" {
		t.Fatalf("after Last-Event-ID %s: %s %+v, want worker.joined of w1", id, e.event, e.data)
	}
}
