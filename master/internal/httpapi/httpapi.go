// Package httpapi is the master's REST API: gorilla/mux routes, JSON in and
// out, and the one table that maps task errors to HTTP status codes.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/roundhouse-lab/roundhouse/master/internal/dashboard"
	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Params are the API's dependencies and limits.
type Params struct {
	Dispatcher   *dispatch.Dispatcher
	Log          *slog.Logger
	MaxBodyBytes int64
	MaxWait      time.Duration // longest ?wait= a request may ask for
	Ready        func() error  // nil when the master can serve workers
	Events       *events.Hub   // followed by GET /events
	Metrics      http.Handler  // serves GET /metrics
	Heartbeat    time.Duration // between comments on an idle event stream; 0 means 15s
	// MaxEventStreams bounds the GET /events streams served at once; past
	// it the request is answered 429. 0 means no limit.
	MaxEventStreams int

	// APIToken, when set, is required as "Authorization: Bearer <token>"
	// on every request but the public ones (see IsPublic).
	APIToken string
}

type api struct {
	d       *dispatch.Dispatcher
	log     *slog.Logger
	maxBody int64
	maxWait time.Duration
	ready   func() error

	events     *events.Hub
	heartbeat  time.Duration
	maxStreams int64        // 0: no limit
	streams    atomic.Int64 // event streams being served; see acquireStream
}

// IsPublic reports whether r asks for a route that holds no data and is
// served without an API token: the health checks and the dashboard's static
// page and assets (the page asks for the token and sends it itself). Every
// other route, /events and /metrics included, needs the token when one is set.
func IsPublic(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// Matched on the raw path, never cleaned: "/ui/../tasks" is not public.
	switch p := r.URL.Path; {
	case p == "/healthz", p == "/readyz", p == "/":
		return true
	default:
		return strings.HasPrefix(p, "/ui/") && !strings.Contains(p, "..")
	}
}

// New returns the router.
func New(p Params) http.Handler {
	a := &api{d: p.Dispatcher, log: p.Log.With("component", "httpapi"), maxBody: p.MaxBodyBytes, maxWait: p.MaxWait, ready: p.Ready,
		events: p.Events, heartbeat: p.Heartbeat, maxStreams: int64(p.MaxEventStreams)}
	if a.heartbeat <= 0 {
		a.heartbeat = 15 * time.Second
	}
	r := mux.NewRouter()
	// No cleaning and redirecting of paths: "/tasks/../x" is no task path
	// and gets a 404, not a redirect to somewhere else.
	r.SkipClean(true)
	r.HandleFunc("/tasks", a.createTask).Methods(http.MethodPost)
	r.HandleFunc("/tasks", a.listTasks).Methods(http.MethodGet)
	r.HandleFunc("/tasks/{id}", a.getTask).Methods(http.MethodGet)
	r.HandleFunc("/tasks/{id}", a.cancelTask).Methods(http.MethodDelete)
	r.HandleFunc("/tasks/{id}/retry", a.retryTask).Methods(http.MethodPost)
	r.HandleFunc("/queue", a.getQueue).Methods(http.MethodGet)
	r.HandleFunc("/workers", a.listWorkers).Methods(http.MethodGet)
	r.HandleFunc("/healthz", a.healthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", a.readyz).Methods(http.MethodGet, http.MethodHead)
	if p.Events != nil {
		r.HandleFunc("/events", a.streamEvents).Methods(http.MethodGet)
	}
	if p.Metrics != nil {
		r.Handle("/metrics", p.Metrics).Methods(http.MethodGet)
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	// The dashboard: a static page and its assets, no data (see IsPublic).
	ui := dashboard.Handler(r.NotFoundHandler)
	r.Handle("/", ui).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/ui/").Handler(ui).Methods(http.MethodGet, http.MethodHead)
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)})
	})
	auth := newAuthenticator(p.APIToken)
	// A web page in the user's browser must not be able to POST a command
	// to a master on localhost (CSRF): browsers mark such requests, curl and
	// the dashboard (same origin) pass.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusForbidden, errorBody{"cross-origin request refused: the API does not take state-changing requests from other web sites"})
	}))
	var h http.Handler = csrf.Handler(auth.wrap(r, a.writeError))
	if p.APIToken == "" {
		h = loopbackHostOnly(h)
	}
	return recoverer(a.log, h)
}

