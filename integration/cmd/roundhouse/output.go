package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// fail prints what went wrong, for a person, and returns exit 1.
func (a *app) fail(err error) int {
	fmt.Fprintf(a.stderr, "roundhouse: %s\n", a.explain(err))
	return exitError
}

// failTask is fail for a call about one task: a 404 means no such task.
func (a *app) failTask(id string, err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Code == http.StatusNotFound && !ae.NoEndpoint() {
		fmt.Fprintf(a.stderr, "roundhouse: no task %s on the master at %s (%s)\n", id, a.api, ae.Message)
		return exitError
	}
	return a.fail(err)
}

// explain turns a client error into one sentence that says what to do.
func (a *app) explain(err error) string {
	var gu *gaveUpError
	if errors.As(err, &gu) { // its own explanations say nothing of the task
		return fmt.Sprintf("%s; task %s may still run: roundhouse wait %s", a.explain(gu.err), gu.id, gu.id)
	}
	var ae *client.APIError
	var ue *url.Error
	switch {
	case errors.As(err, &ae) && ae.Code == http.StatusUnauthorized:
		if a.token == "" {
			return fmt.Sprintf("the master at %s wants an API token and none was given: set MASTER_API_TOKEN (the lab's is in .env; `export $(grep MASTER_API_TOKEN .env)`) or pass --token (%s)", a.api, ae.Message)
		}
		return fmt.Sprintf("the master refused the API token: set MASTER_API_TOKEN (or --token) to the master's token; the lab's is in .env (%s)", ae.Message)
	case errors.As(err, &ae) && ae.NoEndpoint():
		return fmt.Sprintf("the master at %s does not serve %s %s: is it an older version? (%s)", a.api, ae.Method, strings.SplitN(ae.Path, "?", 2)[0], ae.Message)
	case errors.As(err, &ae) && ae.Code == http.StatusTooManyRequests:
		return fmt.Sprintf("the master is busy, try again in a few seconds: %s", ae.Message)
	case errors.As(err, &ae):
		return fmt.Sprintf("the master answered %s: %s", ae.Status, ae.Message)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach the master at %s: is it running? (make up)", a.api)
	case errors.Is(err, client.ErrStreamEnded):
		return fmt.Sprintf("the master at %s closed the stream: did it stop?", a.api)
	case errors.As(err, &ue) && !errors.Is(err, context.Canceled):
		return fmt.Sprintf("cannot reach the master at %s: %v", a.api, ue.Err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Sprintf("cannot reach the master at %s: %v", a.api, err)
	}
	return err.Error()
}

// printJSON prints v as one indented JSON document.
func (a *app) printJSON(v any) int {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// printJSONLine prints v as one line of JSON, for streams.
func (a *app) printJSONLine(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table returns a tabwriter for people's tables; Flush it.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
}

// taskExit is the exit code of run and wait for a final task: its own exit
// code, or one of ours for what has none.
func taskExit(status string, code *int) int {
	switch status {
	case "succeeded":
		return exitOK
	case "timed_out":
		return exitTimedOut
	case "canceled":
		return exitCanceled
	}
	if code != nil && *code >= 1 && *code <= 255 {
		return *code
	}
	return exitNoCode
}

// outcome is a final task's status as a person reads it: "failed (exit 3)".
func outcome(status string, code *int) string {
	if code != nil && *code >= 0 {
		return fmt.Sprintf("%s (exit %d)", status, *code)
	}
	return status
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func exitText(code *int) string {
	if code == nil {
		return "-"
	}
	return fmt.Sprint(*code)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// labels shows labels as k=v,k=v in key order, "-" for none.
func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// when shows a time in local time to the second, "-" for none.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// oneLine shows a command on one table line: newlines and tabs as spaces,
// cut at n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
