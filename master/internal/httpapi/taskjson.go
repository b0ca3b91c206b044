package httpapi

import (
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// taskJSON is a task as the API shows it. Every field is always present,
// null until known, so that a reader of `curl` output sees the whole shape.
type taskJSON struct {
	ID              string     `json:"id"`
	Cmd             string     `json:"cmd"`
	Status          string     `json:"status"`
	Attempts        int        `json:"attempts"`
	WorkerID        *string    `json:"worker_id"`
	ExitCode        *int       `json:"exit_code"`
	Stdout          string     `json:"stdout"`
	Stderr          string     `json:"stderr"`
	StdoutTruncated bool       `json:"stdout_truncated"`
	StderrTruncated bool       `json:"stderr_truncated"`
	Error           *string    `json:"error"`
	CreatedAt       time.Time  `json:"created_at"`
	AssignedAt      *time.Time `json:"assigned_at"`
	StartedAt       *time.Time `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at"`
}

func toTaskJSON(t task.Task) taskJSON {
	return taskJSON{
		ID:              t.ID,
		Cmd:             t.Cmd,
		Status:          string(t.Status),
		Attempts:        t.Attempts,
		WorkerID:        nonEmpty(t.WorkerID),
		ExitCode:        t.ExitCode,
		Stdout:          t.Stdout,
		Stderr:          t.Stderr,
		StdoutTruncated: t.StdoutCut,
		StderrTruncated: t.StderrCut,
		Error:           nonEmpty(t.Error),
		CreatedAt:       t.CreatedAt,
		AssignedAt:      nonZero(t.AssignedAt),
		StartedAt:       nonZero(t.StartedAt),
		FinishedAt:      nonZero(t.FinishedAt),
	}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonZero(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