type createRequest struct {
	Cmd         *string `json:"cmd"`
	Timeout     *string `json:"timeout"`      // a Go duration: "30s", "5m"
	MaxAttempts *int    `json:"max_attempts"` // deliveries before giving up

	Priority   *int              `json:"priority"`    // 1 (most urgent) to 5
	Requires   map[string]string `json:"requires"`    // labels the worker must have
	RunAt      *string           `json:"run_at"`      // RFC 3339
	Delay      *string           `json:"delay"`       // a Go duration; not with run_at
	RetryOn    []string          `json:"retry_on"`    // outcomes that run the task again
	Backoff    *string           `json:"backoff"`     // a Go duration
	MaxBackoff *string           `json:"max_backoff"` // a Go duration
}

// maxKeyLen bounds the Idempotency-Key header.
const maxKeyLen = 200

func (a *api) createTask(w http.ResponseWriter, r *http.Request) {
	sub, wait, err := a.parseCreate(w, r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	t, created, err := a.d.Submit(r.Context(), sub)
	if err != nil {
		a.writeError(w, err)
		return
	}
	if wait > 0 {
		t = a.wait(r, t.ID, wait, t)
	}
	w.Header().Set("Location", "/tasks/"+t.ID)
	code := http.StatusAccepted
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
		code = http.StatusOK
	}
	writeJSON(w, code, toTaskJSON(t, true))
}

// parseCreate reads and checks everything a POST /tasks says up to what the
// dispatcher checks on submission: here the JSON types, that durations and
// times parse, and what only the request can tell (an explicit 0 where the
// Submission reads 0 as "the default"); Submit checks the rest against the
// master's limits (Normalize: the command, timeout, max_attempts, label
// syntax, backoff bounds) before any work, and its errors are answered as
// parseCreate's are. Errors wrap task.ErrInvalid or errTooLarge.
func (a *api) parseCreate(w http.ResponseWriter, r *http.Request) (dispatch.Submission, time.Duration, error) {
	if err := checkQuery(r, "wait"); err != nil {
		return dispatch.Submission{}, 0, err
	}
	wait, err := a.waitParam(r)
	if err != nil {
		return dispatch.Submission{}, 0, err
	}
	sub := dispatch.Submission{IdempotencyKey: r.Header.Get("Idempotency-Key")}
	if len(r.Header.Values("Idempotency-Key")) > 1 || len(sub.IdempotencyKey) > maxKeyLen ||
		strings.ContainsFunc(sub.IdempotencyKey, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return sub, 0, fmt.Errorf("%w: Idempotency-Key must be one header of 1-%d printable ASCII characters without spaces", task.ErrInvalid, maxKeyLen)
	}
	var req createRequest
	if err := a.decode(w, r, &req); err != nil {
		return sub, 0, err
	}
	if req.Cmd == nil {
		return sub, 0, fmt.Errorf(`%w: field "cmd" is required`, task.ErrInvalid)
	}
	sub.Cmd = *req.Cmd
	if sub.Timeout, err = duration("timeout", req.Timeout, false); err != nil {
		return sub, 0, err
	}
	if req.MaxAttempts != nil {
		if sub.MaxAttempts = *req.MaxAttempts; sub.MaxAttempts < 1 {
			return sub, 0, fmt.Errorf(`%w: field "max_attempts" must be at least 1`, task.ErrInvalid)
		}
	}
	if req.Priority != nil {
		// Checked here in full, not only against 0 (which a Submission
		// reads as the default): one message for every wrong number.
		if sub.Priority = *req.Priority; sub.Priority < task.MinPriority || sub.Priority > task.MaxPriority {
			return sub, 0, fmt.Errorf(`%w: field "priority" must be from %d (most urgent) to %d`, task.ErrInvalid, task.MinPriority, task.MaxPriority)
		}
	}
	sub.Requires = req.Requires
	if req.RunAt != nil && req.Delay != nil {
		return sub, 0, fmt.Errorf(`%w: fields "run_at" and "delay" both say when to run; give one`, task.ErrInvalid)
	}
	if req.RunAt != nil {
		if sub.RunAt, err = time.Parse(time.RFC3339, *req.RunAt); err != nil {
			return sub, 0, fmt.Errorf(`%w: field "run_at" must be an RFC 3339 time such as "2026-12-01T09:30:00Z"`, task.ErrInvalid)
		}
	}
	if sub.Delay, err = duration("delay", req.Delay, true); err != nil {
		return sub, 0, err
	}
	for i, o := range req.RetryOn {
		if !slices.Contains(task.Retryable, task.Outcome(o)) {
			return sub, 0, fmt.Errorf(`%w: field "retry_on" has %q; it lists outcomes to retry, from %s`, task.ErrInvalid, o, quoted(task.Retryable))
		}
		if slices.Contains(req.RetryOn[:i], o) {
			return sub, 0, fmt.Errorf(`%w: field "retry_on" lists %q twice`, task.ErrInvalid, o)
		}
		sub.RetryOn = append(sub.RetryOn, task.Outcome(o))
	}
	if sub.Backoff, err = duration("backoff", req.Backoff, false); err != nil {
		return sub, 0, err
	}
	if sub.MaxBackoff, err = duration("max_backoff", req.MaxBackoff, false); err != nil {
		return sub, 0, err
	}
	return sub, wait, nil
}

