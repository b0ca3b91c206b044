package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// TestGetJSONIsTheAPIsTask: the README says --json prints "the API's
// shapes". A task without output or retry policy: the API answers
// "stdout": "", "backoff": null, "waiting_for": null; get --json must
// print the same document, not "" for null or nothing for "".
func TestGetJSONIsTheAPIsTask(t *testing.T) {
	cl := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, _, err := cl.c.SubmitWith(ctx, client.Submit{Cmd: "true", Wait: 10 * time.Second})
	if err != nil || tk.Status != "succeeded" {
		t.Fatalf("submit: %+v %v", tk, err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cl.api+"/tasks/"+tk.ID, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var api, got map[string]any
	if err := json.Unmarshal(body, &api); err != nil {
		t.Fatal(err)
	}
	r := cli(t, cl.env(), "get", "--json", tk.ID)
	if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
		t.Fatalf("get --json: %v (%v)", r, err)
	}
	for k, v := range api {
		if g, ok := got[k]; !ok || !reflect.DeepEqual(g, v) {
			t.Errorf("%q: the API says %#v, get --json %#v (present: %v)", k, v, g, ok)
		}
	}
	for k := range got {
		if _, ok := api[k]; !ok {
			t.Errorf("get --json has %q, the API has not", k)
		}
	}
}

// TestFollowJSONIsTheMastersEvents: logs -f --json (and run --json) print
// the output events, one per line (README): each with the fields the master
// sent, a zero offset, a null error and false truncation flags included,
// which a script reads as the README's table shows them. They were
// re-encoded with omitempty, so the first output of every stream had no
// offset and the end no error or *_truncated.
func TestFollowJSONIsTheMastersEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n"+
			"event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"hi\\n\"}\n\n"+
			"event: end\ndata: {\"status\":\"failed\",\"exit_code\":null,\"error\":null,\"attempt\":1,\"stdout_truncated\":false,\"stderr_truncated\":false}\n\n")
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "logs", "-f", "--json", "t1")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 {
		t.Fatalf("want 3 lines, exit 0: %v", r)
	}
	for i, want := range []map[string]any{
		{"event": "attempt", "attempt": 1.0, "worker_id": "w1"},
		{"event": "output", "attempt": 1.0, "stream": "stdout", "offset": 0.0, "text": "hi\n"},
		{"event": "end", "status": "failed", "exit_code": nil, "error": nil, "attempt": 1.0, "stdout_truncated": false, "stderr_truncated": false},
	} {
		var got map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("line %q: %v", lines[i], err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("line %d = %v, want %v", i, got, want)
		}
	}
}
