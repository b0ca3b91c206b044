package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// The fuzz targets of this file send the real API (router, dispatcher,
// SQLite store, event hub, live output) hostile query strings, path IDs,
// headers and bodies, as they come off the wire, and hold every answer to
// the product rule: never a 5xx or a panic; a 4xx is {"error": "..."}; a
// refused request, and any GET, changes nothing. Their seeds run with plain
// go test; to search further, one at a time:
//
//	go test -run '^$' -fuzz FuzzReadRoutes -fuzztime 60s ./master/internal/httpapi
//	go test -run '^$' -fuzz FuzzTaskActions -fuzztime 60s ./master/internal/httpapi
//	go test -run '^$' -fuzz FuzzEventsResume -fuzztime 60s ./master/internal/httpapi
//	go test -run '^$' -fuzz FuzzIdempotencyKey -fuzztime 60s ./master/internal/httpapi

// fuzzAPI is the API on a fresh store with three tasks in it.
type fuzzAPI struct {
	h   http.Handler
	d   *dispatch.Dispatcher
	hub *events.Hub
	// ids are the tasks: {a} queued, {b} canceled, {c} succeeded on w1,
	// at first; cancels and retries move them between states.
	ids map[string]string
}

// fuzzMaxWait keeps a ?wait= on a live task short.
const fuzzMaxWait = 20 * time.Millisecond

func newFuzzAPI(f *testing.F) *fuzzAPI {
	f.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(f.TempDir(), "rh.db"), log)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	// A small event history, so that resuming far back meets a gap.
	hub := events.NewHub(8, 100)
	f.Cleanup(hub.Close)
	live := liveout.New(1 << 12)
	f.Cleanup(live.Close)
	hub.Observe(live.Observe)
	// The monotonic clock stands still: nothing comes due or times out
	// between two reads of the state.
	d := dispatch.New(dispatch.Params{Log: log, Store: st, Now: time.Now, Mono: func() time.Duration { return 0 }, Events: hub,
		NewID:       func() string { return uuid.Must(uuid.NewV7()).String() },
		MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second})
	f.Cleanup(d.Close)
	a := &fuzzAPI{h: New(Params{Dispatcher: d, Log: log, MaxBodyBytes: 256, MaxWait: fuzzMaxWait, Ready: func() error { return nil },
		Events: hub, LiveOutput: live, MaxEventStreams: 4}), d: d, hub: hub, ids: map[string]string{}}

	ctx := context.Background()
	submit := func(cmd string) string {
		t, _, err := d.Submit(ctx, dispatch.Submission{Cmd: cmd})
		if err != nil {
			f.Fatal(err)
		}
		return t.ID
	}
	a.ids["{c}"] = submit("echo done")
	s, _, err := d.Register(ctx, dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	if _, err := d.Report(ctx, task.Result{TaskID: a.ids["{c}"], WorkerID: "w1", InstanceID: "i1", Attempt: 1,
		Stdout: []byte("done\n"), StartedAt: now, FinishedAt: now}); err != nil {
		f.Fatal(err)
	}
	d.Unregister(s)
	a.ids["{a}"] = submit("sleep 1")
	a.ids["{b}"] = submit("make test")
	if _, err := d.Cancel(ctx, a.ids["{b}"]); err != nil {
		f.Fatal(err)
	}
	return a
}

// expand puts the fixtures' IDs in place of {a}, {b} and {c}.
func (a *fuzzAPI) expand(s string) string {
	for k, id := range a.ids {
		s = strings.ReplaceAll(s, k, id)
	}
	return s
}

// wireRequest is one request as a client sends it: target is the path and
// query exactly as on the request line (percent-escapes and all).
type wireRequest struct {
	method, target string
	header         [][2]string // in order; a name may come twice
	body           []byte
}

