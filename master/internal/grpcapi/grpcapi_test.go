package grpcapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

func start(t *testing.T) (*dispatch.Dispatcher, *grpc.ClientConn) {
	t.Helper()
	d, addr := startServer(t, Params{})
	return d, dial(t, addr)
}

// dial connects to addr in plaintext with opts added; the connection is
// closed when the test ends.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// startServer serves NodeService with p (Dispatcher and Log filled in, and
// limits defaulted) on 127.0.0.1 and returns its address.
func startServer(t *testing.T, p Params) (*dispatch.Dispatcher, string) {
	t.Helper()
	s := startWith(t, setup{params: p})
	return s.d, s.addr
}

// setup is what a test changes in the server startWith builds.
type setup struct {
	params      Params         // Dispatcher and Log are filled in, MaxRecvBytes defaulted
	storeOpts   []store.Option // passed to store.Open
	maxCmdBytes int            // the dispatcher's limit; 0: 1000
	// mono, when set, is the dispatcher's monotonic clock.
	mono func() time.Duration
	// live, when set, follows the dispatcher's events and takes
	// StreamOutput's chunks.
	live *liveout.Buffers
	// hub, when set, carries the dispatcher's events.
	hub *events.Hub
}

// served is a running NodeService and what stands behind it.
type served struct {
	d      *dispatch.Dispatcher
	st     *store.Store
	dbPath string
	addr   string
}

