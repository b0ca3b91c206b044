package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	// Idempotency: key k1 makes t2 once; later requests with k1 replay it,
	// or conflict when the command differs.
	var madeT2 atomic.Bool
	mux.HandleFunc("POST /v2/tasks", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("wait") != "20s" || !strings.Contains(string(body), `"timeout":"1s"`) || !strings.Contains(string(body), `"max_attempts":2`) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"options not sent: ` + r.URL.RawQuery + " " + strings.ReplaceAll(string(body), `"`, `'`) + `"}`))
			return
		}
		switch {
		case r.Header.Get("Idempotency-Key") != "k1":
			w.WriteHeader(http.StatusBadRequest)
		case !strings.Contains(string(body), `"cmd":"echo idem"`):
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"conflict: key k1 was used for another command"}`))
		case madeT2.Swap(true):
			w.Header().Set("Idempotent-Replayed", "true")
			w.Write([]byte(`{"id":"t2","status":"succeeded","history":[{"attempt":1,"worker_id":"w1","outcome":"succeeded","exit_code":0}]}`))
		default:
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"id":"t2","status":"succeeded","history":[{"attempt":1,"worker_id":"w1","outcome":"succeeded","exit_code":0}]}`))
		}
	})
	mux.HandleFunc("DELETE /tasks/q", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"q","status":"canceled","attempts":0,"history":[]}`))
	})
	mux.HandleFunc("DELETE /tasks/t1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"conflict: task t1 is already succeeded"}`))
	})
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cursor") == "" {
			w.Write([]byte(`{"tasks":[{"id":"t3","status":"timed_out"},{"id":"t2","status":"canceled"}],"next_cursor":"c1"}`))
			return
		}
		w.Write([]byte(`{"tasks":[{"id":"t1","status":"` + r.URL.Query().Get("status") + `"}],"next_cursor":null}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestSubmitWithOptionsAndIdempotency(t *testing.T) {
	srv := fakeMaster(t)
	c := New(srv.URL + "/v2")
	ctx := context.Background()
	s := Submit{Cmd: "echo idem", Timeout: "1s", MaxAttempts: 2, IdempotencyKey: "k1", Wait: 20 * time.Second}
	tk, code, err := c.SubmitWith(ctx, s)
	if err != nil || code != http.StatusAccepted || tk.ID != "t2" || tk.Replayed || !tk.Final() || len(tk.History) != 1 || tk.History[0].Outcome != "succeeded" {
		t.Fatalf("first SubmitWith = %+v, %d, %v", tk, code, err)
	}
	tk, code, err = c.SubmitWith(ctx, s)
	if err != nil || code != http.StatusOK || tk.ID != "t2" || !tk.Replayed {
		t.Fatalf("replayed SubmitWith = %+v, %d, %v", tk, code, err)
	}
	s.Cmd = "echo other"
	if _, code, err = c.SubmitWith(ctx, s); err == nil || code != http.StatusConflict {
		t.Fatalf("conflicting SubmitWith = %d, %v; want 409 and an error", code, err)
	}
}

func TestCancel(t *testing.T) {
	c := New(fakeMaster(t).URL)
	ctx := context.Background()
	tests := []struct {
		name, id   string
		wantCode   int
		wantStatus string
		wantErr    bool
	}{
		{name: "canceled", id: "q", wantCode: http.StatusOK, wantStatus: "canceled"},
		{name: "already final", id: "t1", wantCode: http.StatusConflict},
		{name: "missing", id: "nope", wantCode: http.StatusNotFound, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, code, err := c.Cancel(ctx, tt.id)
			if code != tt.wantCode || tk.Status != tt.wantStatus || (err != nil) != tt.wantErr {
				t.Fatalf("Cancel(%s) = %+v, %d, %v", tt.id, tk, code, err)
			}
		})
	}
}

func TestListPages(t *testing.T) {
	c := New(fakeMaster(t).URL)
	ctx := context.Background()
	tasks, next, err := c.List(ctx, nil)
	if err != nil || len(tasks) != 2 || next != "c1" || !tasks[0].Final() || !tasks[1].Final() {
		t.Fatalf("page 1 = %+v, %q, %v", tasks, next, err)
	}
	tasks, next, err = c.List(ctx, url.Values{"cursor": {next}, "status": {"failed"}})
	if err != nil || len(tasks) != 1 || tasks[0].Status != "failed" || next != "" {
		t.Fatalf("page 2 = %+v, %q, %v", tasks, next, err)
	}
}

// ListAll follows the cursor to the last page, keeps the caller's filter on
// every page, and leaves the caller's query as it was.
func TestListAll(t *testing.T) {
	c := New(fakeMaster(t).URL)
	q := url.Values{"status": {"failed"}}
	tasks, err := c.ListAll(context.Background(), q)
	var ids []string
	for _, tk := range tasks {
		ids = append(ids, tk.ID)
	}
	if err != nil || strings.Join(ids, ",") != "t3,t2,t1" || tasks[2].Status != "failed" {
		t.Fatalf("ListAll = %+v, %v; want t3, t2 and a failed t1", tasks, err)
	}
	if len(q) != 1 || q.Get("cursor") != "" {
		t.Errorf("ListAll changed the caller's query to %v", q)
	}
	all, err := c.ListAll(context.Background(), nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("ListAll(nil) = %+v, %v; want 3 tasks", all, err)
	}
}

// A loop over Pages that stops reads no further page, and an error ends
// ListAll with the server's message.
func TestPagesStopAndError(t *testing.T) {
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch gets.Add(1) {
		case 1:
			w.Write([]byte(`{"tasks":[{"id":"t2"}],"next_cursor":"c1"}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"error":"database is gone"}`))
		}
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	for page, err := range c.Pages(context.Background(), nil) {
		if err != nil || len(page) != 1 {
			t.Fatalf("first page = %+v, %v", page, err)
		}
		break
	}
	if n := gets.Load(); n != 1 {
		t.Fatalf("a loop that stopped after one page made %d requests", n)
	}
	tasks, err := c.ListAll(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "database is gone") || tasks != nil {
		t.Fatalf("ListAll over a failing page = %+v, %v; want the server's error", tasks, err)
	}
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

func TestWithTokenSendsABearerToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret-token" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"unauthenticated: invalid API token"}`))
			return
		}
		w.Write([]byte(`{"workerCount":0,"workers":[]}`))
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	if _, err := New(srv.URL, WithToken("s3cret-token")).Workers(ctx); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	_, err := New(srv.URL).Workers(ctx)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "invalid API token") {
		t.Fatalf("without a token: err = %v, want the 401 and its message", err)
	}
}

