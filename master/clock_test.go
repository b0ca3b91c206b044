package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A task's times read the same in every answer: the POST that creates it
// answers from memory, a later GET from a compact queued task or the store,
// which keep UTC. So the master's clock is UTC, whatever the host's zone.
func TestTaskTimesReadTheSameFromPostAndGet(t *testing.T) {
	if loc := utcNow().Location(); loc != time.UTC {
		t.Fatalf("the master's clock is in %v, want UTC", loc)
	}
	m := startMaster(t, nil)
	code, _, body := m.request(t, http.MethodPost, "/tasks", "", strings.NewReader(`{"cmd":"echo hi"}`), nil)
	if code != http.StatusAccepted {
		t.Fatalf("POST /tasks: %d %s", code, body)
	}
	var posted struct {
		ID        string `json:"id"`
		CreatedAt string `json:"created_at"`
	}
	if err := json.Unmarshal([]byte(body), &posted); err != nil || posted.ID == "" {
		t.Fatalf("POST /tasks answered %s: %v", body, err)
	}
	code, _, body = m.request(t, http.MethodGet, "/tasks/"+posted.ID, "", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /tasks/%s: %d %s", posted.ID, code, body)
	}
	var got struct {
		CreatedAt string `json:"created_at"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt != posted.CreatedAt || !strings.HasSuffix(posted.CreatedAt, "Z") {
		t.Fatalf("created_at %q from POST, %q from GET; want the same instant, written in UTC", posted.CreatedAt, got.CreatedAt)
	}
}