// duration reads the Go duration of an optional field; absent is 0, which a
// Submission reads as the default, so an explicit 0 is refused unless it
// means what it says (a delay of 0s runs now).
func duration(field string, v *string, zeroOK bool) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(*v)
	if err != nil || d < 0 || d == 0 && !zeroOK {
		want := "a positive duration"
		if zeroOK {
			want = "a duration of 0s or more"
		}
		return 0, fmt.Errorf(`%w: field %q must be %s such as "30s" or "5m"`, task.ErrInvalid, field, want)
	}
	return d, nil
}

// quoted lists outcomes as a reader would type them: "failed", "timed_out".
func quoted(outcomes []task.Outcome) string {
	q := make([]string, len(outcomes))
	for i, o := range outcomes {
		q[i] = strconv.Quote(string(o))
	}
	return strings.Join(q, ", ")
}

// checkQuery refuses query parameters other than the allowed ones, and any
// given twice: a typo such as ?wiat=10s should not be silently ignored.
func checkQuery(r *http.Request, allowed ...string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return fmt.Errorf("%w: the query string is malformed", task.ErrInvalid)
	}
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return fmt.Errorf("%w: unknown query parameter %q; %s takes none", task.ErrInvalid, k, r.URL.Path)
			}
			return fmt.Errorf("%w: unknown query parameter %q; use %s", task.ErrInvalid, k, strings.Join(allowed, ", "))
		}
		if len(v) > 1 {
			return fmt.Errorf("%w: query parameter %q is given %d times", task.ErrInvalid, k, len(v))
		}
	}
	return nil
}

// taskID is the {id} of a task path, checked: IDs are UUIDs, so anything
// long or odd is a mistake (or a probe), answered 400 without a lookup.
func taskID(r *http.Request) (string, error) {
	id := mux.Vars(r)["id"]
	if len(id) > maxTaskIDLen || strings.ContainsFunc(id, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	}) {
		return "", fmt.Errorf("%w: a task ID is 1-%d characters of A-Z a-z 0-9 - _", task.ErrInvalid, maxTaskIDLen)
	}
	return id, nil
}

const maxTaskIDLen = 64

func (a *api) getTask(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "wait"); err != nil {
		a.writeError(w, err)
		return
	}
	wait, err := a.waitParam(r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	id, err := taskID(r)
	if err != nil {
		a.writeError(w, err)
		return
	}
	t, err := a.d.Get(r.Context(), id)
	if err != nil {
		a.writeError(w, err)
		return
	}
	if wait > 0 && !t.Status.Final() {
		t = a.wait(r, id, wait, t)
	}
	writeJSON(w, http.StatusOK, toTaskJSON(t, true))
}

// wait blocks until the task is final or d passes, and returns it as it is
// then (or as it was, if reading it fails).
func (a *api) wait(r *http.Request, id string, d time.Duration, was task.Task) task.Task {
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	t, err := a.d.Wait(ctx, id)
	if err != nil {
		return was
	}
	return t
}

func (a *api) waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > a.maxWait {
		return 0, fmt.Errorf("%w: wait must be a duration between 0s and %s, such as 10s", task.ErrInvalid, a.maxWait)
	}
	return d, nil
}

func (a *api) cancelTask(w http.ResponseWriter, r *http.Request) {
	if t, ok := a.taskAction(w, r, a.d.Cancel); ok {
		writeJSON(w, http.StatusOK, toTaskJSON(t, true))
	}
}

