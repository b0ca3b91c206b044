package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
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
