package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMERoutes walks every route of the router and wants it in the
// README's REST API table as "METHOD PATH" (HEAD beside GET in the prose),
// and no row for a route that does not exist. Then it sends each route bad
// input (a malformed task ID, an unknown query parameter), an unknown path
// and a method a path does not take: every refusal is a 4xx with
// {"error": "..."}, and its code is in the route's row or the section's
// prose above the table.
func TestREADMERoutes(t *testing.T) {
	section := readme.SectionOf(t, "## REST API")
	intro, table, ok := strings.Cut(section, "| Endpoint |")
	if !ok {
		t.Fatal("README's REST API section has no Endpoint table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := readme.Rows("| Endpoint |" + table)

	var p Params
	srv, _ := newServerWith(t, func(pp *Params) {
		pp.Events = events.NewHub(100, 100)
		pp.LiveOutput = liveout.New(1 << 16)
		pp.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("# metrics\n")) })
		p = *pp
	})
	_, router := newRouter(p)

	// rowsOf is the text of the rows that document "METHOD PATH", which
	// it marks documented; "" if none does.
	documented := map[int]bool{}
	rowsOf := func(key string) string {
		var text string
		for i, r := range rows {
			if c := r.Cells[0]; strings.HasPrefix(c, "`"+key) && len(c) > len(key)+1 && strings.ContainsRune("` ?", rune(c[len(key)+1])) {
				documented[i] = true
				text += r.Line + "\n"
			}
		}
		return text
	}
	err := router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			if m == http.MethodHead {
				if !strings.Contains(intro, "`GET`/`HEAD`") && !strings.Contains(intro, "`HEAD`") {
					t.Errorf("README's REST API does not say which routes take HEAD (%s)", tpl)
				}
				continue
			}
			key := m + " " + tpl
			if tpl == "/ui/" { // a prefix: the dashboard's assets, in the row of its page
				if !strings.Contains(rowsOf(m+" /"), "/ui/") {
					t.Errorf("README's REST API table has no row that names /ui/")
				}
				continue
			}
			r := rowsOf(key)
			if r == "" {
				t.Errorf("README's REST API table has no row for %s", key)
				continue
			}
			path := strings.ReplaceAll(tpl, "{id}", "0195b5d2-0000-7000-8000-000000000000")
			if code := checkRefusal(t, srv.URL, m, path+"?bogus=1", r+intro); code != http.StatusBadRequest && !takesAnyQuery(m, path) {
				t.Errorf("%s %s?bogus=1 = %d; README's REST API has every route but the public ones and /metrics answer 400 to a query parameter it does not take", m, path, code)
			}
			if strings.Contains(tpl, "{id}") {
				checkRefusal(t, srv.URL, m, strings.ReplaceAll(tpl, "{id}", "not~an~id"), r+intro)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if !documented[i] {
			t.Errorf("README's REST API table documents a route the master does not have: %s", r.Line)
		}
	}
	checkRefusal(t, srv.URL, http.MethodGet, "/no/such/endpoint", intro)
	checkRefusal(t, srv.URL, http.MethodPut, "/tasks", intro)
}

// takesAnyQuery reports whether README's REST API exempts the route of
// method path from refusing unknown query parameters: the public routes
// (probes and the dashboard's static files, which hold no data) and
// /metrics (Prometheus's handler).
func takesAnyQuery(method, path string) bool {
	return IsPublic(httptest.NewRequest(method, path, nil)) || path == "/metrics"
}