// retryTask runs a final task again (Dispatcher.Retry): 202 with the task,
// queued once more, as POST /tasks answers a new one.
func (a *api) retryTask(w http.ResponseWriter, r *http.Request) {
	if t, ok := a.taskAction(w, r, a.d.Retry); ok {
		w.Header().Set("Location", "/tasks/"+t.ID)
		writeJSON(w, http.StatusAccepted, toTaskJSON(t, true))
	}
}

// taskAction checks a POST /tasks/{id}/... request (a valid ID, no query)
// and does it; on any error it has answered, and ok is false.
func (a *api) taskAction(w http.ResponseWriter, r *http.Request, do func(context.Context, string) (task.Task, error)) (t task.Task, ok bool) {
	id, err := taskID(r)
	if err == nil {
		err = checkQuery(r)
	}
	if err == nil {
		t, err = do(r.Context(), id)
	}
	if err != nil {
		a.writeError(w, err)
		return t, false
	}
	return t, true
}

// queueJSON is GET /queue: what waits in the master, and why.
type queueJSON struct {
	Queued     int            `json:"queued"`
	ByPriority map[string]int `json:"by_priority"` // "1" to "5", every one present
	Scheduled  int            `json:"scheduled"`
	NextRunAt  *time.Time     `json:"next_run_at"` // null with nothing scheduled
	Groups     []groupJSON    `json:"groups"`      // the most queued first
}

// groupJSON is the queued tasks that require the same labels.
type groupJSON struct {
	Requires   map[string]string `json:"requires"` // {}: any worker
	Queued     int               `json:"queued"`
	Eligible   int               `json:"eligible"`    // connected workers that could run them
	WaitingFor *string           `json:"waiting_for"` // null while some worker could
}

func (a *api) getQueue(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r); err != nil {
		a.writeError(w, err)
		return
	}
	b := a.d.Backlog()
	out := queueJSON{Queued: b.Queued, ByPriority: make(map[string]int, len(b.ByPriority)), Scheduled: b.Scheduled,
		NextRunAt: nonZero(b.NextRunAt), Groups: make([]groupJSON, 0, len(b.Groups))}
	for i, n := range b.ByPriority {
		out.ByPriority[strconv.Itoa(i+task.MinPriority)] = n
	}
	for _, g := range b.Groups {
		out.Groups = append(out.Groups, groupJSON{Requires: orEmpty(g.Requires), Queued: g.Queued, Eligible: g.Eligible, WaitingFor: nonEmpty(g.WaitingFor)})
	}
	writeJSON(w, http.StatusOK, out)
}

type listJSON struct {
	Tasks      []taskJSON `json:"tasks"`
	NextCursor *string    `json:"next_cursor"` // null on the last page
}

func (a *api) listTasks(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "status", "worker", "cursor", "limit"); err != nil {
		a.writeError(w, err)
		return
	}
	q := r.URL.Query()
	var query dispatch.Query
	if v := q.Get("status"); v != "" {
		for _, st := range strings.Split(v, ",") {
			if !slices.Contains(task.Statuses, task.Status(st)) {
				a.writeError(w, fmt.Errorf("%w: unknown status %q; use one of %v", task.ErrInvalid, st, task.Statuses))
				return
			}
			query.Statuses = append(query.Statuses, task.Status(st))
		}
	}
	query.WorkerID = q.Get("worker")
	query.Cursor = q.Get("cursor")
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			a.writeError(w, fmt.Errorf("%w: limit must be a number from 1 to 1000", task.ErrInvalid))
			return
		}
		query.Limit = n
	}
	page, err := a.d.List(r.Context(), query)
	if err != nil {
		a.writeError(w, err)
		return
	}
	out := listJSON{Tasks: make([]taskJSON, 0, len(page.Tasks)), NextCursor: nonEmpty(page.Next)}
	for _, t := range page.Tasks {
		out.Tasks = append(out.Tasks, toTaskJSON(t, false))
	}
	writeJSON(w, http.StatusOK, out)
}

type workerJSON struct {
	ID          string            `json:"id"`
	State       string            `json:"state"` // active or draining
	Slots       int               `json:"slots"`
	Labels      map[string]string `json:"labels"` // {} when none
	ConnectedAt time.Time         `json:"connected_at"`
	LastSeen    time.Time         `json:"last_seen"`
	Running     int               `json:"running"`
	Completed   int               `json:"completed"`
	Next        bool              `json:"next"` // first in line for the next task
}

type workersJSON struct {
	WorkerCount int          `json:"workerCount"` // the old clients read this name
	Workers     []workerJSON `json:"workers"`
}

