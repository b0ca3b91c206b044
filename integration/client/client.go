// Package client is a small client of the master's REST API, for the
// container tests and the demo. It talks only HTTP: what a user's curl sees.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Task is a task as GET /tasks/{id} shows it.
type Task struct {
	ID         string     `json:"id"`
	Cmd        string     `json:"cmd"`
	Status     string     `json:"status"`
	Attempts   int        `json:"attempts"`
	WorkerID   *string    `json:"worker_id"`
	ExitCode   *int       `json:"exit_code"`
	Stdout     string     `json:"stdout"`
	Stderr     string     `json:"stderr"`
	Error      *string    `json:"error"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// Final reports whether the task has reached a state it never leaves.
func (t Task) Final() bool { return t.Status == "succeeded" || t.Status == "failed" }

// Worker returns the worker ID, or "" when none.
func (t Task) Worker() string {
	if t.WorkerID == nil {
		return ""
	}
	return *t.WorkerID
}

// Workers is GET /workers.
type Workers struct {
	WorkerCount int `json:"workerCount"`
	Workers     []struct {
		ID        string `json:"id"`
		Slots     int    `json:"slots"`
		Running   int    `json:"running"`
		Completed int    `json:"completed"`
	} `json:"workers"`
}

// IDs lists the workers' IDs in rotation order.
func (w Workers) IDs() []string {
	ids := make([]string, 0, len(w.Workers))
	for _, x := range w.Workers {
		ids = append(ids, x.ID)
	}
	return ids
}

// Client calls one master.
type Client struct {
	Base string // e.g. http://127.0.0.1:9092
	HTTP *http.Client
}

// New returns a client of the master at base.
func New(base string) *Client {
	return &Client{Base: base, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// Submit posts a command and returns the accepted task.
func (c *Client) Submit(ctx context.Context, cmd string) (Task, error) {
	body, _ := json.Marshal(map[string]string{"cmd": cmd})
	var t Task
	err := c.do(ctx, http.MethodPost, "/tasks", body, http.StatusAccepted, &t)
	return t, err
}

// Get returns a task.
func (c *Client) Get(ctx context.Context, id string) (Task, error) {
	var t Task
	err := c.do(ctx, http.MethodGet, "/tasks/"+id, nil, http.StatusOK, &t)
	return t, err
}

// Workers returns the connected workers.
func (c *Client) Workers(ctx context.Context) (Workers, error) {
	var w Workers
	err := c.do(ctx, http.MethodGet, "/workers", nil, http.StatusOK, &w)
	return w, err
}

// WaitFinal polls a task until it is final or ctx ends.
func (c *Client) WaitFinal(ctx context.Context, id string) (Task, error) {
	var last Task
	err := Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		t, err := c.Get(ctx, id)
		last = t
		return err == nil && t.Final(), nil
	})
	if err != nil {
		return last, fmt.Errorf("task %s not final (last status %q): %w", id, last.Status, err)
	}
	return last, nil
}

// WaitWorkers polls until exactly n workers are connected, and returns them.
func (c *Client) WaitWorkers(ctx context.Context, n int) (Workers, error) {
	var last Workers
	err := Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		w, err := c.Workers(ctx)
		last = w
		return err == nil && w.WorkerCount == n, nil
	})
	if err != nil {
		return last, fmt.Errorf("want %d workers, have %v: %w", n, last.IDs(), err)
	}
	return last, nil
}

// Poll calls cond every interval until it returns true or an error, or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, out)
}