// checkRefusal sends method path to the server at base; an answer of 400
// or more must be a 4xx JSON error whose code doc mentions. It returns the
// status code.
func checkRefusal(t *testing.T, base, method, path, doc string) int {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 400 {
		return resp.StatusCode
	}
	var body struct {
		Error *string `json:"error"`
	}
	if resp.StatusCode >= 500 || resp.Header.Get("Content-Type") != "application/json" ||
		json.NewDecoder(resp.Body).Decode(&body) != nil || body.Error == nil {
		t.Errorf("%s %s = %d %s, want a 4xx with {\"error\": ...}", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
		return resp.StatusCode
	}
	if !strings.Contains(doc, "`"+strconv.Itoa(resp.StatusCode)) && !strings.Contains(doc, " "+strconv.Itoa(resp.StatusCode)) {
		t.Errorf("%s %s = %d (%s), which README's REST API does not mention for it", method, path, resp.StatusCode, *body.Error)
	}
	return resp.StatusCode
}

// TestREADMEPlainTextRefusals sends the router's server requests that Go's
// HTTP server refuses before any route sees them: each refusal is plain
// text, not the API's JSON, and README's REST API must name its code
// beside the others Go's server answers so.
func TestREADMEPlainTextRefusals(t *testing.T) {
	section := readme.SectionOf(t, "## REST API")
	intro, _, _ := strings.Cut(section, "| Endpoint |")
	_, goServer, ok := strings.Cut(intro, "Go's HTTP server")
	if !ok {
		t.Fatal("README's REST API does not say what Go's HTTP server refuses")
	}
	goServer, _, _ = strings.Cut(goServer, "\n\n")
	srv, _ := newServer(t, nil)
	for _, tc := range []struct{ name, raw string }{
		{"no HTTP", "NOT HTTP\r\n\r\n"},
		{"transfer coding", "POST /tasks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"expectation", "POST /tasks HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nContent-Length: 14\r\n\r\n{\"cmd\":\"true\"}"},
		{"HTTP version", "GET /tasks HTTP/2.0\r\nHost: localhost\r\n\r\n"},
		{"huge header", "GET /tasks HTTP/1.1\r\nHost: localhost\r\nX-Junk: " + strings.Repeat("j", 2<<20) + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, tc.raw) // the server may answer before it has read it all
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.Header.Get("Content-Type") == "application/json" {
				t.Fatalf("%d %s: want a refusal by Go's HTTP server", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if !strings.Contains(goServer, "`"+strconv.Itoa(resp.StatusCode)) {
				t.Errorf("Go's HTTP server answers %d, which README's REST API does not list among its refusals:%s", resp.StatusCode, goServer)
			}
		})
	}
}

// TestREADMEShapes: the JSON README shows for a task (and its history),
// GET /queue, GET /workers and GET /tasks/{id}/output, and the data of the
// output follow's events, names exactly the fields the API's types have: a field added, renamed or dropped in one
// and not the other fails here.
func TestREADMEShapes(t *testing.T) {
	api := readme.SectionOf(t, "## REST API")
	live := readme.SectionOf(t, "## Live output")
	between := func(doc, from, to string) string {
		t.Helper()
		_, after, ok := strings.Cut(doc, from)
		if !ok {
			t.Fatalf("README has no %q", from)
		}
		s, _, ok := strings.Cut(after, to)
		if !ok {
			t.Fatalf("README has no %q after %q", to, from)
		}
		return from + s + to
	}
	keys := func(v any) []string {
		m, _ := v.(map[string]any)
		var k []string
		for name := range m {
			k = append(k, name)
		}
		return k
	}
	unmarshal := func(what, s string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(s, "```json"), "```")), &m); err != nil {
			t.Fatalf("README's %s is not JSON: %v", what, err)
		}
		return m
	}
	quoted := regexp.MustCompile(`"([A-Za-z_]+)"`)
	names := func(s string) []string {
		var n []string
		for _, m := range quoted.FindAllStringSubmatch(s, -1) {
			n = append(n, m[1])
		}
		return n
	}

	task := unmarshal("task", between(api, "```json", "```"))
	history, _ := task["history"].([]any)
	if len(history) == 0 {
		t.Fatal("README's task has no history entry")
	}
	queue := unmarshal("GET /queue", between(api, `{"queued"`, "]}"))
	groups, _ := queue["groups"].([]any)
	if len(groups) == 0 {
		t.Fatal("README's GET /queue has no group")
	}
	workers := between(api, `{"workerCount"`, "]}")
	worker := between(workers, `[{`, `}]`)

	// The follow's events: README's table gives each one's data.
	sse := map[string][]string{}
	for _, r := range readme.Rows(between(live, "| event | data | when |", "\n\n")) {
		if len(r.Names) == 1 && len(r.Cells) > 1 {
			sse[r.Names[0]] = keys(unmarshal("data of the "+r.Names[0]+" event", strings.Trim(r.Cells[1], "`")))
		}
	}

	for _, tc := range []struct {
		name string
		doc  []string
		typ  reflect.Type
	}{
		{"attempt event", sse["attempt"], reflect.TypeFor[attemptEvent]()},
		{"output event", sse["output"], reflect.TypeFor[outputEvent]()},
		{"skipped event", sse["skipped"], reflect.TypeFor[skippedEvent]()},
		{"attempt_end event", sse["attempt_end"], reflect.TypeFor[attemptEndEvent]()},
		{"end event", sse["end"], reflect.TypeFor[endEvent]()},
		{"a task", keys(task), reflect.TypeFor[taskJSON]()},
		{"a task's history entry", keys(history[0]), reflect.TypeFor[attemptJSON]()},
		{"GET /queue", keys(queue), reflect.TypeFor[queueJSON]()},
		{"a GET /queue group", keys(groups[0]), reflect.TypeFor[groupJSON]()},
		{"GET /workers", names(strings.Replace(workers, worker, "", 1)), reflect.TypeFor[workersJSON]()},
		{"a worker of GET /workers", names(worker), reflect.TypeFor[workerJSON]()},
		{"GET /tasks/{id}/output", names(between(live, "Without `follow`: `{", "}`")), reflect.TypeFor[outputJSON]()},
	} {
		var want []string
		for f := range tc.typ.Fields() {
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				want = append(want, name)
			}
		}
		slices.Sort(want)
		got := slices.Sorted(slices.Values(tc.doc))
		if !slices.Equal(got, want) {
			t.Errorf("README's %s has the fields %v; the API's %v", tc.name, got, want)
		}
	}
}
