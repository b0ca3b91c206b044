package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// submitFlags are the fields of POST /tasks, shared by submit and run.
type submitFlags struct {
	s        client.Submit
	runAt    string
	requires labelsFlag
	retryOn  listFlag
}

func (f *submitFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&f.s.Timeout, "timeout", "", "kill the command after this `duration`, e.g. 30s (default: the master's MASTER_TASK_TIMEOUT)")
	fs.Var((*nonZeroInt)(&f.s.MaxAttempts), "max-attempts", "`n` deliveries to workers before the master gives up (default: the master's)")
	fs.Var((*nonZeroInt)(&f.s.Priority), "priority", "`n` from 1 (most urgent) to 5 (default 3)")
	fs.Var(&f.requires, "requires", "a `key=value` label a worker must have to run it; repeat for more")
	fs.StringVar(&f.s.Delay, "delay", "", "run after this `duration`, e.g. 10m (not with --run-at)")
	fs.StringVar(&f.runAt, "run-at", "", "run at this RFC 3339 `time`, e.g. 2026-12-01T09:30:00Z")
	fs.Var(&f.retryOn, "retry-on", "`outcomes` that run it again (failed, timed_out), comma-separated or repeated")
	fs.StringVar(&f.s.Backoff, "backoff", "", "the first wait before a retry, doubled each time (a `duration`)")
	fs.StringVar(&f.s.MaxBackoff, "max-backoff", "", "the longest wait before a retry (a `duration`)")
	fs.StringVar(&f.s.IdempotencyKey, "idempotency-key", "", "a `key`: submitting again with it returns the first task instead of a new one")
}

// submission builds the request from the flags and the command's words,
// joined with spaces as ssh does: the worker runs the line with /bin/sh -c.
func (f *submitFlags) submission(words []string) (client.Submit, error) {
	s := f.s
	s.Cmd = strings.Join(words, " ")
	if strings.TrimSpace(s.Cmd) == "" {
		return s, errors.New("no command given: put it after --, as in roundhouse run -- echo hello")
	}
	if f.runAt != "" {
		t, err := time.Parse(time.RFC3339, f.runAt)
		if err != nil {
			return s, fmt.Errorf("--run-at %q is not an RFC 3339 time such as 2026-12-01T09:30:00Z", f.runAt)
		}
		s.RunAt = t
	}
	if len(f.requires) > 0 {
		s.Requires = f.requires
	}
	s.RetryOn = f.retryOn
	return s, nil
}

// nonZeroInt is an int flag that refuses 0: the request leaves a 0 out,
// so a 0 given would silently become the master's default. Other values
// go to the master, which says what is wrong with them.
type nonZeroInt int

func (n *nonZeroInt) String() string {
	if n == nil || *n == 0 {
		return ""
	}
	return strconv.Itoa(int(*n))
}

func (n *nonZeroInt) Set(v string) error {
	i, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not a whole number")
	}
	if i == 0 {
		return errors.New("0 is not allowed (leave the flag out for the master's default)")
	}
	*n = nonZeroInt(i)
	return nil
}

// labelsFlag is a repeatable key=value flag.
type labelsFlag map[string]string

func (l *labelsFlag) String() string { return labels(*l) }
func (l *labelsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, such as gpu=nvidia")
	}
	if *l == nil {
		*l = labelsFlag{}
	}
	(*l)[k] = val
	return nil
}

// listFlag is a repeatable flag of comma-separated words.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, w := range strings.Split(v, ",") {
		if w = strings.TrimSpace(w); w != "" {
			*l = append(*l, w)
		}
	}
	return nil
}

func (a *app) cmdSubmit(ctx context.Context, args []string) int {
	fs := a.flags("submit")
	var sf submitFlags
	sf.add(fs)
	words, code := a.parse(fs, args, -1, true)
	if code >= 0 {
		return code
	}
	s, err := sf.submission(words)
	if err != nil {
		return a.usageError(fs, "%v", err)
	}
	t, _, err := a.c.SubmitWith(ctx, s)
	if err != nil {
		return a.fail(err)
	}
	if t.Replayed {
		fmt.Fprintf(a.stderr, "roundhouse: the idempotency key was used before: this is the task it made (%s)\n", t.Status)
	}
	if a.json {
		return a.printJSON(t)
	}
	fmt.Fprintln(a.stdout, t.ID)
	return exitOK
}

