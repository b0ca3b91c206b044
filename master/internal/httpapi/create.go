package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

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
	writeTask(w, code, toTaskJSON(t, true))
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
	// An empty key is refused, not taken for none: the client meant to send
	// one, and its retries would each make a task.
	keys := r.Header.Values("Idempotency-Key")
	sub := dispatch.Submission{IdempotencyKey: r.Header.Get("Idempotency-Key")}
	if len(keys) > 1 || len(keys) == 1 && keys[0] == "" || len(sub.IdempotencyKey) > maxKeyLen ||
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
		// Checked here, not only by Normalize: 0001-01-01T00:00:00Z is Go's
		// zero time, which a Submission reads as no run_at at all.
		if !task.Keepable(sub.RunAt) {
			return sub, 0, fmt.Errorf(`%w: field "run_at" must be a time after 1970 and before %s`, task.ErrInvalid, task.LastTime.Format(time.RFC3339))
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
