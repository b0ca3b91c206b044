// Package task holds the master's domain types: a task, its states and the
// errors the transports map to status codes. It does no I/O.
package task

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is where a task is in its life. Scheduled, Queued and Running are
// live; the others are final and never change again.
type Status string

const (
	// StatusScheduled: waiting for its run time (a delayed run, or the
	// backoff before a retry), then queued.
	StatusScheduled Status = "scheduled"
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusTimedOut  Status = "timed_out"
	StatusCanceled  Status = "canceled"
)

// Statuses lists every status, live ones first.
var Statuses = []Status{StatusScheduled, StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusTimedOut, StatusCanceled}

// Final reports whether no further change can happen to a task in s.
func (s Status) Final() bool { return s != StatusScheduled && s != StatusQueued && s != StatusRunning }

// Sentinel errors, wrapped with %w and mapped once by each transport.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid request")
	ErrConflict = errors.New("conflict")
	ErrClosed   = errors.New("shutting down")
	// ErrFull: the master holds as many queued tasks as it may; try later.
	ErrFull = errors.New("queue full")
	// ErrUnavailable: the master cannot take the request now (its database
	// refuses writes: disk full, locked, I/O error); try later. Nothing
	// already accepted is at risk.
	ErrUnavailable = errors.New("unavailable")
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

	Timeout        time.Duration // the worker kills the run after this long
	MaxAttempts    int           // deliveries before a task whose workers keep vanishing (or that keeps failing, with RetryOn) fails
	IdempotencyKey string        // optional; the same key always names this task

	// Scheduling. Priority is 1 (most urgent) to 5; a free worker takes the
	// most urgent task it can run, oldest first within a priority.
	Priority int
	// Requires are labels a worker must have, every pair, to run the task.
	Requires map[string]string
	// RunAt is when a scheduled task is queued (a delayed run, or the next
	// try after a backoff); zero for a task never scheduled.
	RunAt time.Time
	// RetryOn lists the outcomes (failed, timed_out) after which the task
	// runs again, up to MaxAttempts, waiting Backoff doubled each time (with
	// jitter, at most MaxBackoff) as a scheduled task in between.
	RetryOn    []Outcome
	Backoff    time.Duration
	MaxBackoff time.Duration
	// AttemptBase is Attempts when the task was last retried by hand
	// (POST /tasks/{id}/retry): MaxAttempts counts the deliveries after it.
	AttemptBase int
	// Request is what the submission asked for that the fields above
	// cannot tell once the task has run or the master's settings changed;
	// a replay of its idempotency key is compared with it. Only a task
	// with a key has one (nil: none, or submitted before the master kept
	// it). Never changed once made, so copies may share it.
	Request *Request

	// RetriedAt is when the task was last retried by hand, from when its
	// next delivery's wait in the queue counts (task.assigned's
	// wait_seconds). Kept in memory only, never stored: a master that
	// restarts counts the wait of a retried task from its last run's end.
	RetriedAt time.Time

	// WaitingFor says, for a live task that waits, what for ("no connected
	// worker has gpu=nvidia"). It is worked out when read, never stored.
	WaitingFor string

	// History has one entry per delivery, oldest first. Only the store
	// fills it in (Store.Get); live tasks in memory leave it empty.
	History []Attempt
}

// Request is a submission as sent, where its task no longer says it: its
// run time (a retry replaces RunAt, a retry by hand clears it) and which
// fields it left to defaults the master's settings give.
type Request struct {
	RunAt              time.Time // run_at as given, or created_at + delay; zero for none
	DefaultTimeout     bool      // timeout left out: MASTER_TASK_TIMEOUT's at the time
	DefaultMaxAttempts bool      // max_attempts left out: MASTER_MAX_ATTEMPTS's at the time
}

// Outcome is how one delivery of a task ended.
type Outcome string

const (
	OutcomeRunning   Outcome = "running"   // not ended yet
	OutcomeSucceeded Outcome = "succeeded" // exit 0
	OutcomeFailed    Outcome = "failed"    // non-zero exit, or could not run
	OutcomeTimedOut  Outcome = "timed_out"
	OutcomeCanceled  Outcome = "canceled"
	OutcomeLost      Outcome = "lost" // the worker vanished before reporting
)

// Attempt is one delivery of a task to a worker.
type Attempt struct {
	TaskID     string
	N          int // 1-based, as Task.Attempts counts
	WorkerID   string
	Outcome    Outcome
	ExitCode   *int
	Error      string
	AssignedAt time.Time
	FinishedAt time.Time
	// Duplicate: the result arrived after the task was already final (it
	// had been re-queued and finished elsewhere), or, of an outcome RetryOn
	// names, after the delivery was replaced (the task ran again already);
	// it changed nothing.
	Duplicate bool
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
	TimedOut   bool
	Canceled   bool
}

// MinPriority and MaxPriority bound Task.Priority; DefaultPriority is
// what a task submitted without one gets.
const (
	MinPriority     = 1
	MaxPriority     = 5
	DefaultPriority = 3
)

// FirstTime and LastTime bound the times a task keeps: the store holds
// them as int64 nanoseconds since 1970 (0 for none), which end in April
// 2262. A later time would wrap into the past (a run_at of 2300 would be
// due at once after a restart).
var (
	FirstTime = time.Unix(0, 1).UTC()
	LastTime  = time.Unix(0, math.MaxInt64).UTC()
)

// Keepable reports whether t lies within FirstTime..LastTime.
func Keepable(t time.Time) bool { return !t.Before(FirstTime) && !t.After(LastTime) }

// Retryable lists the outcomes a retry policy may name.
var Retryable = []Outcome{OutcomeFailed, OutcomeTimedOut}

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
	// Control characters other than tab and line breaks do nothing useful
	// in a shell command, and can hide what it does from a person reading
	// the log, the API or the dashboard (ESC sequences, and C1's CSI,
	// rewrite a terminal); so can the bidirectional formatting characters,
	// which reorder what follows them on screen ("Trojan Source").
	if i := strings.IndexFunc(cmd, hides); i >= 0 {
		r, _ := utf8.DecodeRuneInString(cmd[i:])
		if r < 0x202a {
			return fmt.Errorf("%w: cmd contains the control character U+%04X at byte %d; only tab, CR and LF are allowed", ErrInvalid, r, i)
		}
		return fmt.Errorf("%w: cmd contains the bidirectional formatting character U+%04X at byte %d, which can make a command read as another", ErrInvalid, r, i)
	}
	return nil
}

// hides reports whether ValidateCmd refuses r: a control character
// (C0 but tab, LF and CR; DEL; C1), or a bidirectional embedding,
// override or isolate (U+202A-U+202E, U+2066-U+2069).
func hides(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t' && r != '\n' && r != '\r'
	case r >= 0x7f && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// Output turns what a command wrote into text of at most max bytes: bytes
// that are not UTF-8 become U+FFFD, and a cut falls between characters, never
// inside one. cut reports whether anything was left out.
func Output(b []byte, max int) (text string, cut bool) {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if len(s) <= max {
		return s, false
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}
