package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
)

// FuzzCreateTask feeds POST /tasks bodies, Idempotency-Keys and ?wait=
// values to the decoder and its checks, then to the dispatcher's (Normalize,
// which Submit runs first). Whatever comes in, it must not panic, and it
// must either make a submission the dispatcher accepts as valid, or a 4xx
// with a JSON error.
//
//	go test -run '^$' -fuzz FuzzCreateTask -fuzztime 60s ./master/internal/httpapi
func FuzzCreateTask(f *testing.F) {
	for _, seed := range []struct{ body, key, wait string }{
		{`{"cmd":"echo hi"}`, "", ""},
		{`{"cmd":"sleep 1","timeout":"30s","max_attempts":2}`, "key-1", "5s"},
		{`{"cmd":"x","priority":1}`, "", ""},
		{`{"cmd":"x","priority":0}`, "", ""},
		{`{"cmd":"x","requires":{"gpu":"a b"}}`, "", ""},
		{`{"cmd":"x","requires":{"gpu":"nvidia"},"delay":"30s","retry_on":["failed"],"backoff":"1s","max_backoff":"1m"}`, "", ""},
		{`{"cmd":"x","run_at":"2026-12-01T09:30:00Z","delay":"-1s","retry_on":["lost","failed","failed"]}`, "", ""},
		{`{"cmd":"x","requires":{"-k":"v"},"backoff":"0s"}`, "", ""},
		{`{"cmd":"a"}{"cmd":"b"}`, "", ""},
		{"{\"cmd\":\"\xff\"}", "", ""},
		{`{"cmd":"a\u0000b"}`, "", ""},
		{`[1,2]`, "a b", "-1s"},
	} {
		f.Add([]byte(seed.body), seed.key, seed.wait)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const maxCmd, maxTimeout = 100, 2 * time.Hour
	// Checks stop before the store: Normalize needs none.
	d := dispatch.New(dispatch.Params{Log: log, MaxCmdBytes: maxCmd, DefaultTimeout: time.Hour, MaxTimeout: maxTimeout, MaxAttempts: 3})
	a := &api{d: d, log: log, maxBody: 1024, maxWait: 10 * time.Second}

	f.Fuzz(func(t *testing.T, body []byte, key, wait string) {
		req := httptest.NewRequest(http.MethodPost, "/tasks", strings.NewReader(string(body)))
		if wait != "" {
			req.URL.RawQuery = "wait=" + wait
		}
		if key != "" {
			req.Header["Idempotency-Key"] = []string{key}
		}
		rec := httptest.NewRecorder()
		sub, w, err := a.parseCreate(rec, req)
		if err == nil {
			sub, err = d.Normalize(sub) // as Submit does before anything else
		}
		if err != nil {
			rec := httptest.NewRecorder()
			a.writeError(rec, err)
			var e errorBody
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("error %v answered %d, want a 4xx", err, rec.Code)
			}
			if rec.Header().Get("Content-Type") != "application/json" || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("error %v answered %q, want a JSON error", err, rec.Body.String())
			}
			return
		}
		// Accepted: everything the rest of the master relies on holds.
		if err := task.ValidateCmd(sub.Cmd, maxCmd); err != nil {
			t.Fatalf("accepted an invalid cmd %q: %v", sub.Cmd, err)
		}
		if !utf8.Valid(body) || len(body) > 1024 {
			t.Fatalf("accepted a body of %d bytes that is not valid UTF-8 or too long", len(body))
		}
		if sub.Timeout < time.Second || sub.Timeout > maxTimeout || sub.MaxAttempts < 1 || sub.MaxAttempts > 100 {
			t.Fatalf("accepted timeout %s, max_attempts %d", sub.Timeout, sub.MaxAttempts)
		}
		if len(sub.IdempotencyKey) > maxKeyLen || strings.ContainsFunc(sub.IdempotencyKey, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			t.Fatalf("accepted Idempotency-Key %q", sub.IdempotencyKey)
		}
		if w < 0 || w > a.maxWait {
			t.Fatalf("accepted wait %s", w)
		}
		if sub.Priority != 0 && (sub.Priority < task.MinPriority || sub.Priority > task.MaxPriority) {
			t.Fatalf("accepted priority %d", sub.Priority)
		}
		if err := labels.Validate(sub.Requires); err != nil {
			t.Fatalf("accepted requires %v: %v", sub.Requires, err)
		}
		if !sub.RunAt.IsZero() && sub.Delay != 0 || sub.Delay < 0 || sub.Backoff < 0 || sub.MaxBackoff < 0 {
			t.Fatalf("accepted run_at %s, delay %s, backoff %s, max_backoff %s", sub.RunAt, sub.Delay, sub.Backoff, sub.MaxBackoff)
		}
		for _, o := range sub.RetryOn {
			if !slices.Contains(task.Retryable, o) {
				t.Fatalf("accepted retry_on %v", sub.RetryOn)
			}
		}
	})
}