// startWith serves NodeService as su says on 127.0.0.1, over a store in
// t.TempDir(); everything stops when the test ends.
func startWith(t testing.TB, su setup) served {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dbPath := filepath.Join(t.TempDir(), "rh.db")
	st, err := store.Open(dbPath, log, su.storeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if su.maxCmdBytes == 0 {
		su.maxCmdBytes = 1000
	}
	hub := su.hub
	if su.live != nil {
		if hub == nil {
			hub = events.NewHub(10, 10)
		}
		hub.Observe(su.live.Observe)
		su.params.LiveOutput = su.live
	}
	d := dispatch.New(dispatch.Params{
		Log: log, Store: st, Now: time.Now, Mono: su.mono, NewID: uuid.NewString, Events: hub,
		MaxCmdBytes: su.maxCmdBytes, DefaultTimeout: time.Hour, MaxTimeout: 2 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second,
	})
	p := su.params
	p.Dispatcher = d
	if p.Log == nil {
		p.Log = log
	}
	if p.MaxRecvBytes == 0 {
		p.MaxRecvBytes = 16 << 20
	}
	gs, _ := New(p)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	t.Cleanup(func() {
		d.Close()
		gs.Stop()
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return served{d: d, st: st, dbPath: dbPath, addr: lis.Addr().String()}
}

// welcomed registers worker w1 (instance i1, one slot) and reads its
// Welcome, the first message of every accepted stream.
func welcomed(t *testing.T, ctx context.Context, c pb.NodeServiceClient) pb.NodeService_AssignTaskClient {
	t.Helper()
	stream, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("first message %v, %v; want the welcome", m, err)
	}
	return stream
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRegisterReceiveReport(t *testing.T) {
	d, cc := start(t)
	c := pb.NewNodeServiceClient(cc)
	ctx := ctxT(t)
	stream, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetWelcome() == nil {
		t.Fatalf("first message = %v, %v; want a Welcome", first, err)
	}
	if first.GetWelcome().GetRotationPosition() != 0 || first.GetWelcome().GetWorkers() != 1 {
		t.Errorf("welcome = %v", first.GetWelcome())
	}

	tk, _, err := d.Submit(context.Background(), dispatch.Submission{Cmd: "echo hi"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || msg.GetTask().GetId() != tk.ID || msg.GetTask().GetCmd() != "echo hi" || msg.GetTask().GetAttempt() != 1 {
		t.Fatalf("assignment = %v, %v", msg, err)
	}

	res := &pb.TaskResult{TaskId: tk.ID, WorkerId: "w1", InstanceId: "i1", Attempt: 1, ExitCode: 0, Stdout: []byte("hi\n")}
	ack, err := c.ReportStatus(ctx, res)
	if err != nil || ack.GetDuplicate() {
		t.Fatalf("report = %v, %v", ack, err)
	}
	got, _ := d.Get(context.Background(), tk.ID)
	if got.Status != task.StatusSucceeded || got.Stdout != "hi\n" || got.WorkerID != "w1" {
		t.Fatalf("task = %+v", got)
	}
	// The worker did not get the ack and sends the same result again: it is
	// acknowledged again, and is no duplicate.
	ack, err = c.ReportStatus(ctx, res)
	if err != nil || ack.GetDuplicate() {
		t.Fatalf("retried report = %v, %v; want a plain ack", ack, err)
	}
}

// A worker whose stream ends keeps its task for the claim window: it
// reconnects naming the delivery it still runs, keeps it, and reports it.
func TestReconnectingWorkerKeepsItsDelivery(t *testing.T) {
	d, cc := start(t)
	c := pb.NewNodeServiceClient(cc)
	sctx, cancel := context.WithCancel(ctxT(t))
	stream, err := c.AssignTask(sctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	tk, _, _ := d.Submit(context.Background(), dispatch.Submission{Cmd: "sleep 100"})
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel() // the worker gives up on its stream
	eventually(t, "worker to leave", func() bool { return len(d.Workers()) == 0 })
	if got, _ := d.Get(context.Background(), tk.ID); got.Status != task.StatusRunning || got.Attempts != 1 {
		t.Fatalf("task after its worker left = %s attempts %d, want still running: it waits for a claim", got.Status, got.Attempts)
	}

	stream, err = c.AssignTask(ctxT(t), &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1,
		Running: []*pb.RunningTask{{TaskId: tk.ID, Attempt: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("first message %v, %v; want the welcome", m, err)
	}
	next, _, _ := d.Submit(context.Background(), dispatch.Submission{Cmd: "true"})
	if w := d.Workers(); len(w) != 1 || w[0].Running != 1 {
		t.Fatalf("workers %+v, want w1 running its one claimed task", w)
	}
	if _, err := c.ReportStatus(ctxT(t), &pb.TaskResult{TaskId: tk.ID, WorkerId: "w1", InstanceId: "i1", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetTask().GetId() != next.ID || m.GetTask().GetAttempt() != 1 {
		t.Fatalf("after the report the worker got %v, %v; want %s", m, err, next.ID)
	}
	if got, _ := d.Get(context.Background(), tk.ID); got.Status != task.StatusSucceeded || got.Attempts != 1 {
		t.Fatalf("claimed task = %s attempts %d, want succeeded on its one delivery", got.Status, got.Attempts)
	}
}

func TestRefusals(t *testing.T) {
	_, cc := start(t)
	c := pb.NewNodeServiceClient(cc)
	ctx := ctxT(t)
	welcomed(t, ctx, c)
	tests := []struct {
		name string
		req  *pb.RegisterRequest
		want codes.Code
	}{
		{"another process with a taken ID", &pb.RegisterRequest{WorkerId: "w1", InstanceId: "other", Slots: 1}, codes.AlreadyExists},
		{"empty worker ID", &pb.RegisterRequest{InstanceId: "i", Slots: 1}, codes.InvalidArgument},
		{"worker ID with a space", &pb.RegisterRequest{WorkerId: "a b", InstanceId: "i", Slots: 1}, codes.InvalidArgument},
		{"no instance ID", &pb.RegisterRequest{WorkerId: "w2", Slots: 1}, codes.InvalidArgument},
		{"zero slots", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 0}, codes.InvalidArgument},
		{"too many slots", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 5000}, codes.InvalidArgument},
		{"a running task ID too long", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 1,
			Running: []*pb.RunningTask{{TaskId: strings.Repeat("x", 65), Attempt: 1}}}, codes.InvalidArgument},
		{"a running task without an ID", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 1,
			Running: []*pb.RunningTask{{Attempt: 1}}}, codes.InvalidArgument},
		{"a negative attempt", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 1,
			Running: []*pb.RunningTask{{TaskId: "t", Attempt: -1}}}, codes.InvalidArgument},
		{"a running_task_id too long", &pb.RegisterRequest{WorkerId: "w2", InstanceId: "i", Slots: 1,
			RunningTaskIds: []string{strings.Repeat("x", 65)}}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := c.AssignTask(ctx, tt.req)
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != tt.want {
				t.Fatalf("err = %v, want %s", err, tt.want)
			}
		})
	}
	if _, err := c.ReportStatus(ctx, &pb.TaskResult{TaskId: "nope", WorkerId: "w1", InstanceId: "i1", Attempt: 1}); status.Code(err) != codes.NotFound {
		t.Errorf("report for unknown task: %v, want NotFound", err)
	}
	if _, err := c.ReportStatus(ctx, &pb.TaskResult{WorkerId: "w1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("report without task ID: %v, want InvalidArgument", err)
	}
}

// Labels are checked at registration: a malformed set is refused with the
// reason, a good one (or none) registers.
func TestRegisterLabels(t *testing.T) {
	d, cc := start(t)
	c := pb.NewNodeServiceClient(cc)
	ctx := ctxT(t)
	many := map[string]string{}
	for i := range 17 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	tests := []struct {
		name    string
		labels  map[string]string
		wantErr string // empty: registers
	}{
		{name: "none"},
		{name: "some", labels: map[string]string{"gpu": "nvidia", "zone": "eu", "example.com/size": "large"}},
		{name: "key with a space", labels: map[string]string{"g pu": "nvidia"}, wantErr: `label key "g pu" has ' '`},
		{name: "empty key", labels: map[string]string{"": "x"}, wantErr: "must be 1-63 characters"},
		{name: "empty value", labels: map[string]string{"gpu": ""}, wantErr: "label gpu: the value must be"},
		{name: "comma in value", labels: map[string]string{"zone": "eu,us"}, wantErr: "values are made of"},
		{name: "too many", labels: many, wantErr: "17 labels; at most 16"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("w%d", i)
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := c.AssignTask(sctx, &pb.RegisterRequest{WorkerId: id, InstanceId: "i", Slots: 1, Labels: tt.labels})
			var m *pb.Assignment
			if err == nil {
				m, err = s.Recv()
			}
			if tt.wantErr == "" {
				if err != nil || m.GetWelcome() == nil {
					t.Fatalf("first message %v, %v; want the welcome", m, err)
				}
				i := slices.IndexFunc(d.Workers(), func(w dispatch.WorkerInfo) bool { return w.ID == id })
				if i < 0 {
					t.Fatalf("%s is not among the workers %+v", id, d.Workers())
				}
				if got := d.Workers()[i].Labels; !maps.Equal(got, tt.labels) {
					t.Errorf("%s has labels %v, want %v", id, got, tt.labels)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.wantErr) {
				t.Fatalf("err = %v, want InvalidArgument saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestRegistrationOf(t *testing.T) {
	req := &pb.RegisterRequest{
		WorkerId: "w1", InstanceId: "i1", Slots: 4,
		Running: []*pb.RunningTask{{TaskId: "a", Attempt: 2}},
		Labels:  map[string]string{"gpu": "nvidia", "zone": "eu"},
	}
	want := dispatch.Registration{
		WorkerID: "w1", InstanceID: "i1", Slots: 4,
		Running: []dispatch.Delivery{{TaskID: "a", Attempt: 2}},
		Labels:  map[string]string{"gpu": "nvidia", "zone": "eu"},
	}
	if got := registrationOf(req); !reflect.DeepEqual(got, want) {
		t.Errorf("registrationOf = %+v, want %+v", got, want)
	}
}

func TestHealthServiceRegistered(t *testing.T) {
	_, cc := start(t)
	resp, err := healthpb.NewHealthClient(cc).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}
}

func TestRunningOf(t *testing.T) {
	tests := []struct {
		name string
		req  *pb.RegisterRequest
		want []dispatch.Delivery
	}{
		{"nothing running", &pb.RegisterRequest{}, nil},
		{"only running_task_ids: the attempt is left to the master",
			&pb.RegisterRequest{RunningTaskIds: []string{"a", "b"}},
			[]dispatch.Delivery{{TaskID: "a"}, {TaskID: "b"}}},
		{"only running",
			&pb.RegisterRequest{Running: []*pb.RunningTask{{TaskId: "a", Attempt: 2}, {TaskId: "b", Attempt: 1}}},
			[]dispatch.Delivery{{TaskID: "a", Attempt: 2}, {TaskID: "b", Attempt: 1}}},
		{"both, with duplicates: the first delivery named wins, running before running_task_ids",
			&pb.RegisterRequest{
				Running:        []*pb.RunningTask{{TaskId: "a", Attempt: 2}, {TaskId: "a", Attempt: 3}, {TaskId: "b", Attempt: 1}},
				RunningTaskIds: []string{"b", "c", "a", "c"},
			},
			[]dispatch.Delivery{{TaskID: "a", Attempt: 2}, {TaskID: "b", Attempt: 1}, {TaskID: "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runningOf(tt.req); !slices.Equal(got, tt.want) {
				t.Fatalf("runningOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A worker's started_at and finished_at outside what the store keeps (int64
// nanoseconds since 1970: a clock gone wrong) count as not sent, so the
// master's own time stands in; kept as they were, 1600 would be stored as
// 2184 (never deleted by retention) and 2300 as 1715.
func TestWorkerTimesTheMasterCannotKeep(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{"ordinary", time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC)},
		{"the last it can keep", task.LastTime, task.LastTime},
		{"past 2262", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"before 1970", time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"1970 itself, which reads back as none", time.Unix(0, 0), time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := toResult(&pb.TaskResult{TaskId: "t", WorkerId: "w", InstanceId: "i", Attempt: 1,
				StartedAt: timestamppb.New(tc.at), FinishedAt: timestamppb.New(tc.at)})
			if err != nil {
				t.Fatal(err)
			}
			if !r.StartedAt.Equal(tc.want) || !r.FinishedAt.Equal(tc.want) {
				t.Errorf("started_at %s, finished_at %s; want %s", r.StartedAt, r.FinishedAt, tc.want)
			}
		})
	}
}
