package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Each bad scheduling field is refused with a 400 that names it, and
// nothing is queued.
func TestBadSchedulingFieldsChangeNothing(t *testing.T) {
	tests := []struct {
		name    string
		body    string // the fields after "cmd"
		wantErr string // a part of the error message
	}{
		{name: "priority as a string", body: `"priority":"1"`, wantErr: `field "priority" must be a whole number`},
		{name: "priority with a fraction", body: `"priority":1.5`, wantErr: `field "priority" must be a whole number`},
		{name: "priority 0", body: `"priority":0`, wantErr: `field "priority" must be from 1 (most urgent) to 5`},
		{name: "priority 6", body: `"priority":6`, wantErr: `field "priority" must be from 1 (most urgent) to 5`},
		{name: "requires as a string", body: `"requires":"gpu=nvidia"`, wantErr: `field "requires" must be an object of string values`},
		{name: "requires as a list", body: `"requires":["gpu"]`, wantErr: `field "requires" must be an object of string values`},
		{name: "requires a number", body: `"requires":{"gpu":1}`, wantErr: `field "requires" must be an object of string values`},
		{name: "run_at not a time", body: `"run_at":"tomorrow"`, wantErr: `field "run_at" must be an RFC 3339 time`},
		{name: "run_at without a zone", body: `"run_at":"2026-12-01T09:30:00"`, wantErr: `field "run_at" must be an RFC 3339 time`},
		{name: "run_at as a number", body: `"run_at":1764581400`, wantErr: `field "run_at" must be a string`},
		{name: "run_at before 1970", body: `"run_at":"1969-12-31T23:59:59Z"`, wantErr: `field "run_at" must be a time after 1970`},
		// Go's zero time, which a Submission reads as no run_at: it was
		// queued at once, its run_at null, where any other time before
		// 1970 is refused.
		{name: "run_at in year 1", body: `"run_at":"0001-01-01T00:00:00Z"`, wantErr: `field "run_at" must be a time after 1970`},
		{name: "run_at in year 1 with an offset", body: `"run_at":"0001-01-01T01:00:00+01:00"`, wantErr: `field "run_at" must be a time after 1970`},
		{name: "delay not a duration", body: `"delay":"soon"`, wantErr: `field "delay" must be a duration of 0s or more`},
		{name: "delay without a unit", body: `"delay":"30"`, wantErr: `field "delay" must be a duration of 0s or more`},
		{name: "negative delay", body: `"delay":"-1s"`, wantErr: `field "delay" must be a duration of 0s or more`},
		{name: "delay as a number", body: `"delay":30`, wantErr: `field "delay" must be a string`},
		{name: "run_at and delay", body: `"run_at":"2026-12-01T09:30:00Z","delay":"30s"`, wantErr: `fields "run_at" and "delay" both say when to run`},
		{name: "retry_on as a string", body: `"retry_on":"failed"`, wantErr: `field "retry_on" must be a list of strings`},
		{name: "retry_on a number", body: `"retry_on":[1]`, wantErr: `field "retry_on" must be a list of strings`},
		{name: "retry_on lost", body: `"retry_on":["lost"]`, wantErr: `field "retry_on" has "lost"; it lists outcomes to retry, from "failed", "timed_out"`},
		{name: "retry_on succeeded", body: `"retry_on":["failed","succeeded"]`, wantErr: `field "retry_on" has "succeeded"`},
		{name: "retry_on twice", body: `"retry_on":["failed","failed"]`, wantErr: `field "retry_on" lists "failed" twice`},
		{name: "backoff 0", body: `"backoff":"0s"`, wantErr: `field "backoff" must be a positive duration`},
		{name: "backoff not a duration", body: `"backoff":"1 second"`, wantErr: `field "backoff" must be a positive duration`},
		{name: "negative max_backoff", body: `"max_backoff":"-1m"`, wantErr: `field "max_backoff" must be a positive duration`},
		{name: "max_backoff as a number", body: `"max_backoff":60`, wantErr: `field "max_backoff" must be a string`},
		{name: "a misspelt field", body: `"retry":["failed"]`, wantErr: `unknown field "retry"`},
	}
	srv, d := newServer(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"cmd":"true",` + tt.body + `}`
			code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body)
			msg, _ := m["error"].(string)
			if code != http.StatusBadRequest || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("POST %s = %d %q, want 400 with %q", body, code, msg, tt.wantErr)
			}
		})
	}
	if n := queued(t, d); n != 0 {
		t.Fatalf("%d tasks queued by bad requests, want 0", n)
	}
	if code, _, m := do(t, http.MethodGet, srv.URL+"/tasks", ""); code != http.StatusOK || len(m["tasks"].([]any)) != 0 {
		t.Fatalf("GET /tasks after bad requests = %d %v, want no task", code, m)
	}
}

// The label syntax (proto/labels) is checked by the dispatcher on
// submission (Normalize), and its error is a 400 like the others.
func TestBadLabelsChangeNothing(t *testing.T) {
	tests := []struct {
		name, requires, wantErr string
	}{
		{name: "space in a value", requires: `{"gpu":"a b"}`, wantErr: `values are made of`},
		{name: "empty value", requires: `{"gpu":""}`, wantErr: `the value must be`},
		{name: "key starts with a dash", requires: `{"-gpu":"x"}`, wantErr: `must start with a letter or a digit`},
		{name: "equals in a key", requires: `{"g=pu":"x"}`, wantErr: `keys are made of`},
	}
	srv, d := newServer(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"true","requires":`+tt.requires+`}`)
			msg, _ := m["error"].(string)
			if code != http.StatusBadRequest || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("requires %s = %d %q, want 400 with %q", tt.requires, code, msg, tt.wantErr)
			}
		})
	}
	if n := queued(t, d); n != 0 {
		t.Fatalf("%d tasks queued by bad requests, want 0", n)
	}
}

