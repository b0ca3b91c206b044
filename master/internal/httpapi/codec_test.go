package httpapi

import (
	"net/http"
	"testing"
)

// A JSON escape of a lone UTF-16 surrogate (\ud800) is no character:
// encoding/json quietly decodes it as U+FFFD, so the task would run a
// command other than the one sent, which decodeBody refuses for raw invalid
// UTF-8 for exactly that reason. It must be refused with a 400 too, and
// nothing queued.
func TestLoneSurrogateEscapeIsRefused(t *testing.T) {
	srv, d := newServer(t, nil)
	for _, body := range []string{
		`{"cmd":"echo \ud800"}`,
		`{"cmd":"echo \udc00x"}`,
		`{"cmd":"echo \ud83d\u0041"}`, // a high surrogate, then no low one
		`{"cmd":"true","requires":{"gpu":"\udfff"}}`,
	} {
		code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body)
		if code != http.StatusBadRequest {
			t.Errorf("POST %s = %d, cmd %q; want 400", body, code, m["cmd"])
		}
	}
	if n := queued(t, d); n != 0 {
		t.Errorf("%d tasks queued by refused requests, want 0", n)
	}
	// A surrogate pair is one character, and fine.
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo \ud83d\ude00"}`); code != http.StatusAccepted || m["cmd"] != "echo \U0001F600" {
		t.Errorf("surrogate pair = %d %v, want 202 with echo 😀", code, m)
	}
}