func (a *app) cmdGet(ctx context.Context, args []string) int {
	fs := a.flags("get")
	pos, code := a.parse(fs, args, 1, false)
	if code >= 0 {
		return code
	}
	t, err := a.c.Get(ctx, pos[0])
	if err != nil {
		return a.failTask(pos[0], err)
	}
	if a.json {
		return a.printJSON(t)
	}
	tw := a.table()
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID:", t.ID)
	row("Command:", oneLine(t.Cmd, 200))
	status := t.Status
	if t.Final() {
		status = outcome(t.Status, t.ExitCode)
	}
	row("Status:", status)
	row("Worker:", orDash(t.Worker()))
	row("Attempts:", fmt.Sprintf("%d of %d", t.Attempts-t.AttemptBase, t.MaxAttempts))
	row("Priority:", fmt.Sprint(t.Priority))
	row("Requires:", labels(t.Requires))
	row("Timeout:", t.Timeout)
	if len(t.RetryOn) > 0 {
		row("Retry on:", fmt.Sprintf("%s (backoff %s, at most %s)", strings.Join(t.RetryOn, ","), t.Backoff, t.MaxBackoff))
	}
	if t.RunAt != nil {
		row("Run at:", when(t.RunAt))
	}
	row("Created:", when(&t.CreatedAt))
	row("Started:", when(t.StartedAt))
	row("Finished:", when(t.FinishedAt))
	if t.WaitingFor != "" {
		row("Waiting for:", t.WaitingFor)
	}
	if t.Error != nil {
		row("Error:", *t.Error)
	}
	tw.Flush()
	if len(t.History) > 0 {
		fmt.Fprintln(a.stdout, "\nHistory:")
		tw = a.table()
		fmt.Fprintln(tw, "  ATTEMPT\tWORKER\tOUTCOME\tEXIT\tASSIGNED\tFINISHED\tERROR")
		for _, h := range t.History {
			out := h.Outcome
			if h.Duplicate {
				out += " (duplicate)"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Attempt, h.WorkerID, out, exitText(h.ExitCode),
				when(h.AssignedAt), when(h.FinishedAt), orDash(deref(h.Error)))
		}
		tw.Flush()
	}
	for _, o := range []struct {
		name, text string
		cut        bool
	}{{"stdout", t.Stdout, t.StdoutTruncated}, {"stderr", t.Stderr, t.StderrTruncated}} {
		if o.text == "" {
			continue
		}
		note := ""
		if o.cut {
			note = " (truncated)"
		}
		fmt.Fprintf(a.stdout, "\n--- %s%s ---\n%s", o.name, note, o.text)
		if !strings.HasSuffix(o.text, "\n") {
			fmt.Fprintln(a.stdout)
		}
	}
	return exitOK
}

func (a *app) cmdList(ctx context.Context, args []string) int {
	fs := a.flags("ls")
	status := fs.String("status", "", "only tasks with these `statuses`, comma-separated: scheduled, queued, running, succeeded, failed, timed_out, canceled")
	worker := fs.String("worker", "", "only tasks of this worker `ID`")
	cmd := fs.String("cmd", "", "only tasks whose command contains this `text` (case-insensitive)")
	limit := fs.Int("limit", 0, "tasks per page, 1-1000 (default: the master's, 100)")
	cursor := fs.String("cursor", "", "start at this page, the `cursor` a previous ls printed")
	all := fs.Bool("all", false, "read every page, not only the first")
	if _, code := a.parse(fs, args, 0, false); code >= 0 {
		return code
	}
	// Only a --limit given goes to the master: left out, the master's
	// default applies. A 0 given must not mean the same silently.
	limitSet := false
	fs.Visit(func(f *flag.Flag) { limitSet = limitSet || f.Name == "limit" })
	if limitSet && (*limit < 1 || *limit > 1000) {
		return a.usageError(fs, "--limit %d is not from 1 to 1000 (leave it out for the master's default, 100)", *limit)
	}
	q := url.Values{}
	for k, v := range map[string]string{"status": *status, "worker": *worker, "cmd": *cmd, "cursor": *cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if limitSet {
		q.Set("limit", fmt.Sprint(*limit))
	}
	var tasks []client.Task
	next := ""
	var err error
	if *all {
		tasks, err = a.c.ListAll(ctx, q)
	} else {
		tasks, next, err = a.c.List(ctx, q)
	}
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		page := struct {
			Tasks      []client.Task `json:"tasks"`
			NextCursor *string       `json:"next_cursor"`
		}{Tasks: tasks}
		if tasks == nil {
			page.Tasks = []client.Task{}
		}
		if next != "" {
			page.NextCursor = &next
		}
		return a.printJSON(page)
	}
	tw := a.table()
	fmt.Fprintln(tw, "ID\tSTATUS\tEXIT\tWORKER\tATTEMPTS\tCREATED\tCOMMAND")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Status, exitText(t.ExitCode), orDash(t.Worker()),
			t.Attempts, when(&t.CreatedAt), oneLine(t.Cmd, 60))
	}
	tw.Flush()
	if next != "" {
		// On stderr, so the table stays the only thing on stdout.
		fmt.Fprintf(a.stderr, "more tasks: add --cursor %s (or --all)\n", next)
	}
	return exitOK
}