// SubmitWith sends the scheduling fields as the API names them, leaves
// zero ones out, and reads them back from the task.
func TestSubmitWithScheduling(t *testing.T) {
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = nil
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"id":"t1","status":"scheduled","priority":1,"requires":{"gpu":"nvidia"},"run_at":"2026-12-01T09:30:00Z",` +
			`"retry_on":["failed","timed_out"],"backoff":"2s","max_backoff":"1m0s","waiting_for":null}`))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	runAt := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		name string
		s    Submit
		want string // the body sent, as JSON with sorted keys
	}{
		{name: "none", s: Submit{Cmd: "true"}, want: `{"cmd":"true"}`},
		{
			name: "every field",
			s: Submit{Cmd: "exit 3", Priority: 1, Requires: map[string]string{"gpu": "nvidia"}, RunAt: runAt,
				RetryOn: []string{"failed", "timed_out"}, Backoff: "2s", MaxBackoff: "1m"},
			want: `{"backoff":"2s","cmd":"exit 3","max_backoff":"1m","priority":1,"requires":{"gpu":"nvidia"},"retry_on":["failed","timed_out"],"run_at":"2026-12-01T09:30:00Z"}`,
		},
		{name: "delay", s: Submit{Cmd: "true", Delay: "30s"}, want: `{"cmd":"true","delay":"30s"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, code, err := c.SubmitWith(context.Background(), tt.s)
			if err != nil || code != http.StatusAccepted {
				t.Fatalf("SubmitWith = %d, %v", code, err)
			}
			if b, _ := json.Marshal(got); string(b) != tt.want {
				t.Errorf("sent %s, want %s", b, tt.want)
			}
			if tk.Status != "scheduled" || tk.Final() || tk.Priority != 1 || tk.Requires["gpu"] != "nvidia" || tk.RunAt == nil || !tk.RunAt.Equal(runAt) ||
				strings.Join(tk.RetryOn, ",") != "failed,timed_out" || tk.Backoff != "2s" || tk.MaxBackoff != "1m0s" || tk.WaitingFor != "" {
				t.Errorf("task read back = %+v", tk)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tasks/failed/retry", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"id":"failed","status":"queued","attempts":1,"history":[{"attempt":1,"outcome":"failed","exit_code":3}]}`))
	})
	mux.HandleFunc("POST /tasks/running/retry", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"conflict: task running is running; only a final task can be retried"}`))
	})
	mux.HandleFunc("POST /tasks/nope/retry", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"not found: task nope"}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	tests := []struct {
		name, id   string
		wantCode   int
		wantStatus string
		wantErr    bool
	}{
		{name: "final", id: "failed", wantCode: http.StatusAccepted, wantStatus: "queued"},
		{name: "not final", id: "running", wantCode: http.StatusConflict},
		{name: "missing", id: "nope", wantCode: http.StatusNotFound, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, code, err := c.Retry(context.Background(), tt.id)
			if code != tt.wantCode || tk.Status != tt.wantStatus || (err != nil) != tt.wantErr {
				t.Fatalf("Retry(%s) = %+v, %d, %v", tt.id, tk, code, err)
			}
		})
	}
}

func TestQueueAndWorkerLabels(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /queue", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"queued":3,"by_priority":{"1":1,"2":0,"3":0,"4":0,"5":2},"scheduled":1,"next_run_at":"2026-12-01T09:30:00Z",` +
			`"groups":[{"requires":{},"queued":2,"eligible":1,"waiting_for":null},` +
			`{"requires":{"gpu":"nvidia"},"queued":1,"eligible":0,"waiting_for":"no connected worker has gpu=nvidia"}]}`))
	})
	mux.HandleFunc("GET /workers", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"workerCount":2,"workers":[{"id":"a","labels":{}},{"id":"b","labels":{"gpu":"nvidia"}}]}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	q, err := c.Queue(context.Background())
	if err != nil || q.Queued != 3 || q.ByPriority[1] != 1 || q.ByPriority[5] != 2 || q.Scheduled != 1 || q.NextRunAt == nil || len(q.Groups) != 2 {
		t.Fatalf("Queue = %+v, %v", q, err)
	}
	if g := q.Groups[1]; g.Requires["gpu"] != "nvidia" || g.Eligible != 0 || g.WaitingFor != "no connected worker has gpu=nvidia" || q.Groups[0].WaitingFor != "" {
		t.Errorf("groups = %+v", q.Groups)
	}
	ws, err := c.Workers(context.Background())
	if err != nil || len(ws.Workers) != 2 || len(ws.Workers[0].Labels) != 0 || ws.Workers[1].Labels["gpu"] != "nvidia" {
		t.Fatalf("Workers = %+v, %v", ws, err)
	}
}
