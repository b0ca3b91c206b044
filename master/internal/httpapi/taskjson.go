package httpapi

import (
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// taskJSON is a task as the API shows it. Fields not known yet, or that do
// not apply (run_at of a task never scheduled, backoff without retry_on),
// are null rather than absent, and empty sets are {} or [], so a reader of
// `curl` output sees the whole shape.
// Only stdout and stderr are left out, in list entries, to keep pages small,
// and the history, which the store does not list: it is null there, never
// [], which would say the task never went to a worker.
type taskJSON struct {
	ID              string            `json:"id"`
	Cmd             string            `json:"cmd"`
	Status          string            `json:"status"`
	Attempts        int               `json:"attempts"`
	MaxAttempts     int               `json:"max_attempts"`
	AttemptBase     int               `json:"attempt_base"` // attempts made before the last manual retry; max_attempts counts from here
	Timeout         string            `json:"timeout"`
	WorkerID        *string           `json:"worker_id"`
	ExitCode        *int              `json:"exit_code"`
	Stdout          *string           `json:"stdout,omitempty"`
	Stderr          *string           `json:"stderr,omitempty"`
	StdoutTruncated bool              `json:"stdout_truncated"`
	StderrTruncated bool              `json:"stderr_truncated"`
	Error           *string           `json:"error"`
	IdempotencyKey  *string           `json:"idempotency_key"`
	Priority        int               `json:"priority"`
	Requires        map[string]string `json:"requires"`    // {} when it runs anywhere
	RunAt           *time.Time        `json:"run_at"`      // null for a task never scheduled
	RetryOn         []string          `json:"retry_on"`    // [] without a retry policy
	Backoff         *string           `json:"backoff"`     // null without a retry policy
	MaxBackoff      *string           `json:"max_backoff"` // null without a retry policy
	WaitingFor      *string           `json:"waiting_for"` // why a live task waits; null when it does not
	CreatedAt       time.Time         `json:"created_at"`
	AssignedAt      *time.Time        `json:"assigned_at"`
	StartedAt       *time.Time        `json:"started_at"`
	FinishedAt      *time.Time        `json:"finished_at"`
	History         []attemptJSON     `json:"history"`
}

// attemptJSON is one delivery of a task to a worker.
type attemptJSON struct {
	Attempt    int        `json:"attempt"`
	WorkerID   string     `json:"worker_id"`
	Outcome    string     `json:"outcome"`
	ExitCode   *int       `json:"exit_code"`
	Error      *string    `json:"error"`
	Duplicate  bool       `json:"duplicate"`
	AssignedAt *time.Time `json:"assigned_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// toTaskJSON converts t; withOutput includes stdout, stderr and the history
// (a list entry has none of them).
func toTaskJSON(t task.Task, withOutput bool) taskJSON {
	j := taskJSON{
		ID:              t.ID,
		Cmd:             t.Cmd,
		Status:          string(t.Status),
		Attempts:        t.Attempts,
		MaxAttempts:     t.MaxAttempts,
		AttemptBase:     t.AttemptBase,
		Timeout:         t.Timeout.String(),
		WorkerID:        nonEmpty(t.WorkerID),
		ExitCode:        t.ExitCode,
		StdoutTruncated: t.StdoutCut,
		StderrTruncated: t.StderrCut,
		Error:           nonEmpty(t.Error),
		IdempotencyKey:  nonEmpty(t.IdempotencyKey),
		Priority:        t.Priority,
		Requires:        orEmpty(t.Requires),
		RunAt:           nonZero(t.RunAt),
		RetryOn:         make([]string, 0, len(t.RetryOn)),
		WaitingFor:      nonEmpty(t.WaitingFor),
		CreatedAt:       t.CreatedAt,
		AssignedAt:      nonZero(t.AssignedAt),
		StartedAt:       nonZero(t.StartedAt),
		FinishedAt:      nonZero(t.FinishedAt),
	}
	for _, o := range t.RetryOn {
		j.RetryOn = append(j.RetryOn, string(o))
	}
	if len(t.RetryOn) > 0 {
		j.Backoff, j.MaxBackoff = nonZeroDuration(t.Backoff), nonZeroDuration(t.MaxBackoff)
	}
	if withOutput {
		// Copies, not &t.Stdout: a pointer into t would move all of t to
		// the heap on every call.
		stdout, stderr := t.Stdout, t.Stderr
		j.Stdout, j.Stderr = &stdout, &stderr
		j.History = make([]attemptJSON, 0, len(t.History))
		for _, a := range t.History {
			j.History = append(j.History, attemptJSON{
				Attempt: a.N, WorkerID: a.WorkerID, Outcome: string(a.Outcome), ExitCode: a.ExitCode,
				Error: nonEmpty(a.Error), Duplicate: a.Duplicate, AssignedAt: nonZero(a.AssignedAt), FinishedAt: nonZero(a.FinishedAt),
			})
		}
	}
	return j
}

// nonEmpty, nonZero and nonZeroDuration allocate only what they return:
// a pointer to their parameter would move it to the heap on every call,
// for the nil ones too (every field of a new task's 202 but one).
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	p := s
	return &p
}

func nonZeroDuration(d time.Duration) *string {
	if d == 0 {
		return nil
	}
	return nonEmpty(d.String())
}

// noLabels is what orEmpty returns for nil: one map for every answer,
// never written to.
var noLabels = map[string]string{}

// orEmpty is m, or an empty map for nil: labels show as {}, never null.
func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return noLabels
	}
	return m
}

func nonZero(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	p := t
	return &p
}
