package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

func (a *app) cmdWorkers(ctx context.Context, args []string) int {
	fs := a.flags("workers")
	if _, code := a.parse(fs, args, 0, false); code >= 0 {
		return code
	}
	ws, err := a.c.Workers(ctx)
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		if ws.Workers == nil {
			ws.Workers = ws.Workers[:0:0]
		}
		return a.printJSON(ws)
	}
	tw := a.table()
	fmt.Fprintln(tw, "ID\tSTATE\tSLOTS\tRUNNING\tCOMPLETED\tLABELS\tCONNECTED\tNEXT")
	for _, w := range ws.Workers {
		next := ""
		if w.Next {
			next = "<- next"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", w.ID, w.State, w.Slots, w.Running, w.Completed,
			labels(w.Labels), when(&w.ConnectedAt), next)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "%d workers connected\n", ws.WorkerCount)
	return exitOK
}

func (a *app) cmdEvents(ctx context.Context, args []string) int {
	fs := a.flags("events")
	since := fs.String("since", "", "first the events the master still keeps after the one numbered `seq` (as --json shows it; 0: all it keeps, its last 4096), then new ones; a gap line says when some are gone")
	if _, code := a.parse(fs, args, 0, false); code >= 0 {
		return code
	}
	if *since != "" {
		if _, err := strconv.ParseUint(*since, 10, 64); err != nil {
			return a.usageError(fs, "--since %q is not an event's seq (a number)", *since)
		}
	}
	ctx, stop := signal.NotifyContext(ctx, interrupt)
	defer stop()
	last := *since // resumed like a reconnect: Last-Event-ID
	connected := false
	var brokenSince time.Time
	for {
		var printErr error // printing failed: no reconnect helps that
		err := a.c.Events(ctx, last, func(e client.Event) error {
			connected, brokenSince = true, time.Time{}
			if e.Seq != 0 {
				last = strconv.FormatUint(e.Seq, 10)
			}
			if e.Type == "" { // only where the stream starts: nothing to print
				return nil
			}
			if a.json {
				_, printErr = fmt.Fprintf(a.stdout, "%s\n", e.Raw)
			} else {
				_, printErr = fmt.Fprintln(a.stdout, eventLine(e))
			}
			return printErr
		})
		if ctx.Err() != nil {
			return exitInterrupted
		}
		if printErr != nil {
			return a.fail(printErr)
		}
		// An error that is not the request's own (*url.Error: no answer)
		// nor the master's refusal came from a stream that was open: a new
		// break, even if no event came through it (a quiet cluster).
		var ue *url.Error
		if client.StatusOf(err) == 0 && !errors.As(err, &ue) {
			connected, brokenSince = true, time.Time{}
		}
		// A refusal, or no master at the start, is the user's to fix; a
		// stream that breaks later (a master restart) is picked up again
		// where it left off, also through 429s (every follower of the
		// restarted master reconnecting at once), which ask to retry.
		busy := client.StatusOf(err) == http.StatusTooManyRequests
		if !connected || client.StatusOf(err) != 0 && !busy {
			return a.fail(err)
		}
		if brokenSince.IsZero() {
			brokenSince = time.Now()
			fmt.Fprintf(a.stderr, "roundhouse: lost the event stream (%s); reconnecting\n", a.explain(err))
		}
		if time.Since(brokenSince) > reconnectFor {
			return a.fail(err)
		}
		select {
		case <-ctx.Done():
			return exitInterrupted
		case <-time.After(reconnectEvery):
		}
	}
}

// eventLine is one event for people: the time, the type, then its fields
// as key=value.
func eventLine(e client.Event) string {
	var b strings.Builder
	ts := e.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	fmt.Fprintf(&b, "%s %-16s", ts.Local().Format("15:04:05.000"), e.Type)
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	kv("task", e.TaskID)
	kv("worker", e.WorkerID)
	if e.Attempt != 0 {
		kv("attempt", strconv.Itoa(e.Attempt))
	}
	kv("status", e.Status)
	if e.ExitCode != nil {
		kv("exit", strconv.Itoa(*e.ExitCode))
	}
	kv("reason", e.Reason)
	if e.Slots != 0 {
		kv("slots", strconv.Itoa(e.Slots))
	}
	if e.Position != nil {
		kv("position", strconv.Itoa(*e.Position))
	}
	if e.Running != nil {
		kv("running", strconv.Itoa(*e.Running))
	}
	if e.Priority != 0 {
		kv("priority", strconv.Itoa(e.Priority))
	}
	if len(e.Requires) > 0 {
		kv("requires", labels(e.Requires))
	}
	if e.RunAt != nil {
		kv("run_at", e.RunAt.Local().Format(time.RFC3339))
	}
	if e.LastSeq != 0 {
		kv("missed_up_to", strconv.FormatUint(e.LastSeq, 10))
	}
	if e.Cmd != "" {
		kv("cmd", strconv.Quote(oneLine(e.Cmd, 80)))
	}
	if e.Detail != "" {
		kv("detail", strconv.Quote(e.Detail))
	}
	return b.String()
}
