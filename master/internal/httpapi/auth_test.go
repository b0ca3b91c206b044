package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
)

const testToken = "test-token-0123456789abcdef"

func TestAPITokenIsRequiredExceptOnPublicPaths(t *testing.T) {
	srv, _ := newServerWith(t, func(p *Params) {
		p.APIToken = testToken
	})
	tests := []struct {
		name, method, path, auth string
		want                     int
		wantErr                  string // substring of the JSON error, for 401s
		wantChallenge            string // substring of WWW-Authenticate, for 401s
	}{
		{name: "healthz is open", method: "GET", path: "/healthz", want: 200},
		{name: "readyz is open", method: "GET", path: "/readyz", want: 200},
		{name: "HEAD healthz is open", method: "HEAD", path: "/healthz", want: 200},
		{name: "dashboard page is open", method: "GET", path: "/", want: 200},
		{name: "dashboard asset is open", method: "GET", path: "/ui/app.js", want: 200},
		{name: "missing asset is a 404, not a 401", method: "GET", path: "/ui/nothing.js", want: 404},
		{name: "events need the token", method: "GET", path: "/events", want: 401, wantErr: "missing API token"},
		{name: "metrics need the token", method: "GET", path: "/metrics", want: 401, wantErr: "missing API token"},
		{name: "asset prefix does not open traversal", method: "GET", path: "/ui/../tasks", want: 401, wantErr: "missing API token", wantChallenge: `Bearer realm="roundhouse"`},
		{name: "POST to a public path needs the token", method: "POST", path: "/healthz", want: 401, wantErr: "missing API token"},
		{name: "tasks without a token", method: "GET", path: "/tasks", want: 401, wantErr: "missing API token", wantChallenge: `Bearer realm="roundhouse"`},
		{name: "workers without a token", method: "GET", path: "/workers", want: 401, wantErr: "missing API token"},
		{name: "queue without a token", method: "GET", path: "/queue", want: 401, wantErr: "missing API token"},
		{name: "retry without a token", method: "POST", path: "/tasks/x/retry", want: 401, wantErr: "missing API token"},
		{name: "unknown endpoint without a token", method: "GET", path: "/nope", want: 401, wantErr: "missing API token"},
		{name: "wrong token", method: "GET", path: "/tasks", auth: "Bearer wrong-token-0123456789abcd", want: 401, wantErr: "invalid API token", wantChallenge: `error="invalid_token"`},
		{name: "token prefix", method: "GET", path: "/tasks", auth: "Bearer " + testToken[:10], want: 401, wantErr: "invalid API token"},
		{name: "token with a suffix", method: "GET", path: "/tasks", auth: "Bearer " + testToken + "x", want: 401, wantErr: "invalid API token"},
		{name: "basic scheme", method: "GET", path: "/tasks", auth: "Basic " + testToken, want: 401, wantErr: `must be "Bearer <token>"`},
		{name: "scheme without token", method: "GET", path: "/tasks", auth: "Bearer", want: 401, wantErr: `must be "Bearer <token>"`},
		{name: "bearer with blank token", method: "GET", path: "/tasks", auth: "Bearer  \t", want: 401, wantErr: "Bearer <token>"},
		{name: "right token", method: "GET", path: "/tasks", auth: "Bearer " + testToken, want: 200},
		{name: "scheme is case-insensitive", method: "GET", path: "/workers", auth: "bearer " + testToken, want: 200},
		{name: "queue with the token", method: "GET", path: "/queue", auth: "Bearer " + testToken, want: 200},
		{name: "right token, unknown endpoint", method: "GET", path: "/nope", auth: "Bearer " + testToken, want: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			req.URL.Opaque = tt.path // send the path as written, "/../" included
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want != 401 {
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, tt.wantErr) {
				t.Errorf("body %s, want a JSON error containing %q", body, tt.wantErr)
			}
			if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, tt.wantChallenge) || !strings.HasPrefix(ch, "Bearer") {
				t.Errorf("WWW-Authenticate %q, want it to contain %q", ch, tt.wantChallenge)
			}
			if strings.Contains(string(body), testToken) {
				t.Errorf("the 401 echoes the token: %s", body)
			}
		})
	}
}

// Without MASTER_API_TOKEN the API is open, as before.
func TestNoTokenConfiguredMeansOpen(t *testing.T) {
	srv, _ := newServer(t, nil)
	if code, _, m := do(t, "GET", srv.URL+"/tasks", ""); code != 200 {
		t.Fatalf("GET /tasks = %d %v, want 200", code, m)
	}
}

func TestRecovererAnswers500AndLogs(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	h := recoverer(log, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom at /secret/internal/path.go")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/tasks", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q; want 500 JSON", rec.Code, rec.Header().Get("Content-Type"))
	}
	if got := strings.TrimSpace(rec.Body.String()); !strings.Contains(got, `"error": "internal error"`) || strings.Contains(got, "boom") {
		t.Errorf("body %s, want only \"internal error\"", got)
	}
	if !strings.Contains(logged.String(), "handler panicked") || !strings.Contains(logged.String(), "boom") {
		t.Errorf("log %q, want the panic and its value", logged.String())
	}

	// http.ErrAbortHandler is net/http's own abort and passes through.
	abort := recoverer(log, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler re-panicked", v)
			}
		}()
		abort.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
}

