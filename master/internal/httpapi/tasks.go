package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

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

// maxIgnoredBody is the longest body checkNoBody lets through: room for an
// empty JSON object with some white space; anything longer asks for more.
const maxIgnoredBody = 64

// checkNoBody refuses a body on a route that takes none (cancel, retry),
// rather than ignore it: POST /tasks/{id}/retry with {"max_attempts": 5}
// would otherwise run the task again as it was, as if asked to. An empty
// body, white space or {} asks nothing and is let through, as some
// clients send one with every POST.
func checkNoBody(r *http.Request) error {
	if r.Body == nil {
		return nil
	}
	// One byte past the limit is read, so that a body longer than it is
	// refused whole rather than judged by its start: 64 spaces, or a {},
	// followed by {"max_attempts": 5} would pass as empty.
	b, err := io.ReadAll(io.LimitReader(r.Body, maxIgnoredBody+1))
	if err != nil {
		return fmt.Errorf("%w: reading the body: %v", task.ErrInvalid, err)
	}
	var empty map[string]json.RawMessage
	if len(b) <= maxIgnoredBody && (len(bytes.TrimSpace(b)) == 0 || json.Unmarshal(b, &empty) == nil && empty != nil && len(empty) == 0) {
		return nil
	}
	return fmt.Errorf("%w: %s %s takes no body; it acts on the task as it was submitted", task.ErrInvalid, r.Method, r.URL.Path)
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
	writeTask(w, http.StatusOK, toTaskJSON(t, true))
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
		writeTask(w, http.StatusOK, toTaskJSON(t, true))
	}
}

// retryTask runs a final task again (Dispatcher.Retry): 202 with the task,
// queued once more, as POST /tasks answers a new one.
func (a *api) retryTask(w http.ResponseWriter, r *http.Request) {
	if t, ok := a.taskAction(w, r, a.d.Retry); ok {
		w.Header().Set("Location", "/tasks/"+t.ID)
		writeTask(w, http.StatusAccepted, toTaskJSON(t, true))
	}
}

// taskAction checks a request that acts on a task (a valid ID, no query,
// no body) and does it; on any error it has answered, and ok is false.
func (a *api) taskAction(w http.ResponseWriter, r *http.Request, do func(context.Context, string) (task.Task, error)) (t task.Task, ok bool) {
	id, err := taskID(r)
	if err == nil {
		err = checkQuery(r)
	}
	if err == nil {
		err = checkNoBody(r)
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

// maxCmdFilter bounds ?cmd=: a search text, not a command to match whole.
const maxCmdFilter = 200

type listJSON struct {
	Tasks      []taskJSON `json:"tasks"`
	NextCursor *string    `json:"next_cursor"` // null on the last page
}

func (a *api) listTasks(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "status", "worker", "cmd", "cursor", "limit"); err != nil {
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
			// Each status once: a repeated one adds nothing to the filter,
			// and every one is a parameter of the store's query.
			if !slices.Contains(query.Statuses, task.Status(st)) {
				query.Statuses = append(query.Statuses, task.Status(st))
			}
		}
	}
	query.WorkerID = q.Get("worker")
	query.Cmd = q.Get("cmd")
	if n := utf8.RuneCountInString(query.Cmd); n > maxCmdFilter {
		a.writeError(w, fmt.Errorf("%w: cmd is a search text of at most %d characters, not %d", task.ErrInvalid, maxCmdFilter, n))
		return
	}
	// No command holds a NUL (POST /tasks refuses it), and the store would
	// cut the text there, matching what does not contain it.
	if strings.ContainsRune(query.Cmd, 0) {
		a.writeError(w, fmt.Errorf("%w: cmd must not contain a NUL byte", task.ErrInvalid))
		return
	}
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
