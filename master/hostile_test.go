package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

const (
	apiToken    = "api-token-0123456789abcdef"
	nodeToken   = "node-token-0123456789abcdef"
	hostileKey  = "prefill-1"
	prefillCmd  = "echo prefill"
	maxQueuedIn = 2
)

// hostileMaster is a master with small limits, both tokens, and a full
// queue (MASTER_MAX_QUEUED tasks and no worker to take them).
func hostileMaster(t *testing.T) *testMaster {
	t.Helper()
	m := startMaster(t, map[string]string{
		"MASTER_API_TOKEN": apiToken, "MASTER_WORKER_TOKEN": nodeToken,
		"MASTER_MAX_BODY_BYTES": "1024", "MASTER_MAX_CMD_BYTES": "100", "MASTER_MAX_HEADER_BYTES": "4096",
		"MASTER_TASK_TIMEOUT": "1m", "MASTER_MAX_TASK_TIMEOUT": "1h", "MASTER_MAX_WAIT": "5s",
		"MASTER_MAX_QUEUED": fmt.Sprint(maxQueuedIn), "MASTER_MAX_OUTPUT_BYTES": "1024", "MASTER_GRPC_MAX_RECV_BYTES": "67584",
	})
	for i := range maxQueuedIn {
		hdr := map[string]string{}
		if i == 0 {
			hdr["Idempotency-Key"] = hostileKey
		}
		if code, _, body := m.request(t, "POST", "/tasks", apiToken, strings.NewReader(`{"cmd":"`+prefillCmd+`"}`), hdr); code != 202 {
			t.Fatalf("prefill: %d %s", code, body)
		}
	}
	return m
}

// taskCount is how many tasks GET /tasks lists.
func (m *testMaster) taskCount(t *testing.T) int {
	t.Helper()
	code, _, body := m.request(t, "GET", "/tasks?limit=1000", apiToken, nil, nil)
	var page struct{ Tasks []json.RawMessage }
	if code != 200 || json.Unmarshal([]byte(body), &page) != nil {
		t.Fatalf("GET /tasks: %d %s", code, body)
	}
	return len(page.Tasks)
}

// stillServes checks that the master answers probes and authenticated
// requests, that no task appeared and no worker joined.
func (m *testMaster) stillServes(t *testing.T, tasks int) {
	t.Helper()
	if code, _, body := m.request(t, "GET", "/healthz", "", nil, nil); code != 200 {
		t.Errorf("GET /healthz: %d %s", code, body)
	}
	if n := m.taskCount(t); n != tasks {
		t.Errorf("%d tasks, want %d: a hostile request created or removed one", n, tasks)
	}
	code, _, body := m.request(t, "GET", "/workers", apiToken, nil, nil)
	if code != 200 || !strings.Contains(body, `"workerCount": 0`) {
		t.Errorf("GET /workers: %d %s, want 200 and no worker", code, body)
	}
}

