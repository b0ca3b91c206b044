// Package client is a small client of the master's REST API, for the
// container tests and the demo. It talks only HTTP: what a user's curl sees.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Task is a task as GET /tasks/{id} shows it. List entries leave out
// stdout and stderr.
type Task struct {
	ID          string  `json:"id"`
	Cmd         string  `json:"cmd"`
	Status      string  `json:"status"`
	Attempts    int     `json:"attempts"` // deliveries to workers so far
	MaxAttempts int     `json:"max_attempts"`
	Timeout     string  `json:"timeout"` // a Go duration, e.g. "30s"
	WorkerID    *string `json:"worker_id"`
	ExitCode    *int    `json:"exit_code"`
	Stdout      string  `json:"stdout,omitempty"` // left out of list entries
	Stderr      string  `json:"stderr,omitempty"`
	Error       *string `json:"error"`

	StdoutTruncated bool       `json:"stdout_truncated"`
	StderrTruncated bool       `json:"stderr_truncated"`
	AttemptBase     int        `json:"attempt_base"` // attempts made before the last manual retry
	IdempotencyKey  *string    `json:"idempotency_key"`
	CreatedAt       time.Time  `json:"created_at"`
	AssignedAt      *time.Time `json:"assigned_at"`
	StartedAt       *time.Time `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at"`
	History         []Attempt  `json:"history"` // one entry per delivery, oldest first

	Priority   int               `json:"priority"` // 1 (most urgent) to 5
	Requires   map[string]string `json:"requires"` // labels a worker must have to run it
	RunAt      *time.Time        `json:"run_at"`   // when a scheduled task is queued
	RetryOn    []string          `json:"retry_on"` // failed, timed_out
	Backoff    string            `json:"backoff"`  // "" without retry_on
	MaxBackoff string            `json:"max_backoff"`
	WaitingFor string            `json:"waiting_for"` // why a live task waits, e.g. "no connected worker has gpu=nvidia"

	// Replayed is set by SubmitWith from the Idempotent-Replayed header: the
	// key was seen before and this is the task it made then.
	Replayed bool `json:"-"`

	// raw is the task's JSON as the master sent it. MarshalJSON gives it
	// back, so a task printed as JSON is the API's document: null where the
	// API says null (backoff, waiting_for), "" where it says "" (stdout).
	raw json.RawMessage
}

// UnmarshalJSON decodes a task and keeps its JSON for MarshalJSON.
func (t *Task) UnmarshalJSON(b []byte) error {
	type plain Task
	if err := json.Unmarshal(b, (*plain)(t)); err != nil {
		return err
	}
	t.raw = append(json.RawMessage(nil), b...)
	return nil
}

// MarshalJSON is the task's JSON as the master sent it, or, for a task
// made in Go, its fields.
func (t Task) MarshalJSON() ([]byte, error) {
	if t.raw != nil {
		return t.raw, nil
	}
	type plain Task
	return json.Marshal(plain(t))
}

