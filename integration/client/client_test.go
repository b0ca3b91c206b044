package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A fake master: a task that becomes final on the third GET, and a worker
// count that grows by one per GET /workers.
func fakeMaster(t *testing.T) *httptest.Server {
	var gets, workerGets atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tasks", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"cmd":"echo hi"`) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid request: field \"cmd\" is required"}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"id":"t1","cmd":"echo hi","status":"queued"}`))
	})
	mux.HandleFunc("GET /tasks/t1", func(w http.ResponseWriter, r *http.Request) {
		if gets.Add(1) < 3 {
			w.Write([]byte(`{"id":"t1","status":"running","worker_id":"w1"}`))
			return
		}
		w.Write([]byte(`{"id":"t1","status":"succeeded","worker_id":"w1","exit_code":0,"stdout":"hi\n"}`))
	})
	mux.HandleFunc("GET /workers", func(w http.ResponseWriter, r *http.Request) {
		n := workerGets.Add(1)
		ws := strings.Repeat(`{"id":"w"},`, int(n))
		w.Write([]byte(`{"workerCount":` + strconv.Itoa(int(n)) + `,"workers":[` + strings.TrimSuffix(ws, ",") + `]}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestSubmitAndWaitFinal(t *testing.T) {
	c := New(fakeMaster(t).URL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tk, err := c.Submit(ctx, "echo hi")
	if err != nil || tk.ID != "t1" || tk.Status != "queued" || tk.Final() {
		t.Fatalf("Submit = %+v, %v", tk, err)
	}
	tk, err = c.WaitFinal(ctx, "t1")
	if err != nil || tk.Status != "succeeded" || tk.Worker() != "w1" || *tk.ExitCode != 0 || tk.Stdout != "hi\n" {
		t.Fatalf("WaitFinal = %+v, %v", tk, err)
	}
}

func TestErrorsCarryTheServersMessage(t *testing.T) {
	c := New(fakeMaster(t).URL)
	_, err := c.Submit(context.Background(), "other")
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `field \"cmd\" is required`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Get(context.Background(), "missing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get missing: %v", err)
	}
}

func TestWaitWorkers(t *testing.T) {
	c := New(fakeMaster(t).URL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, err := c.WaitWorkers(ctx, 3)
	if err != nil || ws.WorkerCount != 3 || len(ws.IDs()) != 3 {
		t.Fatalf("WaitWorkers = %+v, %v", ws, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := c.WaitWorkers(short, 0); err == nil {
		t.Fatal("waiting for a count never reached: want an error")
	}
}