func TestHostileRequests(t *testing.T) {
	m := hostileMaster(t)
	long := strings.Repeat("x", 101)
	type req struct {
		name, method, path string
		token              string // "" sends none
		body               string
		hdr                map[string]string
		want               int
		wantErr            string // part of the JSON error (or, for net/http's own answers, of the body)
	}
	auth := apiToken
	cases := []req{
		// Who may ask.
		{"no token", "GET", "/tasks", "", "", nil, 401, "missing API token"},
		{"no token, valid task", "POST", "/tasks", "", `{"cmd":"echo hi"}`, nil, 401, "missing API token"},
		{"wrong token", "GET", "/tasks", "nope-nope-nope-nope-nope", "", nil, 401, "invalid API token"},
		{"token of the workers", "POST", "/tasks", nodeToken, `{"cmd":"echo hi"}`, nil, 401, "invalid API token"},
		{"malformed authorization", "GET", "/workers", "", "", map[string]string{"Authorization": "Token " + apiToken}, 401, `"Bearer <token>"`},
		{"token in the query string", "GET", "/tasks?token=" + apiToken, "", "", nil, 401, "missing API token"},
		{"unknown endpoint without a token", "GET", "/admin", "", "", nil, 401, "missing API token"},
		{"cross-site browser request", "POST", "/tasks", auth, `{"cmd":"echo hi"}`, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-origin"},
		// Bodies.
		{"oversized body", "POST", "/tasks", auth, `{"cmd":"` + strings.Repeat("y", 2000) + `"}`, nil, 413, "larger than 1024 bytes"},
		{"cmd too long", "POST", "/tasks", auth, `{"cmd":"` + long + `"}`, nil, 400, "limit is 100"},
		{"invalid UTF-8 in cmd", "POST", "/tasks", auth, "{\"cmd\":\"echo \xff\xfe\"}", nil, 400, "not valid UTF-8"},
		{"invalid UTF-8 outside cmd", "POST", "/tasks", auth, "{\"cmd\":\"echo\",\"x\xc3\":1}", nil, 400, "not valid UTF-8"},
		{"NUL in cmd", "POST", "/tasks", auth, `{"cmd":"echo a\u0000b"}`, nil, 400, "NUL"},
		{"escape sequence in cmd", "POST", "/tasks", auth, `{"cmd":"echo \u001b[2J"}`, nil, 400, "control character U+001B"},
		{"blank cmd", "POST", "/tasks", auth, `{"cmd":" \n "}`, nil, 400, "must not be blank"},
		{"unknown field", "POST", "/tasks", auth, `{"cmd":"ls","prio":9}`, nil, 400, `unknown field "prio"`},
		{"cmd is a number", "POST", "/tasks", auth, `{"cmd":42}`, nil, 400, `"cmd" must be a string`},
		{"cmd is an array", "POST", "/tasks", auth, `{"cmd":["ls","-l"]}`, nil, 400, `"cmd" must be a string`},
		{"timeout is a number", "POST", "/tasks", auth, `{"cmd":"ls","timeout":30}`, nil, 400, `"timeout" must be a string`},
		{"max_attempts is a string", "POST", "/tasks", auth, `{"cmd":"ls","max_attempts":"3"}`, nil, 400, `"max_attempts" must be a whole number`},
		{"max_attempts is a fraction", "POST", "/tasks", auth, `{"cmd":"ls","max_attempts":1.5}`, nil, 400, `"max_attempts" must be a whole number`},
		{"max_attempts overflows", "POST", "/tasks", auth, `{"cmd":"ls","max_attempts":99999999999999999999}`, nil, 400, `"max_attempts" must be a whole number`},
		{"max_attempts zero", "POST", "/tasks", auth, `{"cmd":"ls","max_attempts":0}`, nil, 400, "at least 1"},
		{"max_attempts too many", "POST", "/tasks", auth, `{"cmd":"ls","max_attempts":101}`, nil, 400, "between 1 and 100"},
		{"negative timeout", "POST", "/tasks", auth, `{"cmd":"ls","timeout":"-5s"}`, nil, 400, "positive duration"},
		{"huge timeout", "POST", "/tasks", auth, `{"cmd":"ls","timeout":"100000h"}`, nil, 400, "between 1s and 1h0m0s"},
		{"sub-second timeout", "POST", "/tasks", auth, `{"cmd":"ls","timeout":"10ms"}`, nil, 400, "between 1s and 1h0m0s"},
		{"timeout not a duration", "POST", "/tasks", auth, `{"cmd":"ls","timeout":"soon"}`, nil, 400, "positive duration"},
		{"two objects", "POST", "/tasks", auth, `{"cmd":"ls"}{"cmd":"rm -rf /"}`, nil, 400, "after the JSON object"},
		{"trailing garbage", "POST", "/tasks", auth, `{"cmd":"ls"} garbage`, nil, 400, "after the JSON object"},
		{"JSON array body", "POST", "/tasks", auth, `[{"cmd":"ls"}]`, nil, 400, "must be a JSON object"},
		{"JSON null body", "POST", "/tasks", auth, `null`, nil, 400, `"cmd" is required`},
		{"JSON number body", "POST", "/tasks", auth, `42`, nil, 400, "must be a JSON object"},
		{"JSON string body", "POST", "/tasks", auth, `"ls"`, nil, 400, "must be a JSON object"},
		{"empty body", "POST", "/tasks", auth, ``, nil, 400, "body is empty"},
		{"truncated JSON", "POST", "/tasks", auth, `{"cmd":"ls"`, nil, 400, "not valid JSON"},
		{"deeply nested JSON", "POST", "/tasks", auth, `{"cmd":"ls","x":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`, nil, 400, `unknown field "x"`},
		// Query strings.
		{"wait not a duration", "POST", "/tasks?wait=abc", auth, `{"cmd":"ls"}`, nil, 400, "wait must be a duration"},
		{"negative wait", "GET", "/tasks/x?wait=-1s", auth, "", nil, 400, "wait must be a duration"},
		{"wait over the max", "POST", "/tasks?wait=1h", auth, `{"cmd":"ls"}`, nil, 400, "between 0s and 5s"},
		{"misspelled parameter", "POST", "/tasks?wiat=1s", auth, `{"cmd":"ls"}`, nil, 400, `unknown query parameter "wiat"`},
		{"wait given twice", "POST", "/tasks?wait=1s&wait=2s", auth, `{"cmd":"ls"}`, nil, 400, "given 2 times"},
		{"malformed query", "GET", "/tasks?limit=%zz", auth, "", nil, 400, "query string is malformed"},
		{"limit zero", "GET", "/tasks?limit=0", auth, "", nil, 400, "limit must be"},
		{"limit overflows", "GET", "/tasks?limit=99999999999999999999", auth, "", nil, 400, "limit must be"},
		{"unknown status", "GET", "/tasks?status=queued,pwned", auth, "", nil, 400, `unknown status "pwned"`},
		{"parameter on workers", "GET", "/workers?all=1", auth, "", nil, 400, "takes none"},
		// Paths.
		{"path traversal", "GET", "/tasks/../workers", auth, "", nil, 404, "no such endpoint"},
		{"encoded path traversal", "GET", "/tasks/..%2F..%2Fetc%2Fpasswd", auth, "", nil, 404, "no such endpoint"},
		{"dot-dot id", "GET", "/tasks/..", auth, "", nil, 400, "a task ID is"},
		{"NUL in id", "GET", "/tasks/a%00b", auth, "", nil, 400, "a task ID is"},
		{"very long id", "GET", "/tasks/" + strings.Repeat("a", 1000), auth, "", nil, 400, "a task ID is"},
		{"quote in id", "DELETE", "/tasks/a'%20OR%201=1", auth, "", nil, 400, "a task ID is"},
		{"unknown id", "GET", "/tasks/0000", auth, "", nil, 404, "not found"},
		// Headers.
		{"Idempotency-Key with a space", "POST", "/tasks", auth, `{"cmd":"ls"}`, map[string]string{"Idempotency-Key": "a b"}, 400, "Idempotency-Key"},
		{"Idempotency-Key too long", "POST", "/tasks", auth, `{"cmd":"ls"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 201)}, 400, "Idempotency-Key"},
		{"Idempotency-Key not ASCII", "POST", "/tasks", auth, `{"cmd":"ls"}`, map[string]string{"Idempotency-Key": "clé"}, 400, "Idempotency-Key"},
		{"Idempotency-Key reused for another cmd", "POST", "/tasks", auth, `{"cmd":"echo other"}`, map[string]string{"Idempotency-Key": hostileKey}, 409, "fields that differ: cmd"},
		{"huge header", "GET", "/tasks", auth, "", map[string]string{"X-Junk": strings.Repeat("j", 20000)}, 431, "Request Header Fields Too Large"},
		// Methods and endpoints.
		{"PUT on tasks", "PUT", "/tasks", auth, `{"cmd":"ls"}`, nil, 405, "not allowed"},
		{"PATCH on a task", "PATCH", "/tasks/abc", auth, `{}`, nil, 405, "not allowed"},
		{"POST on workers", "POST", "/workers", auth, `{}`, nil, 405, "not allowed"},
		{"unknown endpoint", "GET", "/admin/exec", auth, "", nil, 404, "no such endpoint"},
		// The queue is full.
		{"queue full", "POST", "/tasks", auth, `{"cmd":"echo one too many"}`, nil, 429, "MASTER_MAX_QUEUED"},
		{"replay on a full queue", "POST", "/tasks", auth, `{"cmd":"` + prefillCmd + `"}`, map[string]string{"Idempotency-Key": hostileKey}, 200, ""},
	}
	for _, tt := range cases {
		t.Run("http/"+tt.name, func(t *testing.T) {
			code, hdr, body := m.request(t, tt.method, tt.path, tt.token, strings.NewReader(tt.body), tt.hdr)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			switch {
			case code == 431: // answered by net/http before any handler
				if !strings.Contains(body, tt.wantErr) {
					t.Errorf("body %q, want %q", body, tt.wantErr)
				}
			case code >= 400:
				var e struct{ Error string }
				if hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tt.wantErr) {
					t.Errorf("body %s (%s), want a JSON error containing %q", body, hdr.Get("Content-Type"), tt.wantErr)
				}
				for _, leak := range []string{"goroutine", ".go:", "/tmp/", "rh.db", "sqlite", apiToken, nodeToken} {
					if strings.Contains(body, leak) {
						t.Errorf("the error leaks %q: %s", leak, body)
					}
				}
			}
			if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", hdr.Get("WWW-Authenticate"))
			}
			if code == 429 && hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			m.stillServes(t, maxQueuedIn)
		})
	}

	grpcCases := grpcHostileCases(t, m)
	for _, tt := range grpcCases {
		t.Run("grpc/"+tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Fatalf("err = %v, want %s with %q", err, tt.want, tt.wantMsg)
			}
			m.stillServes(t, maxQueuedIn)
		})
	}
	if n := len(cases) + len(grpcCases); n < 40 {
		t.Fatalf("%d cases; the issue asks for at least 40", n)
	}
	for _, leak := range []string{apiToken, nodeToken} {
		if strings.Contains(m.log.String(), leak) {
			t.Errorf("the master's log holds a token")
		}
	}
	if strings.Contains(m.log.String(), "panic") {
		t.Errorf("a handler panicked:\n%s", m.log.String())
	}
}

type grpcCase struct {
	name    string
	call    func() error
	want    codes.Code
	wantMsg string
}

// rawCodec sends bytes as they are, so a test can send what no proto
// library would encode (invalid UTF-8 in a string field).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *v.(*[]byte) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

func grpcHostileCases(t *testing.T, m *testMaster) []grpcCase {
	cc, err := grpc.NewClient(m.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := pb.NewNodeServiceClient(cc)
	withToken := func(tok string) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		return ctx, cancel
	}
	// register opens a stream and returns the error of its first message.
	register := func(tok string, r *pb.RegisterRequest) func() error {
		return func() error {
			ctx, cancel := withToken(tok)
			defer cancel()
			s, err := c.AssignTask(ctx, r)
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}
	}
	report := func(r *pb.TaskResult) func() error {
		return func() error {
			ctx, cancel := withToken(nodeToken)
			defer cancel()
			_, err := c.ReportStatus(ctx, r)
			return err
		}
	}
	ok := &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1}
	res := func(edit func(*pb.TaskResult)) *pb.TaskResult {
		r := &pb.TaskResult{TaskId: "0000", WorkerId: "w1", InstanceId: "i1", Attempt: 1}
		edit(r)
		return r
	}
	// A ReportStatus whose task_id is not UTF-8, encoded by hand.
	var badUTF8 []byte
	badUTF8 = protowire.AppendTag(badUTF8, 1, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte("t\xff\xfe"))
	return []grpcCase{
		{"register without a token", register("", ok), codes.Unauthenticated, "missing worker token"},
		{"register with a wrong token", register("wrong-wrong-wrong-wrong", ok), codes.Unauthenticated, "invalid worker token"},
		{"register with the API token", register(apiToken, ok), codes.Unauthenticated, "invalid worker token"},
		{"report without a token", func() error {
			_, err := c.ReportStatus(context.Background(), res(func(*pb.TaskResult) {}))
			return err
		}, codes.Unauthenticated, "missing worker token"},
		{"heartbeat without a token", func() error {
			_, err := c.Heartbeat(context.Background(), &pb.HeartbeatRequest{WorkerId: "w1", InstanceId: "i1"})
			return err
		}, codes.Unauthenticated, "missing worker token"},
		{"empty worker id", register(nodeToken, &pb.RegisterRequest{InstanceId: "i1", Slots: 1}), codes.InvalidArgument, "worker_id"},
		{"huge worker id", register(nodeToken, &pb.RegisterRequest{WorkerId: strings.Repeat("w", 10000), InstanceId: "i1", Slots: 1}), codes.InvalidArgument, "worker_id"},
		{"worker id with a slash", register(nodeToken, &pb.RegisterRequest{WorkerId: "../w", InstanceId: "i1", Slots: 1}), codes.InvalidArgument, "worker_id"},
		{"empty instance id", register(nodeToken, &pb.RegisterRequest{WorkerId: "w1", Slots: 1}), codes.InvalidArgument, "instance_id"},
		{"zero slots", register(nodeToken, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1"}), codes.InvalidArgument, "slots"},
		{"negative slots", register(nodeToken, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: -5}), codes.InvalidArgument, "slots"},
		{"huge slots", register(nodeToken, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1 << 30}), codes.InvalidArgument, "slots"},
		{"too many running ids", register(nodeToken, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1, RunningTaskIds: make([]string, 5000)}), codes.InvalidArgument, "running_task_ids"},
		{"report for an unknown task", report(res(func(*pb.TaskResult) {})), codes.NotFound, "not found"},
		{"report with attempt 0", report(res(func(r *pb.TaskResult) { r.Attempt = 0 })), codes.InvalidArgument, "attempt"},
		{"report with a negative attempt", report(res(func(r *pb.TaskResult) { r.Attempt = -1 })), codes.InvalidArgument, "attempt"},
		{"report without a task id", report(res(func(r *pb.TaskResult) { r.TaskId = "" })), codes.InvalidArgument, "task_id"},
		{"report with a huge task id", report(res(func(r *pb.TaskResult) { r.TaskId = strings.Repeat("t", 5000) })), codes.InvalidArgument, "task_id"},
		{"report without an instance id", report(res(func(r *pb.TaskResult) { r.InstanceId = "" })), codes.InvalidArgument, "instance_id"},
		{"report with an impossible timestamp", report(res(func(r *pb.TaskResult) { r.StartedAt = &timestamppb.Timestamp{Seconds: 1 << 62} })), codes.InvalidArgument, "timestamps"},
		{"report with a huge error text", report(res(func(r *pb.TaskResult) { r.Error = strings.Repeat("e", 5000) })), codes.InvalidArgument, "error is longer"},
		{"oversized message", report(res(func(r *pb.TaskResult) { r.Stdout = make([]byte, 100_000) })), codes.ResourceExhausted, "larger than max"},
		{"invalid UTF-8 in a string field", func() error {
			ctx, cancel := withToken(nodeToken)
			defer cancel()
			var out []byte
			return cc.Invoke(ctx, "/roundhouse.v1.NodeService/ReportStatus", &badUTF8, &out, grpc.ForceCodec(rawCodec{}))
		}, codes.Internal, "invalid UTF-8"},
		{"drain of an unknown worker", func() error {
			ctx, cancel := withToken(nodeToken)
			defer cancel()
			_, err := c.Drain(ctx, &pb.DrainRequest{WorkerId: "ghost", InstanceId: "i"})
			return err
		}, codes.NotFound, "ghost"},
	}
}
