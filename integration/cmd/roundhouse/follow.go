package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// interrupt is Ctrl-C.
var interrupt os.Signal = os.Interrupt

// reconnectFor bounds how long a follow tries to get a broken output stream
// back (a master restart takes seconds), one try every reconnectEvery.
// Variables for tests only.
var (
	reconnectFor   = 2 * time.Minute
	reconnectEvery = 2 * time.Second
)

func (a *app) cmdRun(ctx context.Context, args []string) int {
	fs := a.flags("run")
	var sf submitFlags
	sf.add(fs)
	verbose := fs.Bool("v", false, "say on stderr which task was submitted and where each attempt runs")
	words, code := a.parse(fs, args, -1, true)
	if code >= 0 {
		return code
	}
	s, err := sf.submission(words)
	if err != nil {
		return a.usageError(fs, "%v", err)
	}
	// Caught before the submission, so a Ctrl-C right after it is ours too.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, interrupt)
	defer signal.Stop(sigs)

	t, _, err := a.c.SubmitWith(ctx, s)
	if err != nil {
		return a.fail(err)
	}
	if t.Replayed {
		// Not a new run: what follows may be old output and an old exit
		// code, and the user must know it is not this command's run.
		fmt.Fprintf(a.stderr, "roundhouse: the idempotency key %s was used before: following its task %s (%s), not a new one\n", s.IdempotencyKey, t.ID, t.Status)
	}
	if *verbose {
		fmt.Fprintf(a.stderr, "roundhouse: task %s %s\n", t.ID, t.Status)
	}
	f := &follower{a: a, verbose: *verbose}

	// The follow runs in its own goroutine so this one can answer Ctrl-C;
	// every return below cancels it and waits for it first.
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.follow(fctx, t.ID) }()
	stopFollow := func() { cancel(); <-done }

	var answers chan answer // non-nil while the prompt waits for one
	for {
		select {
		case err := <-done:
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					// Stopped from outside (SIGTERM: a kill, a CI job's
					// timeout): the task runs on, and only this says which
					// it is.
					a.fail(&gaveUpError{id: t.ID, err: fmt.Errorf("stopped (%w)", context.Cause(ctx))})
					return exitTerminated
				}
				// Submitted: whatever ended the follow (a token changed on
				// the master, output that could not be printed), the task
				// may run on, and only this says which it is.
				var gu *gaveUpError
				if !errors.As(err, &gu) && client.StatusOf(err) != http.StatusNotFound {
					err = &gaveUpError{id: t.ID, err: err}
				}
				return a.failTask(t.ID, err)
			}
			return taskExit(f.end.Status, f.end.ExitCode)
		case <-sigs:
			if !a.tty || answers != nil {
				// No terminal to ask on, or a second Ctrl-C at the prompt.
				stopFollow()
				fmt.Fprintf(a.stderr, "\nroundhouse: task %s keeps running on the master; cancel it with: roundhouse cancel %s\n", t.ID, t.ID)
				return exitInterrupted
			}
			fmt.Fprintf(a.stderr, "\ncancel task %s on the master? [y/N] ", t.ID)
			answers = make(chan answer, 1)
			// Left blocked on stdin only when a second Ctrl-C ends the
			// command instead: then the process exits, and no read can
			// be stopped otherwise.
			go func(out chan<- answer) { out <- a.readAnswer() }(answers)
		case ans := <-answers:
			answers = nil
			switch {
			case ans.err != nil:
				stopFollow()
				fmt.Fprintf(a.stderr, "\nroundhouse: no answer (%v); task %s keeps running; cancel it with: roundhouse cancel %s\n", ans.err, t.ID, t.ID)
				return exitInterrupted
			case ans.yes:
				if _, status, err := a.c.Cancel(ctx, t.ID); err != nil {
					fmt.Fprintf(a.stderr, "roundhouse: canceling task %s: %s\n", t.ID, a.explain(err))
				} else if status == http.StatusConflict {
					fmt.Fprintf(a.stderr, "roundhouse: task %s had already ended\n", t.ID)
				} else {
					fmt.Fprintf(a.stderr, "roundhouse: task %s canceled\n", t.ID)
				}
				// The follow ends with the task's end event.
			default:
				fmt.Fprintf(a.stderr, "roundhouse: task %s keeps running (Ctrl-C again to ask again)\n", t.ID)
			}
		}
	}
}