// parse reads r as net/http's server does. ok is false for what the
// server refuses itself before any handler sees it (a target with a space
// or control character, a bad escape in the path, a header value with a
// control character): those answers are Go's own, plain text, and the
// README lists them.
func (r wireRequest) parse() (_ *http.Request, ok bool) {
	if strings.ContainsFunc(r.target, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return nil, false
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n", r.method, r.target, len(r.body))
	for _, h := range r.header {
		// httpguts.ValidHeaderFieldValue: no control character but tab.
		if strings.ContainsFunc(h[1], func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) {
			return nil, false
		}
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	b.Write(r.body)
	req, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil || req.RequestURI != r.target {
		return nil, false
	}
	req.RemoteAddr = "127.0.0.1:1234"
	return req, true
}

// checkAnswer fails t unless rec is no 5xx and, if a 4xx, a JSON error
// and nothing else.
func checkAnswer(t *testing.T, r wireRequest, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 || rec.Code < 200 {
		t.Fatalf("%s %q = %d %s, want no 5xx", r.method, r.target, rec.Code, rec.Body)
	}
	if rec.Code < 400 {
		return
	}
	var e map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || len(e) != 1 {
		t.Fatalf("%s %q = %d %q, want a JSON error", r.method, r.target, rec.Code, rec.Body)
	}
	if msg, _ := e["error"].(string); msg == "" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%s %q = %d %q with Content-Type %q, want a JSON error", r.method, r.target, rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
}

// get serves a GET the fuzzer did not make, for the state.
func (a *fuzzAPI) get(t *testing.T, target string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Host = "localhost"
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d %s", target, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// state is everything a request could change: every task as listed and as
// read one by one, the queue and the number of events published.
func (a *fuzzAPI) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(a.get(t, "/tasks?limit=1000"))
	for _, k := range []string{"{a}", "{b}", "{c}"} {
		b.WriteString(a.get(t, "/tasks/"+a.ids[k]))
		b.WriteString(a.get(t, "/tasks/"+a.ids[k]+"/output"))
	}
	b.WriteString(a.get(t, "/queue"))
	fmt.Fprintf(&b, "seq %d", a.hub.Seq())
	return b.String()
}

// readRoutes are the GET routes with a query or a path ID.
var readRoutes = []string{"/tasks", "/tasks/%s", "/tasks/%s/output", "/queue", "/workers", "/events"}

// FuzzReadRoutes sends the GET routes odd query strings and path IDs:
// ?wait=, ?limit=, ?cursor=, ?status=, ?worker=, ?cmd=, ?follow=, unknown
// and repeated parameters, malformed escapes; IDs that are UUIDs in odd
// case, very long, percent-encoded, unicode. A GET changes nothing, and an
// answered list holds to its filters.
func FuzzReadRoutes(f *testing.F) {
	for _, s := range []struct {
		route     uint8
		id, query string
	}{
		{0, "", "limit=1"},
		{0, "", "limit=1000&status=queued,failed&worker=w1&cmd=echo"},
		{0, "", "limit=0"},
		{0, "", "limit=-1"},
		{0, "", "limit=1001"},
		{0, "", "limit=9223372036854775808"},
		{0, "", "limit=%2B5"},
		{0, "", "limit=1e3"},
		{0, "", "limit=1&limit=2"},
		{0, "", "limit"},
		{0, "", "status=queued,,failed"},
		{0, "", "status=QUEUED"},
		{0, "", "status=succeeded,succeeded,succeeded"},
		{0, "", "status="},
		{0, "", "worker=w1%00zz"},
		{0, "", "cmd=%25"},
		{0, "", "cmd=_"},
		{0, "", "cmd=%00"},
		{0, "", "cmd=%C3%A9%E2%80%AE"},
		{0, "", "cmd=%ff"},
		{0, "", "cursor=YWZ0ZXI6"},
		{0, "", "cursor=YWZ0ZXI6enp6"},
		{0, "", "cursor=YWZ0ZXI6AA"},
		{0, "", "cursor=not-base64!"},
		{0, "", "cursor=YWZ0ZXI6enp6=="},
		{0, "", "wait=1s"},
		{0, "", "%zz=1"},
		{0, "", "limit=1;status=queued"},
		{0, "", "=1"},
		{0, "", "&&&"},
		{1, "{a}", ""},
		{1, "{a}", "wait=5ms"},
		{1, "{b}", "wait=1h"},
		{1, "{c}", "wait=9999999h"},
		{1, "{c}", "wait=-1s"},
		{1, "{c}", "wait=0"},
		{1, "{c}", "wait=-0s"},
		{1, "{c}", "wait=1e3s"},
		{1, "{c}", "wait=2562047h47m16.854775808s"},
		{1, "{c}", "wait=1ms&wait=2ms"},
		{1, "{c}", "wait"},
		{1, "{c}", "follow=true"},
		{1, "00000000-0000-0000-0000-000000000000", ""},
		{1, "0195B5D2-0000-7000-8000-000000000000", ""},
		{1, strings.Repeat("a", 64), ""},
		{1, strings.Repeat("a", 65), ""},
		{1, strings.Repeat("%41", 70), ""},
		{1, "%2e%2e", ""},
		{1, "..", ""},
		{1, "a%2Fb", ""},
		{1, "%00", ""},
		{1, "%C3%A9", ""},
		{1, "\xc3\xa9", ""},
		{1, "%E2%80%AE", ""},
		{1, "%ff", ""},
		{1, "{a}%20", ""},
		{1, "{a}#x", ""},
		{1, "-", ""},
		{2, "{a}", ""},
		{2, "{c}", "follow=1"},
		{2, "{c}", "follow=true"},
		{2, "{b}", "follow=yes"},
		{2, "{c}", "follow"},
		{2, "{c}", "follow=0&follow=1"},
		{2, "nope", "follow=true"},
		{2, "{a}", "offset=10"},
		{3, "", ""},
		{3, "", "x=1"},
		{4, "", "limit=1"},
		{5, "", "last_event_id=0"},
		{5, "", "last_event_id=-1"},
		{5, "", "last_id=1"},
	} {
		f.Add(s.route, s.id, s.query)
	}
	a := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, route uint8, id, query string) {
		target := readRoutes[int(route)%len(readRoutes)]
		if strings.Contains(target, "%s") {
			target = fmt.Sprintf(target, a.expand(id))
		}
		if query != "" {
			target += "?" + query
		}
		r := wireRequest{method: http.MethodGet, target: target}
		req, ok := r.parse()
		if !ok {
			return
		}
		before := a.state(t)
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(rec, req)
		checkAnswer(t, r, rec)
		if after := a.state(t); after != before {
			t.Fatalf("GET %q = %d %s changed the state from\n%s\nto\n%s", target, rec.Code, rec.Body, before, after)
		}
		if rec.Code == http.StatusOK && strings.HasPrefix(target, "/tasks?") {
			checkList(t, req, rec.Body.Bytes())
		}
		if rec.Code == http.StatusOK && strings.HasPrefix(readRoutes[int(route)%len(readRoutes)], "/tasks/") {
			// The answer is about the task named, not another.
			var got struct {
				ID     string `json:"id"`
				TaskID string `json:"task_id"`
			}
			if rec.Header().Get("Content-Type") == "application/json" && json.Unmarshal(rec.Body.Bytes(), &got) == nil &&
				got.ID+got.TaskID != pathTaskID(req) {
				t.Fatalf("GET %q answered task %q", target, got.ID+got.TaskID)
			}
		}
	})
}

