package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRunReplayedSaysItFollowsTheFirstTask: run --idempotency-key with a
// key used before gets the task that key made (200, Idempotent-Replayed:
// true), not a new one, and follows it. It said nothing of that: the user
// saw old output, or an old exit code, as if the command had just run. Now
// a note on stderr says so and names the task; --json's stdout stays the
// output events alone.
func TestRunReplayedSaysItFollowsTheFirstTask(t *testing.T) {
	var keys atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			keys.Store(r.Header.Get("Idempotency-Key"))
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"succeeded","exit_code":0}`)
		case r.URL.Path == "/tasks/t1/output":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"old\\n\"}\n\n"+
				"event: end\ndata: {\"status\":\"succeeded\",\"exit_code\":0,\"error\":null,\"attempt\":1}\n\n")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	env := []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}
	tests := []struct {
		name string
		args []string
	}{
		{"text", []string{"run", "--idempotency-key", "k1", "--", "x"}},
		{"json", []string{"run", "--json", "--idempotency-key", "k1", "--", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, env, tt.args...)
			if r.code != 0 || keys.Load() != "k1" {
				t.Fatalf("want exit 0 with the key sent (got %q): %v", keys.Load(), r)
			}
			if !strings.Contains(r.stderr, "idempotency key k1 was used before") || !strings.Contains(r.stderr, "task t1") {
				t.Errorf("stderr does not say the key was used before and which task run follows: %q", r.stderr)
			}
			if tt.name == "text" && r.stdout != "old\n" {
				t.Errorf("stdout %q, want the task's output", r.stdout)
			}
			if tt.name == "json" {
				for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil || m["event"] == nil {
						t.Errorf("stdout line %q is not an output event: %v", line, err)
					}
				}
			}
		})
	}
}