// Every scheduling field a task has is in its JSON, null or empty when it
// does not apply, never absent.
func TestTaskJSONShowsScheduling(t *testing.T) {
	runAt := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		name string
		task task.Task
		want string // the scheduling fields, as JSON
	}{
		{
			name: "none",
			task: task.Task{Priority: 3},
			want: `{"priority":3,"requires":{},"run_at":null,"retry_on":[],"backoff":null,"max_backoff":null,"waiting_for":null}`,
		},
		{
			name: "all",
			task: task.Task{Priority: 1, Requires: map[string]string{"gpu": "nvidia"}, RunAt: runAt,
				RetryOn: []task.Outcome{task.OutcomeFailed, task.OutcomeTimedOut}, Backoff: 2 * time.Second, MaxBackoff: time.Minute,
				WaitingFor: "no connected worker has gpu=nvidia"},
			want: `{"priority":1,"requires":{"gpu":"nvidia"},"run_at":"2026-12-01T09:30:00Z","retry_on":["failed","timed_out"],` +
				`"backoff":"2s","max_backoff":"1m0s","waiting_for":"no connected worker has gpu=nvidia"}`,
		},
		{
			name: "backoff without a retry policy is not shown",
			task: task.Task{Priority: 5, Backoff: time.Second, MaxBackoff: time.Minute},
			want: `{"priority":5,"requires":{},"run_at":null,"retry_on":[],"backoff":null,"max_backoff":null,"waiting_for":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(toTaskJSON(tt.task, false))
			if err != nil {
				t.Fatal(err)
			}
			var all map[string]json.RawMessage
			if err := json.Unmarshal(b, &all); err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for i, k := range []string{"priority", "requires", "run_at", "retry_on", "backoff", "max_backoff", "waiting_for"} {
				v, ok := all[k]
				if !ok {
					t.Fatalf("%s is absent from %s", k, b)
				}
				if i > 0 {
					got.WriteByte(',')
				}
				fmt.Fprintf(&got, "%q:%s", k, v)
			}
			if s := "{" + got.String() + "}"; s != tt.want {
				t.Errorf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}

// A task submitted with every scheduling field shows them back; a delayed
// one is scheduled, listed by ?status=scheduled, and can be canceled.
func TestSchedulingFieldsRoundTrip(t *testing.T) {
	srv, _ := newServerWith(t, func(p *Params) { p.MaxBodyBytes = 1024 })
	code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"true"}`)
	if code != http.StatusAccepted || m["priority"] != 3.0 || fmt.Sprint(m["requires"]) != "map[]" || m["run_at"] != nil ||
		fmt.Sprint(m["retry_on"]) != "[]" || m["backoff"] != nil || m["max_backoff"] != nil {
		t.Fatalf("a task without scheduling fields = %d %v, want priority 3 and nothing else", code, m)
	}

	before := time.Now()
	code, _, m = do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"exit 3","priority":1,"requires":{"gpu":"nvidia"},"delay":"1h",`+
		`"retry_on":["failed","timed_out"],"backoff":"2s","max_backoff":"1m"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST with every field = %d %v", code, m)
	}
	id, _ := m["id"].(string)
	runAt, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["run_at"]))
	if m["status"] != "scheduled" || m["priority"] != 1.0 || fmt.Sprint(m["requires"]) != "map[gpu:nvidia]" ||
		fmt.Sprint(m["retry_on"]) != "[failed timed_out]" || m["backoff"] != "2s" || m["max_backoff"] != "1m0s" ||
		runAt.Before(before.Add(time.Hour-time.Second)) || runAt.After(time.Now().Add(time.Hour+time.Second)) {
		t.Fatalf("task with every field = %v; want it scheduled an hour from now with the fields sent", m)
	}
	code, _, m = do(t, http.MethodGet, srv.URL+"/tasks?status=scheduled", "")
	if ts, _ := m["tasks"].([]any); code != http.StatusOK || len(ts) != 1 || ts[0].(map[string]any)["id"] != id {
		t.Fatalf("GET /tasks?status=scheduled = %d %v, want %s alone", code, m, id)
	}
	code, _, m = do(t, http.MethodDelete, srv.URL+"/tasks/"+id, "")
	if code != http.StatusOK || m["status"] != "canceled" {
		t.Fatalf("DELETE a scheduled task = %d %v, want 200 and canceled", code, m)
	}

	// run_at in RFC 3339 with an offset, and a delay of 0s (now), are fine.
	for _, fields := range []string{`"run_at":"2026-12-01T10:30:00+01:00"`, `"delay":"0s"`} {
		if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"true",`+fields+`}`); code != http.StatusAccepted {
			t.Errorf("POST with %s = %d %v, want 202", fields, code, m)
		}
	}
}

// ?status=scheduled is a filter like the others.
func TestListScheduledIsAFilter(t *testing.T) {
	srv, _ := newServer(t, nil)
	do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"true"}`)
	code, _, m := do(t, http.MethodGet, srv.URL+"/tasks?status=scheduled", "")
	if ts, ok := m["tasks"].([]any); code != http.StatusOK || !ok || len(ts) != 0 {
		t.Fatalf("GET /tasks?status=scheduled = %d %v, want 200 and no task (the one task is queued)", code, m)
	}
	code, _, m = do(t, http.MethodGet, srv.URL+"/tasks?status=scheduled,queued", "")
	if ts, _ := m["tasks"].([]any); code != http.StatusOK || len(ts) != 1 {
		t.Fatalf("GET /tasks?status=scheduled,queued = %d %v, want the queued task", code, m)
	}
}