// A page on another site cannot make the user's browser submit a task, with
// or without a token configured; curl and same-origin pages can.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	srv, _ := newServer(t, nil)
	for _, tt := range []struct {
		name, header, value string
		want                int
	}{
		{"cross-site fetch", "Sec-Fetch-Site", "cross-site", 403},
		{"foreign origin", "Origin", "http://evil.example", 403},
		{"same origin", "Sec-Fetch-Site", "same-origin", 202},
		{"no browser headers (curl)", "", "", 202},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", srv.URL+"/tasks", strings.NewReader(`{"cmd":"echo hi"}`))
			if tt.header != "" {
				req.Header.Set(tt.header, tt.value)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Error string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tt.want || (tt.want == 403 && !strings.Contains(e.Error, "cross-origin")) {
				t.Fatalf("status %d error %q, want %d", resp.StatusCode, e.Error, tt.want)
			}
		})
	}
}

// A store failure is a 500 that says nothing of the database, and is
// logged once with its details.
func TestInternalErrorsAreNotLeaked(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	path := filepath.Join(t.TempDir(), "rh.db")
	st, err := store.Open(path, log)
	if err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(dispatch.Params{Log: log, Store: st, Now: time.Now, NewID: func() string { return "x" },
		MaxCmdBytes: 100, DefaultTimeout: time.Hour, MaxTimeout: time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second})
	srv := httptest.NewServer(New(Params{Dispatcher: d, Log: log, MaxBodyBytes: 1024, MaxWait: time.Second, Ready: func() error { return nil }}))
	t.Cleanup(srv.Close)
	st.Close() // every read fails from now on

	code, _, m := do(t, "GET", srv.URL+"/tasks/abc", "")
	if code != 500 || m["error"] != "internal error" || len(m) != 1 {
		t.Fatalf("GET after the database closed: %d %v, want 500 and only \"internal error\"", code, m)
	}
	if n := strings.Count(logged.String(), "request failed"); n != 1 || !strings.Contains(logged.String(), "closed") {
		t.Errorf("want the failure logged once with its details:\n%s", logged.String())
	}
}

// Without a token, only requests for a loopback host name get an answer
// (DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own
// name as Host); the probes and the static dashboard answer any Host. With a
// token, the token guards and any Host is fine.
func TestHostCheckWithoutToken(t *testing.T) {
	open, _ := newServer(t, nil)
	guarded, _ := newServerWith(t, func(p *Params) { p.APIToken = testToken })
	tests := []struct {
		name, method, path, host string
		token                    bool // the server has a token, and the request sends it
		want                     int
	}{
		{name: "127.0.0.1 with port", method: "GET", path: "/tasks", host: "127.0.0.1:9092", want: 200},
		{name: "127.0.0.1 without port", method: "GET", path: "/tasks", host: "127.0.0.1", want: 200},
		{name: "elsewhere in 127/8", method: "GET", path: "/workers", host: "127.8.9.10:80", want: 200},
		{name: "localhost with port", method: "POST", path: "/tasks", host: "localhost:9092", want: 202},
		{name: "localhost without port", method: "GET", path: "/tasks", host: "localhost", want: 200},
		{name: "localhost in capitals, fully qualified", method: "GET", path: "/tasks", host: "LOCALHOST.:9092", want: 200},
		{name: "IPv6 loopback with port", method: "GET", path: "/tasks", host: "[::1]:9092", want: 200},
		{name: "IPv6 loopback without port", method: "GET", path: "/tasks", host: "[::1]", want: 200},
		{name: "rebound name", method: "POST", path: "/tasks", host: "evil.example:9092", want: 403},
		{name: "rebound name, read", method: "GET", path: "/tasks", host: "evil.example", want: 403},
		{name: "localhost as a subdomain", method: "GET", path: "/tasks", host: "localhost.evil.example:9092", want: 403},
		{name: "loopback address inside a name", method: "GET", path: "/tasks", host: "127.0.0.1.nip.io", want: 403},
		{name: "LAN address", method: "GET", path: "/workers", host: "192.168.1.5:9092", want: 403},
		{name: "unspecified address", method: "GET", path: "/tasks", host: "0.0.0.0:9092", want: 403},
		{name: "IPv6 non-loopback", method: "GET", path: "/tasks", host: "[fe80::1]:9092", want: 403},
		{name: "compose service name", method: "GET", path: "/events", host: "master:9092", want: 403},
		{name: "unknown path on a foreign host", method: "GET", path: "/nope", host: "evil.example", want: 403},
		{name: "healthz answers any host", method: "GET", path: "/healthz", host: "master:9092", want: 200},
		{name: "readyz answers any host", method: "GET", path: "/readyz", host: "evil.example", want: 200},
		{name: "dashboard page answers any host", method: "GET", path: "/", host: "evil.example", want: 200},
		{name: "dashboard asset answers any host", method: "GET", path: "/ui/app.js", host: "evil.example", want: 200},
		{name: "with a token any host is fine", method: "GET", path: "/tasks", host: "roundhouse.lan:9092", token: true, want: 200},
		{name: "with a token, POST from any host", method: "POST", path: "/tasks", host: "10.0.0.7:9092", token: true, want: 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := open
			if tt.token {
				srv = guarded
			}
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"cmd":"echo hi"}`)
			}
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, body)
			req.Host = tt.host
			if tt.token {
				req.Header.Set("Authorization", "Bearer "+testToken)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("Host %q: status %d, want %d: %s", tt.host, resp.StatusCode, tt.want, got)
			}
			if tt.want != 403 {
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(got, &e); err != nil || !strings.Contains(e.Error, "set MASTER_API_TOKEN to serve other host names") {
				t.Errorf("body %s, want a JSON error saying to set MASTER_API_TOKEN", got)
			}
		})
	}
	// A refused request changes nothing.
	if code, _, m := do(t, "GET", open.URL+"/tasks", ""); code != 200 || len(m["tasks"].([]any)) != 1 {
		t.Errorf("GET /tasks = %d %v, want only the one task submitted for localhost", code, m)
	}
}