// answer is the reply to the cancel prompt.
type answer struct {
	yes bool
	err error // stdin ended or failed: nobody is there to answer
}

func (a *app) readAnswer() answer {
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		return answer{err: err}
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return answer{yes: true}
	}
	return answer{}
}

func (a *app) cmdLogs(ctx context.Context, args []string) int {
	fs := a.flags("logs")
	follow := fs.Bool("f", false, "follow the output live until the task ends")
	verbose := fs.Bool("v", false, "with -f: say on stderr where each attempt runs")
	pos, code := a.parse(fs, args, 1, false)
	if code >= 0 {
		return code
	}
	id := pos[0]
	if !*follow {
		o, err := a.c.Output(ctx, id)
		if err != nil {
			return a.failTask(id, err)
		}
		if a.json {
			return a.printJSON(o)
		}
		fmt.Fprint(a.stdout, o.Stdout)
		fmt.Fprint(a.stderr, o.Stderr)
		return exitOK
	}
	ctx, stop := signal.NotifyContext(ctx, interrupt)
	defer stop()
	f := &follower{a: a, verbose: *verbose}
	if err := f.follow(ctx, id); err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return a.failTask(id, err)
	}
	return exitOK
}

// follower prints one task's output stream: the text to stdout and stderr,
// notes about attempts on stderr, or, with --json, each event as a line.
// It is used by one goroutine at a time.
type follower struct {
	a       *app
	verbose bool

	end client.OutputEvent // the end event, once it came
	// printed is, per attempt and stream, the offset up to which text was
	// printed: a follow that reconnects gets the output again from the
	// start of the buffer and prints only what is new.
	printed map[streamKey]int64
	// at is, per attempt and stream, how far the current connection's
	// events have gone: a skipped event carries no offset, it starts here.
	at        map[streamKey]int64
	announced int                 // the last attempt whose attempt event was shown
	ended     int                 // the last attempt whose attempt_end was shown
	lastEnd   *client.OutputEvent // the last attempt_end, for the next attempt's note
}

type streamKey struct {
	attempt int
	stream  string
}

// follow follows the task's output until its end event, reconnecting when
// the stream breaks (a master restart) for up to reconnectFor.
func (f *follower) follow(ctx context.Context, id string) error {
	f.printed = map[streamKey]int64{}
	var brokenSince time.Time
	for {
		got := false
		var printErr error           // printing failed: no reconnect helps that
		f.at = map[streamKey]int64{} // a new connection starts each stream at 0
		err := f.a.c.FollowOutput(ctx, id, func(e client.OutputEvent) error {
			got = true
			printErr = f.event(e)
			return printErr
		})
		if printErr != nil {
			return printErr
		}
		// A 429 (MASTER_MAX_EVENT_STREAMS follows open) asks to retry
		// later: the task runs meanwhile, and run must not send its user
		// to submit it again.
		busy := client.StatusOf(err) == http.StatusTooManyRequests
		if err == nil || ctx.Err() != nil || client.StatusOf(err) != 0 && !busy {
			return err
		}
		// The stream broke, or the master could not be reached. An error
		// that is not the request's own (*url.Error: no answer) came from a
		// stream that was open: a new break, even if no event came through
		// it (a task queued or running quietly while the master restarted).
		var ue *url.Error
		if opened := got || !busy && !errors.As(err, &ue); opened || brokenSince.IsZero() {
			brokenSince = time.Now()
			if busy {
				fmt.Fprintf(f.a.stderr, "roundhouse: cannot follow task %s yet (%s); trying again\n", id, f.a.explain(err))
			} else {
				fmt.Fprintf(f.a.stderr, "roundhouse: lost the output stream of task %s (%s); reconnecting\n", id, f.a.explain(err))
			}
		}
		if time.Since(brokenSince) > reconnectFor {
			return &gaveUpError{id: id, err: err}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(reconnectEvery):
		}
	}
}

// gaveUpError ends a follow that stopped trying to get its stream back:
// the task may still run, and explain says how to go on with it whatever
// err is.
type gaveUpError struct {
	id  string
	err error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v; task %s may still run: roundhouse wait %s", e.err, e.id, e.id)
}

func (e *gaveUpError) Unwrap() error { return e.err }