func (a *api) listWorkers(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r); err != nil {
		a.writeError(w, err)
		return
	}
	ws := a.d.Workers()
	out := workersJSON{WorkerCount: len(ws), Workers: make([]workerJSON, 0, len(ws))}
	for _, x := range ws {
		state := "active"
		if x.Draining {
			state = "draining"
		}
		out.Workers = append(out.Workers, workerJSON{ID: x.ID, State: state, Slots: x.Slots, Labels: orEmpty(x.Labels), ConnectedAt: x.ConnectedAt,
			LastSeen: x.LastSeen, Running: x.Running, Completed: x.Completed, Next: x.Next})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := a.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// decode reads exactly one JSON object with only known fields from a body
// of bounded size. Errors wrap task.ErrInvalid, or errTooLarge.
func (a *api) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return fmt.Errorf("%w: request body is larger than %d bytes", errTooLarge, a.maxBody)
	case err != nil:
		return fmt.Errorf("%w: reading the request body: %v", task.ErrInvalid, err)
	}
	return decodeBody(body, v)
}

// decodeBody is decode's checks on a body already read.
func decodeBody(body []byte, v any) error {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD: a command
	// other than the one sent. Refuse it instead.
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: request body is not valid UTF-8", task.ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one value: `{"cmd":"a"}{"cmd":"b"}` is a mistake, not two tasks.
		if err = dec.Decode(new(json.RawMessage)); err == io.EOF {
			return nil
		}
		return fmt.Errorf("%w: unexpected data after the JSON object", task.ErrInvalid)
	}
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf(`%w: request body is empty; send {"cmd": "..."}`, task.ErrInvalid)
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: request body is not valid JSON", task.ErrInvalid)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Errorf("%w: request body must be a JSON object", task.ErrInvalid)
		}
		// The type of a map value or list item is not the field's: say
		// what the whole field must be.
		if shape, ok := fieldShapes[typeErr.Field]; ok {
			return fmt.Errorf("%w: field %q must be %s", task.ErrInvalid, typeErr.Field, shape)
		}
		return fmt.Errorf("%w: field %q must be a %s", task.ErrInvalid, typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// json reports an unknown field only as text: "json: unknown field \"x\"".
		return fmt.Errorf("%w: %s", task.ErrInvalid, trimJSONPrefix(err.Error()))
	default:
		return fmt.Errorf("%w: request body is not a valid task", task.ErrInvalid)
	}
}

var errTooLarge = errors.New("too large")

// errTooManyStreams: as many GET /events streams are open as the master
// serves at once (Params.MaxEventStreams).
var errTooManyStreams = errors.New("too many event streams are open")

// retryAfterSeconds is the Retry-After of a 429 for a full queue or too
// many event streams, and of a 503 while the master is unavailable.
const retryAfterSeconds = 5

// fieldShapes describes the fields of POST /tasks that are no scalar.
var fieldShapes = map[string]string{
	"requires": `an object of string values, such as {"gpu": "nvidia"}`,
	"retry_on": `a list of strings, such as ["failed", "timed_out"]`,
}

// jsonKind names, for a client, the JSON type a Go kind is decoded from.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "whole number"
	case strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "bool":
		return "boolean"
	}
	return "string"
}

func trimJSONPrefix(s string) string { return strings.TrimPrefix(s, "json: ") }

type errorBody struct {
	Error string `json:"error"`
}

// writeError maps an error to its status code, once for the whole API.
// Internal errors are logged here and shown to the client without detail.
func (a *api) writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errUnauthenticated):
		code = http.StatusUnauthorized
	case errors.Is(err, task.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, errTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, task.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, task.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, task.ErrClosed):
		code = http.StatusServiceUnavailable
	case errors.Is(err, task.ErrUnavailable):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	case errors.Is(err, errTooManyStreams):
		code = http.StatusTooManyRequests
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	case errors.Is(err, task.ErrFull):
		code = http.StatusTooManyRequests
		// Workers take tasks in seconds; a client that waits this long
		// usually finds room, and does not hammer a full master meanwhile.
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		a.log.Error("request failed", "err", err)
		msg = "internal error"
	}
	writeJSON(w, code, errorBody{msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")  // read by people with curl as much as by programs
	enc.SetEscapeHTML(false) // "<token>", not "\u003ctoken\u003e": this is no HTML page
	_ = enc.Encode(v)        // the client went away; nothing to do
}