// POST /tasks/{id}/retry on a final task queues it again as a new attempt,
// keeping its history; its next delivery is attempt 2.
func TestRetryRunsAFinalTaskAgain(t *testing.T) {
	srv, d := newServer(t, nil)
	ctx := context.Background()
	w, _, err := d.Register(ctx, dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"exit 2"}`)
	id := m["id"].(string)
	a, ok := nextTask(w)
	if !ok {
		t.Fatal("no task sent to the worker within 10s")
	}
	now := time.Now()
	if _, err := d.Report(ctx, task.Result{TaskID: a.ID, WorkerID: "w", InstanceID: "i", Attempt: a.Attempt, ExitCode: 2, StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatal(err)
	}
	d.Unregister(w) // so the retried task waits in the queue, where the test can see it

	code, hdr, m := do(t, http.MethodPost, srv.URL+"/tasks/"+id+"/retry", "")
	if code != http.StatusAccepted || m["id"] != id || m["status"] != "queued" || hdr.Get("Location") != "/tasks/"+id {
		t.Fatalf("POST /tasks/{id}/retry on a failed task = %d %v (Location %q), want 202 and the task queued", code, m, hdr.Get("Location"))
	}
	if h, _ := m["history"].([]any); len(h) != 1 || h[0].(map[string]any)["outcome"] != "failed" || m["attempts"] != 1.0 {
		t.Fatalf("retried task = %v, want its first attempt kept in history", m)
	}
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks/"+id+"/retry", ""); code != http.StatusConflict || m["error"] == nil {
		t.Fatalf("a second retry while it is queued = %d %v, want 409", code, m)
	}
	x, _, err := d.Register(ctx, dispatch.Registration{WorkerID: "x", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unregister(x)
	if a, ok := nextTask(x); !ok || a.ID != id || a.Attempt != 2 {
		t.Fatalf("after the retry x got %+v (%v), want %s as attempt 2", a, ok, id)
	}
}

func TestRetryEndpointErrors(t *testing.T) {
	srv, _ := newServer(t, nil)
	_, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"sleep 60"}`)
	live := m["id"].(string)
	tests := []struct {
		name, method, path string
		wantCode           int
		wantErr            string
	}{
		{name: "a queued task", method: "POST", path: "/tasks/" + live + "/retry", wantCode: 409, wantErr: "conflict"},
		{name: "an unknown task", method: "POST", path: "/tasks/" + uuid.NewString() + "/retry", wantCode: 404, wantErr: "not found"},
		{name: "a malformed ID", method: "POST", path: "/tasks/a.b/retry", wantCode: 400, wantErr: "a task ID is"},
		{name: "a query parameter", method: "POST", path: "/tasks/" + live + "/retry?now=1", wantCode: 400, wantErr: `unknown query parameter "now"`},
		{name: "GET", method: "GET", path: "/tasks/" + live + "/retry", wantCode: 405, wantErr: "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, m := do(t, tt.method, srv.URL+tt.path, "")
			msg, _ := m["error"].(string)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("%s %s = %d %q, want %d with %q", tt.method, tt.path, code, msg, tt.wantCode, tt.wantErr)
			}
		})
	}
	if _, _, m := do(t, http.MethodGet, srv.URL+"/tasks/"+live, ""); m["status"] != "queued" || m["attempts"] != 0.0 {
		t.Fatalf("the queued task after refused retries = %v, want it queued as before", m)
	}
}