// pathTaskID is the task ID of a path /tasks/{id}[/output], decoded.
func pathTaskID(r *http.Request) string {
	id := strings.TrimPrefix(r.URL.Path, "/tasks/")
	id, _ = strings.CutSuffix(id, "/output")
	return id
}

// checkList fails t unless a 200 to GET /tasks keeps to what its query
// asked: a limit of 1-1000, known statuses, and only tasks that match.
func checkList(t *testing.T, req *http.Request, body []byte) {
	t.Helper()
	q := req.URL.Query()
	var page struct {
		Tasks []struct {
			Status   string  `json:"status"`
			WorkerID *string `json:"worker_id"`
			Cmd      string  `json:"cmd"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("GET %s: %v", req.RequestURI, err)
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			t.Fatalf("GET %s answered 200 for limit %q", req.RequestURI, v)
		}
		limit = n
	}
	if len(page.Tasks) > limit {
		t.Fatalf("GET %s: %d tasks, limit %d", req.RequestURI, len(page.Tasks), limit)
	}
	var statuses []string
	if v := q.Get("status"); v != "" {
		statuses = strings.Split(v, ",")
	}
	for _, st := range statuses {
		if !slices.Contains(task.Statuses, task.Status(st)) {
			t.Fatalf("GET %s answered 200 for status %q", req.RequestURI, st)
		}
	}
	for _, x := range page.Tasks {
		worker := ""
		if x.WorkerID != nil {
			worker = *x.WorkerID
		}
		if len(statuses) > 0 && !slices.Contains(statuses, x.Status) ||
			q.Get("worker") != "" && worker != q.Get("worker") ||
			!strings.Contains(asciiLower(x.Cmd), asciiLower(q.Get("cmd"))) {
			t.Fatalf("GET %s listed a task that does not match: %+v", req.RequestURI, x)
		}
	}
}

// asciiLower lowers ASCII letters only, as SQLite's LIKE compares them.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// FuzzTaskActions sends DELETE /tasks/{id} and POST /tasks/{id}/retry odd
// IDs, queries and bodies. A refused one changes nothing; an accepted one
// had a fixture's ID, no query, and a body that asks nothing (none, white
// space or {}). Before each request, the fixtures are made final for a
// retry and live for a cancel.
func FuzzTaskActions(f *testing.F) {
	for _, s := range []struct {
		retry     bool
		id, query string
		body      string
	}{
		{false, "{a}", "", ""},
		{true, "{b}", "", ""},
		{true, "{c}", "", "{}"},
		{false, "{a}", "", " \r\n\t{ }\n"},
		{true, "{b}", "", `{"max_attempts":5}`},
		{true, "{b}", "", `null`},
		{true, "{b}", "", `[]`},
		{true, "{b}", "", `{}{}`},
		{true, "{b}", "", `{"":1}`},
		{true, "{b}", "", "{}\x00"},
		{false, "{a}", "", "\xef\xbb\xbf{}"},
		{true, "{b}", "", strings.Repeat(" ", 64)},
		{true, "{b}", "", strings.Repeat(" ", 65)},
		{true, "{b}", "", "{" + strings.Repeat(" ", 70) + "}"},
		{true, "{b}", "force=true", ""},
		{false, "{a}", "wait=1s", ""},
		{false, "{a}", "%zz", ""},
		{true, "nope", "", ""},
		{false, "00000000-0000-0000-0000-000000000000", "", ""},
		{false, strings.Repeat("f", 65), "", ""},
		{true, "%2e%2e", "", ""},
		{true, "{b}%2Fretry", "", ""},
		{false, "%C3%A9", "", ""},
		{false, "{a}%00", "", ""},
	} {
		f.Add(s.retry, s.id, s.query, []byte(s.body))
	}
	a := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, retry bool, id, query string, body []byte) {
		r := wireRequest{method: http.MethodDelete, target: "/tasks/" + a.expand(id), body: body}
		if retry {
			r.method, r.target = http.MethodPost, r.target+"/retry"
		}
		if query != "" {
			r.target += "?" + query
		}
		req, ok := r.parse()
		if !ok {
			return
		}
		// Each fixture in a state the action applies to (a live task to
		// cancel, a final one to retry), so that only the request can be
		// what refuses it.
		for _, id := range a.ids {
			prepare := a.d.Retry
			if retry {
				prepare = a.d.Cancel
			}
			if _, err := prepare(context.Background(), id); err != nil && !errors.Is(err, task.ErrConflict) {
				t.Fatal(err)
			}
		}
		before := a.state(t)
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(rec, req)
		checkAnswer(t, r, rec)
		if rec.Code >= 400 {
			if after := a.state(t); after != before {
				t.Fatalf("%s %q %q = %d %s changed the state from\n%s\nto\n%s", r.method, r.target, body, rec.Code, rec.Body, before, after)
			}
			return
		}
		var empty map[string]json.RawMessage
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && (json.Unmarshal(trimmed, &empty) != nil || empty == nil || len(empty) > 0) {
			t.Fatalf("%s %q with the body %q = %d, want 400: it takes no body", r.method, r.target, body, rec.Code)
		}
		var got struct{ ID string }
		want := strings.TrimSuffix(strings.TrimPrefix(req.URL.Path, "/tasks/"), "/retry")
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || req.URL.RawQuery != "" || got.ID != want ||
			want != a.ids["{a}"] && want != a.ids["{b}"] && want != a.ids["{c}"] {
			t.Fatalf("%s %q = %d %s, want a 4xx", r.method, r.target, rec.Code, rec.Body)
		}
	})
}

// sseRecorder is a recorder that GET /events can stream to: it takes the
// write deadlines a stream sets.
type sseRecorder struct{ *httptest.ResponseRecorder }

func (sseRecorder) SetReadDeadline(time.Time) error  { return nil }
func (sseRecorder) SetWriteDeadline(time.Time) error { return nil }

// FuzzEventsResume sends GET /events odd Last-Event-ID headers (none,
// one, two) and ?last_event_id= values. The stream is read up to where it
// would wait for new events (the request's context has ended): it resumes
// after the event named, and only for a whole number; anything else is a
// 400 that changes nothing.
func FuzzEventsResume(f *testing.F) {
	for _, s := range []struct {
		header string
		n      uint8 // Last-Event-ID headers sent
		query  string
	}{
		{"", 0, ""},
		{"0", 1, ""},
		{"1", 1, ""},
		{"{seq}", 1, ""},
		{"{seq-1}", 1, ""},
		{"{seq+1}", 1, ""},
		{"18446744073709551615", 1, ""},
		{"18446744073709551616", 1, ""},
		{"-1", 1, ""},
		{"+1", 1, ""},
		{"0x10", 1, ""},
		{"1e3", 1, ""},
		{" 7 ", 1, ""},
		{"007", 1, ""},
		{"", 1, ""},
		{"\xd9\xa3", 1, ""},
		{"", 0, "last_event_id=1"},
		{"", 0, "last_event_id="},
		{"", 0, "last_event_id=abc"},
		{"", 0, "last_event_id=1&last_event_id=2"},
		{"", 0, "last_id=1"},
		{"5", 1, "last_event_id=abc"},
		{"", 0, "last_event_id=%2D1"},
	} {
		f.Add(s.header, s.n, s.query)
	}
	a := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, header string, n uint8, query string) {
		seq := a.hub.Seq()
		header = strings.NewReplacer("{seq}", strconv.FormatUint(seq, 10), "{seq-1}", strconv.FormatUint(seq-1, 10),
			"{seq+1}", strconv.FormatUint(seq+1, 10)).Replace(header)
		r := wireRequest{method: http.MethodGet, target: "/events"}
		for range n % 3 {
			r.header = append(r.header, [2]string{"Last-Event-ID", header})
		}
		if query != "" {
			r.target += "?" + query
		}
		req, ok := r.parse()
		if !ok {
			return
		}
		before := a.state(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the stream ends where it would wait
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(sseRecorder{rec}, req.WithContext(ctx))
		checkAnswer(t, r, rec)
		if after := a.state(t); after != before {
			t.Fatalf("GET %q (Last-Event-ID %q) = %d changed the state from\n%s\nto\n%s", r.target, r.header, rec.Code, before, after)
		}
		if rec.Code != http.StatusOK {
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" || !strings.HasPrefix(rec.Body.String(), "retry: 2000\n") {
			t.Fatalf("GET %q = 200 %q %q", r.target, ct, rec.Body)
		}
		last := req.Header.Get("Last-Event-ID")
		if last == "" {
			last = req.URL.Query().Get("last_event_id")
		}
		if last == "" {
			return
		}
		after, err := strconv.ParseUint(last, 10, 64)
		if err != nil || len(req.Header.Values("Last-Event-ID")) > 1 {
			t.Fatalf("GET %q (Last-Event-ID %q) = 200, want 400", r.target, r.header)
		}
		// Resumed: after the event named, and each event once.
		var ids []uint64
		for line := range strings.Lines(rec.Body.String()) {
			if v, ok := strings.CutPrefix(line, "id: "); ok && strings.Contains(rec.Body.String(), line+"event: ") {
				id, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if id <= after || len(ids) > 0 && id <= ids[len(ids)-1] {
					t.Fatalf("resumed after %d, sent event %d (before: %v)\n%s", after, id, ids, rec.Body)
				}
				ids = append(ids, id)
			}
		}
	})
}

// FuzzIdempotencyKey sends POST /tasks odd Idempotency-Key headers (none,
// one, several, empty, long, with spaces or non-ASCII) and odd ?wait=
// values. A refused request makes no task; an accepted one made a task with
// that key, or answered the one made before with it.
func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []struct {
		send       bool
		keys, wait string
	}{
		{false, "", ""},
		{true, "key-1", ""},
		{true, "key-1", ""}, // the same again: the task made before
		{true, "key-1\nkey-1", ""},
		{true, "key-1\nkey-2", ""},
		{true, "", ""},
		{true, "\n", ""},
		{true, " spaced ", ""},
		{true, "in side", ""},
		{true, "tab\there", ""},
		{true, "caf\xc3\xa9", ""},
		{true, "\xff", ""},
		{true, "~!@#$%^&*()_+{}|:<>?", ""},
		{true, strings.Repeat("k", 200), ""},
		{true, strings.Repeat("k", 201), ""},
		{true, "key-2", "1ms"},
		{true, "key-3", "9999999h"},
		{true, "key-3", "-1s"},
		{true, "key-3", "1ms&wait=2ms"},
		{true, "key-3", "1ms&x=1"},
		{false, "", "%zz"},
	} {
		f.Add(s.send, s.keys, s.wait)
	}
	a := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, send bool, keys, wait string) {
		r := wireRequest{method: http.MethodPost, target: "/tasks", body: []byte(`{"cmd":"true"}`)}
		if send {
			for _, k := range strings.Split(keys, "\n") {
				r.header = append(r.header, [2]string{"Idempotency-Key", k})
			}
		}
		if wait != "" {
			r.target += "?wait=" + wait
		}
		req, ok := r.parse()
		if !ok {
			return
		}
		// Task IDs are UUIDv7s, listed newest first.
		newest := func() string {
			var page listJSON
			if err := json.Unmarshal([]byte(a.get(t, "/tasks?limit=1")), &page); err != nil {
				t.Fatal(err)
			}
			return page.Tasks[0].ID
		}
		before := newest()
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(rec, req)
		checkAnswer(t, r, rec)
		after := newest()
		if rec.Code >= 400 || rec.Code == http.StatusOK {
			if after != before {
				t.Fatalf("POST %q with %q = %d %s, yet task %s was made", r.target, r.header, rec.Code, rec.Body, after)
			}
		}
		if rec.Code >= 400 {
			return
		}
		key := req.Header.Values("Idempotency-Key")
		var got struct {
			ID             string  `json:"id"`
			IdempotencyKey *string `json:"idempotency_key"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		switch {
		case len(key) > 1:
			t.Fatalf("POST with %d Idempotency-Keys %q = %d", len(key), key, rec.Code)
		case len(key) == 0 && got.IdempotencyKey != nil, len(key) == 1 && (got.IdempotencyKey == nil || *got.IdempotencyKey != key[0]):
			t.Fatalf("POST with Idempotency-Key %q made a task with key %v", key, got.IdempotencyKey)
		case len(key) == 1 && (len(key[0]) > maxKeyLen || key[0] == "" || strings.ContainsFunc(key[0], func(c rune) bool { return c < 0x21 || c > 0x7e })):
			t.Fatalf("POST accepted Idempotency-Key %q", key[0])
		case rec.Code == http.StatusAccepted && got.ID != after:
			t.Fatalf("POST = 202 with task %s, the newest is %s", got.ID, after)
		case rec.Code == http.StatusOK && rec.Header().Get("Idempotent-Replayed") != "true":
			t.Fatalf("POST = 200 without Idempotent-Replayed")
		}
		if w := req.URL.Query().Get("wait"); w != "" {
			if d, err := time.ParseDuration(w); err != nil || d < 0 || d > fuzzMaxWait {
				t.Fatalf("POST accepted wait %q", w)
			}
		}
	})
}