func (a *app) cmdCancel(ctx context.Context, args []string) int {
	fs := a.flags("cancel")
	pos, code := a.parse(fs, args, 1, false)
	if code >= 0 {
		return code
	}
	id := pos[0]
	t, status, err := a.c.Cancel(ctx, id)
	if err != nil {
		return a.failTask(id, err)
	}
	if status == http.StatusConflict {
		if t, err = a.c.Get(ctx, id); err != nil {
			return a.failTask(id, err)
		}
		fmt.Fprintf(a.stderr, "roundhouse: task %s is already %s: nothing to cancel\n", id, outcome(t.Status, t.ExitCode))
		return exitError
	}
	if a.json {
		return a.printJSON(t)
	}
	fmt.Fprintf(a.stdout, "task %s canceled\n", t.ID)
	return exitOK
}

func (a *app) cmdRetry(ctx context.Context, args []string) int {
	fs := a.flags("retry")
	pos, code := a.parse(fs, args, 1, false)
	if code >= 0 {
		return code
	}
	id := pos[0]
	t, status, err := a.c.Retry(ctx, id)
	if err != nil {
		return a.failTask(id, err)
	}
	if status == http.StatusConflict {
		if t, err = a.c.Get(ctx, id); err != nil {
			return a.failTask(id, err)
		}
		fmt.Fprintf(a.stderr, "roundhouse: task %s is %s: only a final task can be retried\n", id, t.Status)
		return exitError
	}
	if a.json {
		return a.printJSON(t)
	}
	fmt.Fprintf(a.stdout, "task %s %s again\n", t.ID, t.Status)
	return exitOK
}

// waitPoll is how long each GET /tasks/{id}?wait= holds: 1 s, the smallest
// MASTER_MAX_WAIT, so it works against any master and a Ctrl-C is prompt.
const waitPoll = time.Second

func (a *app) cmdWait(ctx context.Context, args []string) int {
	fs := a.flags("wait")
	pos, code := a.parse(fs, args, 1, false)
	if code >= 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(ctx, interrupt)
	defer stop()
	id := pos[0]
	var brokenSince time.Time
	answered := false
	for {
		t, err := a.c.GetWait(ctx, id, waitPoll)
		if ctx.Err() != nil {
			return exitInterrupted
		}
		if err != nil {
			// Once the master has answered, no answer or a master shutting
			// down (503) is a restart, which the task lives through, so the
			// wait goes on too, as run's follow does, for up to
			// reconnectFor. A master never reached (down, a wrong --api) or
			// any other answer (no such task, a refused token) ends it.
			if code := client.StatusOf(err); !answered || code != 0 && code != http.StatusServiceUnavailable {
				return a.failTask(id, err)
			}
			if brokenSince.IsZero() {
				brokenSince = time.Now()
				fmt.Fprintf(a.stderr, "roundhouse: lost the master while waiting for task %s (%s); trying again\n", id, a.explain(err))
			} else if time.Since(brokenSince) > reconnectFor {
				return a.fail(&gaveUpError{id: id, err: err})
			}
			select {
			case <-ctx.Done():
				return exitInterrupted
			case <-time.After(reconnectEvery):
			}
			continue
		}
		answered, brokenSince = true, time.Time{}
		if !t.Final() {
			continue
		}
		if a.json {
			a.printJSON(t)
		} else {
			fmt.Fprintf(a.stdout, "task %s %s on %s\n", t.ID, outcome(t.Status, t.ExitCode), orDash(t.Worker()))
		}
		return taskExit(t.Status, t.ExitCode)
	}
}
