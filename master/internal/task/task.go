// Package task holds the master's domain types: a task, its states and the
// errors the transports map to status codes. It does no I/O.
package task

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is where a task is in its life. Queued and Running are live; the
// others are final and never change again.
type Status string

const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
)

// Final reports whether no further change can happen to a task in s.
func (s Status) Final() bool { return s == StatusSucceeded || s == StatusFailed }

// Sentinel errors, wrapped with %w and mapped once by each transport.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid request")
	ErrConflict = errors.New("conflict")
	ErrClosed   = errors.New("shutting down")
)

// Task is one shell command and everything known about its run.
type Task struct {
	ID         string
	Cmd        string
	Status     Status
	Attempts   int    // deliveries to a worker so far
	WorkerID   string // the worker that ran it, or is running it
	ExitCode   *int   // nil until a worker reports
	Stdout     string
	Stderr     string
	StdoutCut  bool // the worker kept only the first part of stdout
	StderrCut  bool
	Error      string // why the command did not run to an exit status
	CreatedAt  time.Time
	AssignedAt time.Time // when the master last sent it to a worker
	StartedAt  time.Time // as measured by the worker
	FinishedAt time.Time
}

// Result is what a worker reports about one run of a task.
type Result struct {
	TaskID     string
	WorkerID   string
	InstanceID string
	Attempt    int
	ExitCode   int
	Stdout     []byte
	Stderr     []byte
	StdoutCut  bool
	StderrCut  bool
	StartedAt  time.Time
	FinishedAt time.Time
	Error      string
}

// Assignment is what the master sends a worker: the part of a task it needs.
type Assignment struct {
	ID      string
	Cmd     string
	Timeout time.Duration
	Attempt int
}

// ValidateCmd checks a command before it is accepted.
func ValidateCmd(cmd string, maxBytes int) error {
	switch {
	case strings.TrimSpace(cmd) == "":
		return fmt.Errorf("%w: cmd is required and must not be blank", ErrInvalid)
	case len(cmd) > maxBytes:
		return fmt.Errorf("%w: cmd is %d bytes; the limit is %d", ErrInvalid, len(cmd), maxBytes)
	case !utf8.ValidString(cmd):
		return fmt.Errorf("%w: cmd is not valid UTF-8", ErrInvalid)
	case strings.ContainsRune(cmd, 0):
		return fmt.Errorf("%w: cmd contains a NUL byte", ErrInvalid)
	}
	return nil
}
