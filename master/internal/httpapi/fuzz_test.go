package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
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
