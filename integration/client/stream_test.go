package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// contractFollow is a follow of a task that was re-run after its worker
// was lost, as the README's Live output section shapes it, with a heartbeat, an
// event this client does not know and a two-line data field on the way.
const contractFollow = `: heartbeat

event: attempt
data: {"attempt":1,"worker_id":"w1"}

event: output
data: {"attempt":1,"stream":"stdout","offset":0,"text":"one\n"}

event: attempt_end
data: {"attempt":1,"worker_id":"w1","outcome":"lost","detail":"worker w1 timed out"}

event: something_new
data: {"x":1}

event: attempt
data: {"attempt":2,"worker_id":"w2"}

event: skipped
data: {"attempt":2,"stream":"stdout","bytes":10}

event: output
data: {"attempt":2,"stream":"stderr",
data: "offset":3,"text":"err\n"}

event: end
data: {"status":"failed","exit_code":3,"error":null,"attempt":2,"stdout_truncated":true,"stderr_truncated":false}

`

func TestFollowOutputReadsTheContractsEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/t1/output" || r.URL.RawQuery != "follow=true" || r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"unexpected %s"}`, r.URL)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, contractFollow)
		// After end the client must stop reading: the server holds the
		// stream open, which would hang a client that did not.
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	var got []string
	err := New(srv.URL, WithToken("tok")).FollowOutput(context.Background(), "t1", func(e OutputEvent) error {
		switch e.Type {
		case OutputAttempt:
			got = append(got, fmt.Sprintf("attempt %d %s", e.Attempt, e.WorkerID))
		case OutputText:
			got = append(got, fmt.Sprintf("%s@%d %q", e.Stream, e.Offset, e.Text))
		case OutputSkipped:
			got = append(got, fmt.Sprintf("skipped %s %d", e.Stream, e.Bytes))
		case OutputAttemptEnd:
			got = append(got, fmt.Sprintf("attempt_end %d %s %s", e.Attempt, e.Outcome, e.Detail))
		case OutputEnd:
			got = append(got, fmt.Sprintf("end %s %d %v", e.Status, *e.ExitCode, e.StdoutTruncated))
		default:
			got = append(got, "unknown "+e.Type)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("FollowOutput: %v", err)
	}
	want := []string{
		"attempt 1 w1", `stdout@0 "one\n"`, "attempt_end 1 lost worker w1 timed out",
		"attempt 2 w2", "skipped stdout 10", `stderr@3 "err\n"`, "end failed 3 true",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

func TestFollowOutputErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/tasks/missing/output":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"not found: task missing"}`)
		case "/tasks/cut/output": // the master goes away mid-stream
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n")
		default: // a stream that stays open
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	none := func(OutputEvent) error { return nil }

	err := c.FollowOutput(context.Background(), "missing", none)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusNotFound || ae.Message != "not found: task missing" || ae.NoEndpoint() {
		t.Errorf("unknown task: err = %#v, want an APIError 404 with the master's message", err)
	}
	if err := c.FollowOutput(context.Background(), "cut", none); !errors.Is(err, ErrStreamEnded) {
		t.Errorf("stream cut before end: err = %v, want ErrStreamEnded", err)
	}
	stop := errors.New("enough")
	if err := c.FollowOutput(context.Background(), "open", func(OutputEvent) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn's error: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = c.FollowOutput(ctx, "open", func(OutputEvent) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("canceled follow: err = %v, want context.Canceled", err)
	}
}

func TestOutput(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/t1/output" || r.URL.RawQuery != "" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no such endpoint: GET /x"}`)
			return
		}
		fmt.Fprint(w, `{"task_id":"t1","status":"running","attempt":2,"worker_id":"w3","live":true,
			"stdout":"abc","stderr":"","stdout_offset":100,"stderr_offset":0,"stdout_truncated":false,"stderr_truncated":false}`)
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	o, err := c.Output(context.Background(), "t1")
	if err != nil || o.Attempt != 2 || o.WorkerID == nil || *o.WorkerID != "w3" || !o.Live || o.Stdout != "abc" || o.StdoutOffset != 100 {
		t.Fatalf("Output = %+v, %v", o, err)
	}
	_, err = c.Output(context.Background(), "odd/id")
	var ae *APIError
	if !errors.As(err, &ae) || !ae.NoEndpoint() {
		t.Fatalf("no such endpoint: err = %v", err)
	}
}

func TestEventsResumesAndKeepsTheRawJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "retry: 2000\n: roundhouse events\n\n")
		if r.Header.Get("Last-Event-ID") != "7" {
			fmt.Fprint(w, "event: gap\ndata: {\"type\":\"gap\",\"last_seq\":9}\n\n")
		}
		fmt.Fprint(w, "id: 8\nevent: task.assigned\ndata: {\"seq\":8,\"type\":\"task.assigned\",\"task_id\":\"t1\",\"worker_id\":\"w1\",\"attempt\":1,\"wait_seconds\":0.5}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []Event
	stop := errors.New("stop")
	err := New(srv.URL).Events(ctx, "7", func(e Event) error {
		got = append(got, e)
		return stop
	})
	if !errors.Is(err, stop) || len(got) != 1 {
		t.Fatalf("Events = %v, %+v", err, got)
	}
	if e := got[0]; e.Seq != 8 || e.Type != "task.assigned" || e.TaskID != "t1" || e.WorkerID != "w1" || e.Attempt != 1 ||
		!strings.Contains(string(e.Raw), `"wait_seconds":0.5`) {
		t.Fatalf("event = %+v (raw %s)", e, e.Raw)
	}
	got = nil
	err = New(srv.URL).Events(ctx, "", func(e Event) error {
		got = append(got, e)
		if len(got) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || got[0].Type != "gap" || got[0].LastSeq != 9 || got[1].Seq != 8 {
		t.Fatalf("without Last-Event-ID: %v, %+v", err, got)
	}
}

// TestFollowIdleCountsOnlyTheMastersSilence: streamIdle is the master's
// silence. A caller that takes longer than that with one event (a pager
// paused on the output, stdout blocked) is not the master going quiet:
// the stream must go on. It was cut for "no word from the master", and
// the follow reconnected. A master that says nothing for streamIdle still
// ends it.
func TestFollowIdleCountsOnlyTheMastersSilence(t *testing.T) {
	old := streamIdle
	streamIdle = 300 * time.Millisecond
	t.Cleanup(func() { streamIdle = old })
	resumed := make(chan struct{}) // the caller has written the first event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"one\\n\"}\n\n")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/tasks/silent/output" {
			<-r.Context().Done() // the master says nothing more, not even a heartbeat
			return
		}
		select {
		case <-resumed:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "event: end\ndata: {\"status\":\"succeeded\",\"exit_code\":0,\"error\":null,\"attempt\":1}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)

	var got []string
	err := c.FollowOutput(context.Background(), "slow", func(e OutputEvent) error {
		got = append(got, e.Type)
		if e.Type == OutputText {
			// The slow writer: blocked on its own output for over
			// streamIdle, as a pager paused by its reader keeps it.
			time.Sleep(3 * streamIdle)
			close(resumed)
		}
		return nil
	})
	if err != nil || strings.Join(got, ",") != "output,end" {
		t.Errorf("a caller slow to write: err = %v, events %q; want both events and no error", err, got)
	}

	err = c.FollowOutput(context.Background(), "silent", func(OutputEvent) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no word from the master") {
		t.Errorf("a silent master: err = %v, want the idle timeout's", err)
	}
}