// FuzzSubmitReadBack posts bodies to POST /tasks on the real router, store
// and dispatcher, and holds each answer to the product rule: either 202 with
// a task that says what was sent and that GET /tasks/{id} reads back
// identically, or a 4xx JSON error and no task created. Its seeds run with
// plain go test; to search further:
//
//	go test -run '^$' -fuzz FuzzSubmitReadBack -fuzztime 60s ./master/internal/httpapi
func FuzzSubmitReadBack(f *testing.F) {
	for _, body := range []string{
		`{"cmd":"echo hi"}`,
		`{"cmd":"sleep 1","timeout":"1m30s","max_attempts":5,"priority":1}`,
		`{"cmd":"x","requires":{"gpu":"nvidia","zone":"eu"},"delay":"30s","retry_on":["timed_out","failed"],"backoff":"2s","max_backoff":"1m"}`,
		`{"cmd":"x","run_at":"2030-01-02T03:04:05.123456789+05:30"}`,
		`{"cmd":"x","run_at":"1971-01-01T00:00:00Z"}`,
		`{"cmd":"x","run_at":"0001-01-01T00:00:00Z"}`, // Go's zero time: was taken for no run_at
		`{"cmd":"x","run_at":"2262-04-11T23:47:16.854775807Z"}`,
		`{"cmd":"x","delay":"0s","priority":null,"requires":{},"retry_on":[]}`,
		`{"cmd":"x","retry_on":["failed"],"max_backoff":"500ms"}`,
		`{"cmd":"x","requires":{"gpu":"a","gpu":"b"}}`,
		`{"cmd":"x","timeout":"1h0.5ns"}`,
		`{"cmd":"x","delay":"8784h"}`,
		`{"cmd":"x","delay":"1ns"}`,
		`{"cmd":"\u00e9\ud83d\ude00 \t\r\n"}`,
		`{"cmd":"x\ud800"}`,
		`{"cmd":"x"} {}`,
		`{"cmd":"x","Cmd":"y"}`,
		`{"cmd":"x","max_attempts":1e1}`,
		"{\"cmd\":\"\xff\"}",
		`null`,
	} {
		f.Add([]byte(body))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(f.TempDir(), "rh.db"), log)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	// The monotonic clock stands still: a task scheduled for a moment
	// later must not come due between its POST and its GET.
	d := dispatch.New(dispatch.Params{Log: log, Store: st, Now: time.Now, Mono: func() time.Duration { return 0 },
		NewID:       func() string { return uuid.Must(uuid.NewV7()).String() },
		MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second})
	f.Cleanup(d.Close)
	srv := httptest.NewServer(New(Params{Dispatcher: d, Log: log, MaxBodyBytes: 1024, MaxWait: time.Second, Ready: func() error { return nil }}))
	f.Cleanup(srv.Close)

	// newest is the ID of the newest task, "" for none.
	newest := func(t *testing.T) string {
		var page struct{ Tasks []struct{ ID string } }
		if code := getJSON(t, srv.URL+"/tasks?limit=1", &page); code != http.StatusOK {
			t.Fatalf("GET /tasks = %d", code)
		}
		if len(page.Tasks) == 0 {
			return ""
		}
		return page.Tasks[0].ID
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := newest(t)
		resp, err := http.Post(srv.URL+"/tasks", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("POST %q = %d with Content-Type %q", body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if resp.StatusCode != http.StatusAccepted {
			var e errorBody
			if resp.StatusCode < 400 || resp.StatusCode > 499 || json.Unmarshal(raw, &e) != nil || e.Error == "" {
				t.Fatalf("POST %q = %d %s, want 202 or a 4xx JSON error", body, resp.StatusCode, raw)
			}
			if after := newest(t); after != before {
				t.Fatalf("POST %q = %d %s, yet task %s was created", body, resp.StatusCode, raw, after)
			}
			return
		}
		var got map[string]any
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		id, _ := got["id"].(string)
		if resp.Header.Get("Location") != "/tasks/"+id {
			t.Fatalf("POST %q: Location %q for task %q", body, resp.Header.Get("Location"), id)
		}
		var read map[string]any
		if code := getJSON(t, srv.URL+"/tasks/"+id, &read); code != http.StatusOK || !reflect.DeepEqual(read, got) {
			t.Fatalf("POST %q answered\n%v\nGET reads back %d\n%v", body, got, code, read)
		}
		checkSent(t, body, got)
	})
}

// checkSent fails t unless task, a 202's JSON, holds each field that body,
// an accepted POST /tasks, gives.
func checkSent(t *testing.T, body []byte, task map[string]any) {
	t.Helper()
	var sent map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&sent); err != nil {
		t.Fatalf("accepted %q, which encoding/json cannot read: %v", body, err)
	}
	dur := func(v any) time.Duration {
		s, _ := v.(string)
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("accepted %q: %v is no duration", body, v)
		}
		return d
	}
	when := func(v any) time.Time {
		s, _ := v.(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("accepted %q: %v is no time", body, v)
		}
		return at
	}
	for k, v := range sent {
		if v == nil {
			continue // the default
		}
		same := true
		switch k {
		case "cmd":
			same = task["cmd"] == v
		case "max_attempts", "priority":
			same = fmt.Sprint(task[k]) == v.(json.Number).String()
		case "timeout", "backoff", "max_backoff":
			same = task[k] != nil && dur(task[k]) == dur(v)
		case "requires":
			same = reflect.DeepEqual(task[k], v)
		case "retry_on":
			same = reflect.DeepEqual(task[k], v)
		case "run_at":
			same = task[k] != nil && when(task[k]).Equal(when(v))
		case "delay":
			if d := dur(v); d == 0 {
				same = task["run_at"] == nil
			} else {
				same = task["run_at"] != nil && when(task["run_at"]).Sub(when(task["created_at"])) == d
			}
		default:
			t.Fatalf("accepted %q with the unknown field %q", body, k)
		}
		if !same {
			t.Fatalf("accepted %q: %s is %v, the task says\n%v", body, k, v, task)
		}
	}
}

// getJSON GETs url into v and returns the status code.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}
