package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEmptyTaskID: `roundhouse get "$id"` with an empty $id (a failed
// submit) is a usage mistake: exit 2 with a sentence that says so. The
// CLI sent GET /tasks/ and told the user the master "does not serve GET
// /tasks/: is it an older version?", exit 1.
func TestEmptyTaskID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What the real master answers for /tasks/ and /tasks//output.
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"no such endpoint: %s %s"}`, r.Method, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	env := []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}
	for _, args := range [][]string{{"get", ""}, {"logs", ""}, {"logs", "-f", ""}, {"cancel", ""}, {"retry", ""}, {"wait", ""}} {
		r := cli(t, env, args...)
		if r.code != exitUsage || strings.Contains(r.stderr, "older version") {
			t.Errorf("%q: want exit %d and a usage error:\n%v", args, exitUsage, r)
		}
	}
}