// Attempt is one delivery of a task to a worker.
type Attempt struct {
	Attempt    int        `json:"attempt"` // 1-based
	WorkerID   string     `json:"worker_id"`
	Outcome    string     `json:"outcome"` // running, succeeded, failed, timed_out, canceled or lost
	ExitCode   *int       `json:"exit_code"`
	Error      *string    `json:"error"`
	Duplicate  bool       `json:"duplicate"` // the result arrived after the task was already final
	AssignedAt *time.Time `json:"assigned_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// Final reports whether the task has reached a state it never leaves.
func (t Task) Final() bool {
	switch t.Status {
	case "succeeded", "failed", "timed_out", "canceled":
		return true
	}
	return false
}

// Duplicates counts the deliveries whose result arrived after the task was
// already final.
func (t Task) Duplicates() int {
	n := 0
	for _, a := range t.History {
		if a.Duplicate {
			n++
		}
	}
	return n
}

// Worker returns the worker ID, or "" when none.
func (t Task) Worker() string {
	if t.WorkerID == nil {
		return ""
	}
	return *t.WorkerID
}

// Workers is GET /workers.
type Workers struct {
	WorkerCount int `json:"workerCount"`
	Workers     []struct {
		ID          string            `json:"id"`
		State       string            `json:"state"` // active or draining
		Slots       int               `json:"slots"`
		Labels      map[string]string `json:"labels"`
		ConnectedAt time.Time         `json:"connected_at"`
		LastSeen    time.Time         `json:"last_seen"`
		Running     int               `json:"running"`
		Completed   int               `json:"completed"`
		Next        bool              `json:"next"` // first in line for the next task
	} `json:"workers"`
}

// Has reports whether the worker with this ID is connected.
func (w Workers) Has(id string) bool {
	for _, x := range w.Workers {
		if x.ID == id {
			return true
		}
	}
	return false
}

// StateOf returns the state of the worker with this ID, or "" when it is
// not connected.
func (w Workers) StateOf(id string) string {
	for _, x := range w.Workers {
		if x.ID == id {
			return x.State
		}
	}
	return ""
}

// IDs lists the workers' IDs in rotation order.
func (w Workers) IDs() []string {
	ids := make([]string, 0, len(w.Workers))
	for _, x := range w.Workers {
		ids = append(ids, x.ID)
	}
	return ids
}

// Client calls one master.
type Client struct {
	Base  string // e.g. http://127.0.0.1:9092
	HTTP  *http.Client
	token string // sent as a bearer token when set
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends tok as "Authorization: Bearer <tok>" on every request,
// for a master with MASTER_API_TOKEN set. An empty tok sends nothing.
func WithToken(tok string) Option { return func(c *Client) { c.token = tok } }

// New returns a client of the master at base.
func New(base string, opts ...Option) *Client {
	c := &Client{Base: base, HTTP: &http.Client{Timeout: 10 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Submit posts a command and returns the accepted task.
func (c *Client) Submit(ctx context.Context, cmd string) (Task, error) {
	body, _ := json.Marshal(map[string]string{"cmd": cmd})
	var t Task
	err := c.do(ctx, http.MethodPost, "/tasks", body, http.StatusAccepted, &t)
	return t, err
}

// Submit is a POST /tasks with every option. Zero fields are left out.
// Durations are strings, sent as given, as Timeout always was.
type Submit struct {
	Cmd            string
	Timeout        string        // a Go duration, e.g. "30s"
	MaxAttempts    int           // deliveries before the master gives up
	IdempotencyKey string        // sent as the Idempotency-Key header
	Wait           time.Duration // ?wait=: the master answers when the task is final or this passes

	Priority   int               // 1 (most urgent) to 5; 0: the master's default, 3
	Requires   map[string]string // labels a worker must have to run it
	RunAt      time.Time         // a delayed run: scheduled until then
	Delay      string            // a delayed run: scheduled for this long (not with RunAt)
	RetryOn    []string          // failed, timed_out: run again after these, up to MaxAttempts
	Backoff    string            // the first wait before a retry, doubled each time
	MaxBackoff string            // the longest wait before a retry
}

// SubmitWith posts a task. It returns the task and the HTTP status: 202 for
// a new task, 200 for one an earlier request with the same idempotency key
// made (then Task.Replayed is set). Any other status is an error, and is
// still returned, so a caller can tell a 409 from a 400.
func (c *Client) SubmitWith(ctx context.Context, s Submit) (Task, int, error) {
	req := map[string]any{"cmd": s.Cmd}
	if s.Timeout != "" {
		req["timeout"] = s.Timeout
	}
	if s.MaxAttempts != 0 {
		req["max_attempts"] = s.MaxAttempts
	}
	if s.Priority != 0 {
		req["priority"] = s.Priority
	}
	if s.Requires != nil {
		req["requires"] = s.Requires
	}
	if !s.RunAt.IsZero() {
		req["run_at"] = s.RunAt.Format(time.RFC3339Nano)
	}
	for k, v := range map[string]string{"delay": s.Delay, "backoff": s.Backoff, "max_backoff": s.MaxBackoff} {
		if v != "" {
			req[k] = v
		}
	}
	if s.RetryOn != nil {
		req["retry_on"] = s.RetryOn
	}
	body, _ := json.Marshal(req)
	path := "/tasks"
	if s.Wait > 0 {
		path += "?wait=" + s.Wait.String()
	}
	var h http.Header
	if s.IdempotencyKey != "" {
		h = http.Header{"Idempotency-Key": {s.IdempotencyKey}}
	}
	var t Task
	code, got, err := c.send(ctx, http.MethodPost, path, h, s.Wait, body, &t, http.StatusAccepted, http.StatusOK)
	t.Replayed = got.Get("Idempotent-Replayed") == "true"
	return t, code, err
}

// Get returns a task.
func (c *Client) Get(ctx context.Context, id string) (Task, error) {
	var t Task
	err := c.do(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id), nil, http.StatusOK, &t)
	return t, err
}

// GetWait returns a task once it is final, or as it is when wait has passed
// (GET /tasks/{id}?wait=).
func (c *Client) GetWait(ctx context.Context, id string, wait time.Duration) (Task, error) {
	var t Task
	_, _, err := c.send(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id)+"?wait="+wait.String(), nil, wait, nil, &t, http.StatusOK)
	return t, err
}

// Cancel deletes a task. It returns the canceled task and 200, or a zero
// Task and 409 when the task was already final; both are answers, not
// errors. Any other status is an error, returned with its code.
func (c *Client) Cancel(ctx context.Context, id string) (Task, int, error) {
	var t Task
	code, _, err := c.send(ctx, http.MethodDelete, "/tasks/"+url.PathEscape(id), nil, 0, nil, &t, http.StatusOK, http.StatusConflict)
	if code == http.StatusConflict {
		t = Task{}
	}
	return t, code, err
}

// Retry runs a final task again (POST /tasks/{id}/retry). It returns the
// task, queued or scheduled again, and 202, or a zero Task and 409 while the
// task is not final; both are answers, not errors. Any other status is an
// error, returned with its code.
func (c *Client) Retry(ctx context.Context, id string) (Task, int, error) {
	var t Task
	code, _, err := c.send(ctx, http.MethodPost, "/tasks/"+url.PathEscape(id)+"/retry", nil, 0, nil, &t, http.StatusAccepted, http.StatusConflict)
	if code == http.StatusConflict {
		t = Task{}
	}
	return t, code, err
}

// Queue is GET /queue: what waits in the master.
type Queue struct {
	Queued     int         `json:"queued"`
	ByPriority map[int]int `json:"by_priority"` // of Queued, by priority 1 to 5
	Scheduled  int         `json:"scheduled"`
	NextRunAt  *time.Time  `json:"next_run_at"` // nil with nothing scheduled
	Groups     []Group     `json:"groups"`      // the most queued first
}

// Group is the queued tasks that require the same labels.
type Group struct {
	Requires   map[string]string `json:"requires"` // empty: any worker
	Queued     int               `json:"queued"`
	Eligible   int               `json:"eligible"`    // connected workers that could run them
	WaitingFor string            `json:"waiting_for"` // set when none could
}

// Queue returns what waits in the master.
func (c *Client) Queue(ctx context.Context) (Queue, error) {
	var q Queue
	err := c.do(ctx, http.MethodGet, "/queue", nil, http.StatusOK, &q)
	return q, err
}

// List returns one page of GET /tasks, newest first, and the cursor of the
// next page ("" on the last). query takes status (comma-separated), worker,
// cmd (a substring of the command), limit and cursor.
func (c *Client) List(ctx context.Context, query url.Values) ([]Task, string, error) {
	var page struct {
		Tasks      []Task  `json:"tasks"`
		NextCursor *string `json:"next_cursor"`
	}
	path := "/tasks"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	if err := c.do(ctx, http.MethodGet, path, nil, http.StatusOK, &page); err != nil {
		return nil, "", err
	}
	next := ""
	if page.NextCursor != nil {
		next = *page.NextCursor
	}
	return page.Tasks, next, nil
}

// Pages yields the pages of GET /tasks for query, newest first, following
// next_cursor to the last page. An error ends it, yielded with a nil page.
// A loop that stops early reads no further page. query is not changed.
func (c *Client) Pages(ctx context.Context, query url.Values) iter.Seq2[[]Task, error] {
	return func(yield func([]Task, error) bool) {
		q := url.Values{}
		maps.Copy(q, query) // Set below replaces values, never appends to them
		for {
			page, next, err := c.List(ctx, q)
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(page, nil) || next == "" {
				return
			}
			q.Set("cursor", next)
		}
	}
}

// ListAll returns every task GET /tasks lists for query, reading all its
// pages, newest first.
func (c *Client) ListAll(ctx context.Context, query url.Values) ([]Task, error) {
	var all []Task
	for page, err := range c.Pages(ctx, query) {
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
	}
	return all, nil
}

// Workers returns the connected workers.
func (c *Client) Workers(ctx context.Context) (Workers, error) {
	var w Workers
	err := c.do(ctx, http.MethodGet, "/workers", nil, http.StatusOK, &w)
	return w, err
}

// WaitFinal polls a task until it is final or ctx ends.
func (c *Client) WaitFinal(ctx context.Context, id string) (Task, error) {
	var last Task
	err := Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		t, err := c.Get(ctx, id)
		last = t
		return err == nil && t.Final(), nil
	})
	if err != nil {
		return last, fmt.Errorf("task %s not final (last status %q): %w", id, last.Status, err)
	}
	return last, nil
}

// WaitWorkers polls until exactly n workers are connected, and returns them.
// A master that refuses the token (401, 403) ends the wait at once: it will
// not change its answer. Other errors (no master yet) are polled through,
// and the last one is named if the wait runs out.
func (c *Client) WaitWorkers(ctx context.Context, n int) (Workers, error) {
	var last Workers
	var lastErr error
	err := Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		w, err := c.Workers(ctx)
		if code := StatusOf(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
			return false, err
		}
		last, lastErr = w, err
		return err == nil && w.WorkerCount == n, nil
	})
	switch {
	case err == nil:
		return last, nil
	case ctx.Err() == nil: // the master refused the token
		return last, fmt.Errorf("want %d workers: %w", n, err)
	case lastErr != nil && !errors.Is(lastErr, ctx.Err()):
		return last, fmt.Errorf("want %d workers, have %v: %w (last try: %v)", n, last.IDs(), err, lastErr)
	default:
		return last, fmt.Errorf("want %d workers, have %v: %w", n, last.IDs(), err)
	}
}

// Poll calls cond every interval until it returns true or an error, or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	_, _, err := c.send(ctx, method, path, nil, 0, body, out, want)
	return err
}

// send makes one request. A status in want decodes the body into out, except
// a 409, whose body is an error message; any other status is an error. The
// status is 0 when there was no answer.
// wait is how long the server may hold the request (?wait=), on top of the
// client's usual timeout.
func (c *Client) send(ctx context.Context, method, path string, h http.Header, wait time.Duration, body []byte, out any, want ...int) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.HTTP
	if wait > 0 && hc.Timeout > 0 {
		long := *hc
		long.Timeout += wait
		hc = &long
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, err
	}
	if !slices.Contains(want, resp.StatusCode) {
		return resp.StatusCode, resp.Header, newAPIError(method, path, resp, data)
	}
	if resp.StatusCode == http.StatusConflict {
		return resp.StatusCode, resp.Header, nil
	}
	return resp.StatusCode, resp.Header, json.Unmarshal(data, out)
}