func (f *follower) event(e client.OutputEvent) error {
	if e.Type == client.OutputEnd {
		f.end = e
	}
	if e.Type == client.OutputAttempt {
		// A new follow starts again with the running delivery: say it
		// once. Unless it was said to have ended: its worker came back
		// with it and reclaimed it, and it goes on.
		if e.Attempt < f.announced || e.Attempt == f.announced && f.ended != e.Attempt {
			return nil
		}
		f.announced, f.ended = e.Attempt, 0
	}
	if e.Type == client.OutputAttemptEnd {
		f.ended = e.Attempt
	}
	if e.Type == client.OutputSkipped {
		// Only what was not printed yet: a new follow reports the start of
		// the live buffer that it dropped, which an earlier one printed.
		k := streamKey{e.Attempt, e.Stream}
		from := f.at[k]
		to := from + e.Bytes
		f.at[k] = to
		if seen := f.printed[k]; to <= seen {
			return nil
		} else if from < seen {
			e.Bytes = to - seen
		}
		f.printed[k] = to
	}
	if e.Type == client.OutputText {
		f.at[streamKey{e.Attempt, e.Stream}] = e.Offset + int64(len(e.Text))
		// Only what was not printed yet, after a reconnect. Offsets count
		// the stream's bytes and len(Text) its UTF-8 bytes: the same but
		// where invalid bytes became U+FFFD, where a repeat may be off by
		// a few bytes.
		k := streamKey{e.Attempt, e.Stream}
		seen := f.printed[k]
		if end := e.Offset + int64(len(e.Text)); end <= seen {
			return nil
		} else if e.Offset < seen {
			e.Text, e.Offset = e.Text[seen-e.Offset:], seen
		}
		f.printed[k] = e.Offset + int64(len(e.Text))
	}
	if f.a.json {
		return f.a.printJSONLine(jsonEvent(e))
	}
	a := f.a
	switch e.Type {
	case client.OutputText:
		w := a.stdout
		if e.Stream == "stderr" {
			w = a.stderr
		}
		_, err := fmt.Fprint(w, e.Text)
		return err
	case client.OutputSkipped:
		fmt.Fprintf(a.stderr, "roundhouse: [%d bytes of %s skipped: the master's live buffer or the worker dropped them]\n", e.Bytes, e.Stream)
	case client.OutputAttemptEnd:
		f.lastEnd = &e
	case client.OutputAttempt:
		why := ""
		if f.lastEnd != nil {
			why = f.lastEnd.Outcome
			if f.lastEnd.Detail != "" {
				why += ": " + f.lastEnd.Detail
			}
		}
		switch {
		case f.lastEnd != nil && f.lastEnd.Attempt == e.Attempt:
			fmt.Fprintf(a.stderr, "roundhouse: attempt %d continues on %s (its worker came back after it was %s)\n", e.Attempt, e.WorkerID, why)
			f.lastEnd = nil
		case f.lastEnd != nil:
			fmt.Fprintf(a.stderr, "roundhouse: attempt %d on %s (attempt %d %s)\n", e.Attempt, e.WorkerID, f.lastEnd.Attempt, why)
			f.lastEnd = nil
		case e.Attempt > 1 || f.verbose:
			fmt.Fprintf(a.stderr, "roundhouse: attempt %d on %s\n", e.Attempt, e.WorkerID)
		}
	case client.OutputEnd:
		// The exit code tells a script most; say what it cannot.
		if f.verbose || e.Status != "succeeded" && (e.Status != "failed" || e.ExitCode == nil || e.Error != nil) {
			msg := outcome(e.Status, e.ExitCode)
			if e.Error != nil {
				msg += ": " + *e.Error
			}
			fmt.Fprintf(a.stderr, "roundhouse: task %s\n", msg)
		}
	}
	return nil
}

// jsonEvent is e as --json prints it: the master's event, every field it
// sent (a zero offset, a null error), with its name as "event", and its
// text and offset, or bytes, as printed after a reconnect's repeat was cut.
func jsonEvent(e client.OutputEvent) any {
	m := map[string]any{}
	d := json.NewDecoder(bytes.NewReader(e.Raw))
	d.UseNumber()
	if d.Decode(&m) != nil || m == nil {
		m = map[string]any{}
	}
	m["event"] = e.Type
	switch e.Type {
	case client.OutputText:
		m["text"], m["offset"] = e.Text, e.Offset
	case client.OutputSkipped:
		m["bytes"] = e.Bytes
	}
	return m
}
