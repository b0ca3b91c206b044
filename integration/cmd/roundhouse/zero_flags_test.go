package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestSubmitZeroIsNotLeftOut: --priority 0 and --max-attempts 0 are values
// the master refuses (priority 1-5, max_attempts at least 1). The CLI took
// 0 for "not given", left the field out, and submitted a task with the
// master's defaults (priority 3, 3 attempts), exit 0. Bad input must get
// an error and a non-zero exit, and no task.
func TestSubmitZeroIsNotLeftOut(t *testing.T) {
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"id":"t1","cmd":"true","status":"queued","priority":3,"max_attempts":3}`)
	}))
	t.Cleanup(srv.Close)
	env := []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}
	for _, args := range [][]string{{"submit", "--priority", "0", "true"}, {"submit", "--max-attempts", "0", "true"}, {"run", "--priority", "0", "true"}} {
		bodies = nil
		r := cli(t, env, args...)
		if r.code == exitOK || len(bodies) != 0 {
			t.Errorf("%q: exit %d, the master got %q\n%v", args, r.code, bodies, r)
		}
	}
}
