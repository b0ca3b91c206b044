package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFollowTellsOfAReclaimedAttempt: the master gives attempt 1 up (its
// worker timed out: attempt_end lost), then the worker comes back still
// running it and reclaims it, and the master announces attempt 1 again
// (README: attempt, a delivery started). A follow must pass that on: with
// --json, the events as the master sent them, not an attempt_end followed
// by more output of the attempt it ended; for people, a note that it goes
// on.
func TestFollowTellsOfAReclaimedAttempt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/t1/output" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range [][2]string{
			{"attempt", `{"attempt":1,"worker_id":"w1"}`},
			{"output", `{"attempt":1,"stream":"stdout","offset":0,"text":"one\n"}`},
			{"attempt_end", `{"attempt":1,"worker_id":"w1","outcome":"lost","detail":"worker w1 timed out"}`},
			{"attempt", `{"attempt":1,"worker_id":"w1"}`},
			{"output", `{"attempt":1,"stream":"stdout","offset":4,"text":"two\n"}`},
			{"end", `{"status":"succeeded","exit_code":0,"error":null,"attempt":1}`},
		} {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e[0], e[1])
		}
	}))
	t.Cleanup(srv.Close)
	env := []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}

	r := cli(t, env, "logs", "-f", "--json", "t1")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e struct{ Event string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, e.Event)
	}
	if want := "attempt output attempt_end attempt output end"; r.code != 0 || strings.Join(got, " ") != want {
		t.Errorf("logs -f --json: events %q, want %q: %v", strings.Join(got, " "), want, r)
	}

	r = cli(t, env, "logs", "-f", "t1")
	if r.code != 0 || r.stdout != "one\ntwo\n" || !strings.Contains(r.stderr, "attempt 1 continues on w1") {
		t.Errorf("logs -f: want the output once and a note that attempt 1 goes on: %v", r)
	}
}