// GET /queue on an empty master: every key there, every priority counted.
func TestQueueShape(t *testing.T) {
	srv, _ := newServer(t, nil)
	resp, err := http.Get(srv.URL + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]json.RawMessage
	decodeJSON(t, resp, &m)
	want := map[string]string{
		"queued": `0`, "by_priority": `{"1":0,"2":0,"3":0,"4":0,"5":0}`, "scheduled": `0`, "next_run_at": `null`, "groups": `[]`,
	}
	if resp.StatusCode != http.StatusOK || len(m) != len(want) {
		t.Fatalf("GET /queue = %s %v, want 200 with %v", resp.Status, m, want)
	}
	for k, v := range want {
		if got := strings.Join(strings.Fields(string(m[k])), ""); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	if code, _, m := do(t, http.MethodGet, srv.URL+"/queue?priority=1", ""); code != http.StatusBadRequest || !strings.Contains(m["error"].(string), "takes none") {
		t.Errorf("GET /queue?priority=1 = %d %v, want 400", code, m)
	}
}

// GET /queue counts what waits by priority and by requirement set, and
// says why a group no connected worker can run waits; so does the task.
func TestQueueCountsWhatWaits(t *testing.T) {
	srv, d := newServer(t, nil)
	w, _, err := d.Register(context.Background(), dispatch.Registration{WorkerID: "w", InstanceID: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unregister(w)
	var gpu string
	before := time.Now()
	for _, body := range []string{
		`{"cmd":"sleep 60"}`, // runs on w, so the rest wait
		`{"cmd":"true","priority":1}`,
		`{"cmd":"true","priority":5}`,
		`{"cmd":"true","priority":5,"requires":{"gpu":"nvidia"}}`,
		`{"cmd":"true","delay":"1h"}`,
	} {
		code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body)
		if code != http.StatusAccepted {
			t.Fatalf("POST %s = %d %v", body, code, m)
		}
		if strings.Contains(body, "gpu") {
			gpu = m["id"].(string)
		}
	}
	var q struct {
		Queued     int            `json:"queued"`
		ByPriority map[string]int `json:"by_priority"`
		Scheduled  int            `json:"scheduled"`
		NextRunAt  *time.Time     `json:"next_run_at"`
		Groups     []struct {
			Requires   map[string]string `json:"requires"`
			Queued     int               `json:"queued"`
			Eligible   int               `json:"eligible"`
			WaitingFor *string           `json:"waiting_for"`
		} `json:"groups"`
	}
	resp, err := http.Get(srv.URL + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	decodeJSON(t, resp, &q)
	if q.Queued != 3 || fmt.Sprint(q.ByPriority) != "map[1:1 2:0 3:0 4:0 5:2]" || q.Scheduled != 1 || q.NextRunAt == nil ||
		q.NextRunAt.Before(before.Add(time.Hour-time.Second)) || q.NextRunAt.After(time.Now().Add(time.Hour+time.Second)) {
		t.Fatalf("GET /queue = %+v; want 3 queued (one of priority 1, two of 5), 1 scheduled in an hour", q)
	}
	if len(q.Groups) != 2 {
		t.Fatalf("groups = %+v, want two: any worker, and gpu=nvidia", q.Groups)
	}
	if g := q.Groups[0]; len(g.Requires) != 0 || g.Queued != 2 || g.Eligible != 1 || g.WaitingFor != nil {
		t.Errorf("first group = %+v, want the 2 tasks any worker runs, 1 worker eligible, not waiting", g)
	}
	if g := q.Groups[1]; fmt.Sprint(g.Requires) != "map[gpu:nvidia]" || g.Queued != 1 || g.Eligible != 0 || g.WaitingFor == nil || !strings.Contains(*g.WaitingFor, "gpu=nvidia") {
		t.Errorf("second group = %+v, want 1 task no worker can run, waiting for gpu=nvidia", g)
	}
	if _, _, m := do(t, http.MethodGet, srv.URL+"/tasks/"+gpu, ""); m["status"] != "queued" || !strings.Contains(fmt.Sprint(m["waiting_for"]), "gpu=nvidia") {
		t.Errorf("GET the gpu task = %v, want it queued, waiting_for naming gpu=nvidia", m)
	}
}

// GET /workers shows each worker's labels, {} for none.
func TestWorkersShowLabels(t *testing.T) {
	srv, d := newServer(t, nil)
	for _, r := range []dispatch.Registration{
		{WorkerID: "plain", InstanceID: "i", Slots: 1},
		{WorkerID: "gpu", InstanceID: "i", Slots: 1, Labels: map[string]string{"gpu": "nvidia", "zone": "eu"}},
	} {
		s, _, err := d.Register(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Unregister(s)
	}
	_, _, m := do(t, http.MethodGet, srv.URL+"/workers", "")
	ws, _ := m["workers"].([]any)
	if len(ws) != 2 {
		t.Fatalf("GET /workers = %v, want two workers", m)
	}
	for i, want := range []string{"map[]", "map[gpu:nvidia zone:eu]"} {
		w := ws[i].(map[string]any)
		if labels, ok := w["labels"].(map[string]any); !ok || fmt.Sprint(labels) != want {
			t.Errorf("worker %v: labels %v, want %s", w["id"], w["labels"], want)
		}
	}
}

// /metrics counts the queue by priority, and the scheduled tasks apart.
func TestMetricsCountPrioritiesAndScheduled(t *testing.T) {
	o := newObserved(t)
	for _, body := range []string{`{"cmd":"true","priority":1}`, `{"cmd":"true"}`, `{"cmd":"true","priority":5}`,
		`{"cmd":"true","priority":5}`, `{"cmd":"true","delay":"1h"}`} {
		if code, _, m := do(t, http.MethodPost, o.srv.URL+"/tasks", body); code != http.StatusAccepted {
			t.Fatalf("POST %s = %d %v", body, code, m)
		}
	}
	const want = `
# HELP roundhouse_queue_depth_by_priority Tasks waiting for a worker, by priority (1 most urgent, to 5); a free worker takes the most urgent it can run.
# TYPE roundhouse_queue_depth_by_priority gauge
roundhouse_queue_depth_by_priority{priority="1"} 1
roundhouse_queue_depth_by_priority{priority="2"} 0
roundhouse_queue_depth_by_priority{priority="3"} 1
roundhouse_queue_depth_by_priority{priority="4"} 0
roundhouse_queue_depth_by_priority{priority="5"} 2
# HELP roundhouse_tasks_scheduled Tasks waiting for their run time: delayed, or backing off before a retry.
# TYPE roundhouse_tasks_scheduled gauge
roundhouse_tasks_scheduled 1
`
	if err := testutil.GatherAndCompare(o.m.Registry(), strings.NewReader(want), "roundhouse_queue_depth_by_priority", "roundhouse_tasks_scheduled"); err != nil {
		t.Error(err)
	}
	if got := gaugeFrom(t, o, "roundhouse_queue_depth"); got != 4 {
		t.Errorf("queue depth = %v, want 4 (the scheduled task is not queued yet)", got)
	}
}

// Cancel and retry take no body: one that asks for something (a retry
// with more attempts, a cancel with a reason) is refused and changes
// nothing, rather than ignored while the task is acted on as it was. No
// body, white space or {} asks nothing.
func TestTaskActionsRefuseABody(t *testing.T) {
	srv, _ := newServer(t, nil)
	_, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"sleep 60"}`)
	queued := m["id"].(string)
	_, _, m = do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"sleep 60"}`)
	final := m["id"].(string)
	if code, _, m := do(t, http.MethodDelete, srv.URL+"/tasks/"+final, " \n"); code != http.StatusOK {
		t.Fatalf("DELETE with a blank body = %d %v, want 200", code, m)
	}
	for _, tt := range []struct{ method, path, body string }{
		{http.MethodDelete, "/tasks/" + queued, `{"reason":"not needed"}`},
		{http.MethodPost, "/tasks/" + final + "/retry", `{"max_attempts":5}`},
		{http.MethodPost, "/tasks/" + final + "/retry", `[]`},
		{http.MethodPost, "/tasks/" + final + "/retry", `not json`},
		// What follows a long run of white space or a {} is a body too,
		// however far into it the request puts it.
		{http.MethodPost, "/tasks/" + final + "/retry", strings.Repeat(" ", 100) + `{"max_attempts":5}`},
		{http.MethodDelete, "/tasks/" + queued, "{}" + strings.Repeat("\n", 100) + `{"reason":"not needed"}`},
	} {
		code, _, m := do(t, tt.method, srv.URL+tt.path, tt.body)
		if msg, _ := m["error"].(string); code != http.StatusBadRequest || !strings.Contains(msg, "takes no body") {
			t.Errorf("%s %s with %.80q = %d %v, want 400 saying it takes no body", tt.method, tt.path, tt.body, code, m)
		}
	}
	if _, _, m := do(t, http.MethodGet, srv.URL+"/tasks/"+queued, ""); m["status"] != "queued" {
		t.Errorf("the task after a refused cancel = %v, want it queued as before", m["status"])
	}
	if _, _, m := do(t, http.MethodGet, srv.URL+"/tasks/"+final, ""); m["status"] != "canceled" || m["attempts"] != 0.0 {
		t.Errorf("the task after refused retries = %v (%v attempts), want it canceled as before", m["status"], m["attempts"])
	}
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks/"+final+"/retry", `{ }`); code != http.StatusAccepted || m["status"] != "queued" {
		t.Fatalf("POST retry with {} = %d %v, want 202 and the task queued", code, m)
	}
}
