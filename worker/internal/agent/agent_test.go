package agent

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

const within = 10 * time.Second

// fakeMaster is a NodeService that records what workers send it. One
// fakeMaster may be served by several grpc.Servers in turn, as a master
// restarting on the same address would be.
type fakeMaster struct {
	pb.UnimplementedNodeServiceServer

	registrations chan *pb.RegisterRequest  // every AssignTask call
	reports       chan *pb.TaskResult       // every acknowledged report
	tasks         chan *pb.Task             // sent on whichever stream is open
	cancels       chan string               // Cancels sent on whichever stream is open
	heartbeats    chan *pb.HeartbeatRequest // heartbeats, while there is room
	drains        chan *pb.DrainRequest     // every Drain call
	streamsEnded  chan struct{}             // one per AssignTask stream whose context ended
	refuse        atomic.Bool               // answer AssignTask with AlreadyExists
	unknown       atomic.Bool               // answer heartbeats with known = false
	heartbeatErr  atomic.Bool               // answer heartbeats with Unavailable
	reportCalls   atomic.Int32
	tasksSent     atomic.Int32
	// reportErr, if set before serving, decides the answer to a report.
	reportErr func(r *pb.TaskResult, call int32) error
}

// heartbeatInterval is what the fake master's Welcome asks for.
const heartbeatInterval = 100 * time.Millisecond

var _ pb.NodeServiceServer = (*fakeMaster)(nil)

func newFakeMaster() *fakeMaster {
	return &fakeMaster{
		registrations: make(chan *pb.RegisterRequest, 100),
		reports:       make(chan *pb.TaskResult, 100),
		tasks:         make(chan *pb.Task, 100),
		cancels:       make(chan string, 100),
		heartbeats:    make(chan *pb.HeartbeatRequest, 1000),
		drains:        make(chan *pb.DrainRequest, 100),
		streamsEnded:  make(chan struct{}, 100),
	}
}

func (f *fakeMaster) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	f.registrations <- req
	if f.refuse.Load() {
		return status.Error(codes.AlreadyExists, "worker ID held by another instance")
	}
	welcome := &pb.Assignment{Kind: &pb.Assignment_Welcome{Welcome: &pb.Welcome{
		RotationPosition: 0, Workers: 1, HeartbeatInterval: durationpb.New(heartbeatInterval),
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}
	for {
		select {
		case t := <-f.tasks:
			if err := stream.Send(&pb.Assignment{Kind: &pb.Assignment_Task{Task: t}}); err != nil {
				return err
			}
			f.tasksSent.Add(1)
		case id := <-f.cancels:
			if err := stream.Send(&pb.Assignment{Kind: &pb.Assignment_Cancel{Cancel: &pb.Cancel{TaskId: id}}}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			f.streamsEnded <- struct{}{}
			return stream.Context().Err()
		}
	}
}

func (f *fakeMaster) Heartbeat(_ context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatAck, error) {
	select {
	case f.heartbeats <- r:
	default: // the test has seen enough
	}
	if f.heartbeatErr.Load() {
		return nil, status.Error(codes.Unavailable, "not now")
	}
	return &pb.HeartbeatAck{Known: !f.unknown.Load()}, nil
}

func (f *fakeMaster) Drain(_ context.Context, r *pb.DrainRequest) (*pb.DrainAck, error) {
	f.drains <- r
	return &pb.DrainAck{}, nil
}

func (f *fakeMaster) ReportStatus(_ context.Context, r *pb.TaskResult) (*pb.ReportAck, error) {
	call := f.reportCalls.Add(1)
	if f.reportErr != nil {
		if err := f.reportErr(r, call); err != nil {
			return nil, err
		}
	}
	f.reports <- r
	return &pb.ReportAck{}, nil
}

// serve serves f on addr ("127.0.0.1:0" for a fresh port) until the test
// ends or the caller stops the returned server.
func serve(t *testing.T, f pb.NodeServiceServer, addr string, opts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, f, lis, opts...), lis.Addr().String()
}

// serveOn is serve on a listener of the caller's.
func serveOn(t *testing.T, f pb.NodeServiceServer, lis net.Listener, opts ...grpc.ServerOption) *grpc.Server {
	t.Helper()
	gs := grpc.NewServer(opts...)
	pb.RegisterNodeServiceServer(gs, f)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("fake master: %v", err)
		}
	})
	return gs
}

// startAgent runs an agent against addr. Stopping it, by the returned func or
// at the end of the test, fails the test unless Run returns nil promptly.
func startAgent(t *testing.T, addr string) (*Agent, func()) {
	t.Helper()
	return startAgentWith(t, Config{MasterAddr: addr}, t.Output())
}

// startAgentWith is startAgent with cfg's Token, TLS, Labels, MaxOutput and welcomeWait (if set), logging
// to logw.
func startAgentWith(t *testing.T, cfg Config, logw io.Writer) (*Agent, func()) {
	t.Helper()
	a := New(Config{
		MasterAddr:   cfg.MasterAddr,
		WorkerID:     "w1",
		Slots:        2,
		MaxOutput:    cmp.Or(cfg.MaxOutput, 1024),
		ReconnectMax: 200 * time.Millisecond,
		Version:      "test",
		Token:        cfg.Token,
		TLS:          cfg.TLS,
		Labels:       cfg.Labels,
		welcomeWait:  cfg.welcomeWait,
	}, slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopped bool
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(within):
			t.Errorf("Run did not return within %s of cancel", within)
		}
	}
	t.Cleanup(stop)
	return a, stop
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("no %s within %s", what, within)
		panic("unreachable")
	}
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, msg)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

func task(id, cmd string) *pb.Task { return &pb.Task{Id: id, Cmd: cmd, Attempt: 1} }

func TestRegister(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)

	reg := recv(t, f.registrations, "registration")
	if reg.GetWorkerId() != "w1" || reg.GetSlots() != 2 || reg.GetVersion() != "test" || len(reg.GetRunningTaskIds()) != 0 || len(reg.GetLabels()) != 0 {
		t.Errorf("registration = %v", reg)
	}
	if reg.GetInstanceId() != a.instanceID || reg.GetInstanceId() == "" {
		t.Errorf("instance_id = %q, want the agent's %q", reg.GetInstanceId(), a.instanceID)
	}
	eventually(t, a.Registered, "not registered after the Welcome")
}

func TestTaskResultIsReported(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	reg := recv(t, f.registrations, "registration")

	f.tasks <- &pb.Task{Id: "t1", Cmd: "echo hi; echo err >&2; exit 3", Attempt: 2}
	r := recv(t, f.reports, "report")
	if r.GetTaskId() != "t1" || r.GetExitCode() != 3 || string(r.GetStdout()) != "hi\n" || string(r.GetStderr()) != "err\n" || r.GetError() != "" {
		t.Errorf("report = %v, want t1 with exit 3, stdout hi, stderr err", r)
	}
	if r.GetWorkerId() != "w1" || r.GetInstanceId() != reg.GetInstanceId() || r.GetAttempt() != 2 {
		t.Errorf("report names worker %q instance %q attempt %d, want w1 %q 2", r.GetWorkerId(), r.GetInstanceId(), r.GetAttempt(), reg.GetInstanceId())
	}
	if r.GetStdoutTruncated() || r.GetStderrTruncated() {
		t.Errorf("output marked truncated: %v", r)
	}
	start, finish := r.GetStartedAt().AsTime(), r.GetFinishedAt().AsTime()
	if r.GetStartedAt() == nil || r.GetFinishedAt() == nil || finish.Before(start) || time.Since(start) > time.Minute {
		t.Errorf("started_at %v, finished_at %v", r.GetStartedAt(), r.GetFinishedAt())
	}
	eventually(t, func() bool { return len(a.runningIDs()) == 0 }, "acknowledged task still counted as running")
}

// The output goes to the master only: the worker's log says how much there
// was, never what it was.
func TestTaskOutputIsNotLogged(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	var logged syncBuffer
	startAgentWith(t, Config{MasterAddr: addr}, &logged)

	// printf joins the pieces, so the output appears nowhere in the command,
	// which the log does show.
	f.tasks <- task("t1", "printf 'out-%s\\n' s3cr3t; printf 'err-%s' s3cr3t >&2; exit 4")
	r := recv(t, f.reports, "report")
	if string(r.GetStdout()) != "out-s3cr3t\n" || string(r.GetStderr()) != "err-s3cr3t" {
		t.Fatalf("stdout %q, stderr %q; want the task's output reported", r.GetStdout(), r.GetStderr())
	}
	l := logged.String()
	for _, secret := range []string{"out-s3cr3t", "err-s3cr3t"} {
		if strings.Contains(l, secret) {
			t.Errorf("the log holds the task's output %q:\n%s", secret, l)
		}
	}
	for _, want := range []string{"task finished", "task_id=t1", "worker_id=w1", "exit_code=4", "duration=",
		"stdout_bytes=11", "stderr_bytes=10", "stdout_truncated=false", "stderr_truncated=false"} {
		if !strings.Contains(l, want) {
			t.Errorf("the log lacks %q:\n%s", want, l)
		}
	}
}

func TestTimeoutIsReported(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	startAgent(t, addr)

	tk := task("slow", "sleep 30")
	tk.Timeout = durationpb.New(200 * time.Millisecond)
	f.tasks <- tk
	r := recv(t, f.reports, "report")
	if r.GetExitCode() != -1 || r.GetError() != "timed out after 200ms" || !r.GetTimedOut() || r.GetCanceled() {
		t.Errorf("exit %d, error %q, timed_out %v, canceled %v; want -1, a timeout, true, false",
			r.GetExitCode(), r.GetError(), r.GetTimedOut(), r.GetCanceled())
	}
}

func TestReconnectKeepsInstanceID(t *testing.T) {
	f := newFakeMaster()
	gs, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	first := recv(t, f.registrations, "first registration")
	eventually(t, a.Registered, "not registered")

	gs.Stop()
	eventually(t, func() bool { return !a.Registered() }, "still registered after the master stopped")
	serve(t, f, addr)

	second := recv(t, f.registrations, "registration after the restart")
	if second.GetInstanceId() != first.GetInstanceId() {
		t.Errorf("instance_id changed from %q to %q", first.GetInstanceId(), second.GetInstanceId())
	}
	eventually(t, a.Registered, "not registered with the restarted master")
}

// The labels go with every registration, the first and those after the
// master came back.
func TestRegistrationsCarryLabels(t *testing.T) {
	f := newFakeMaster()
	gs, addr := serve(t, f, "127.0.0.1:0")
	want := map[string]string{"gpu": "nvidia", "zone": "eu"}
	a, _ := startAgentWith(t, Config{MasterAddr: addr, Labels: want}, t.Output())
	if got := recv(t, f.registrations, "first registration").GetLabels(); !maps.Equal(got, want) {
		t.Errorf("first registration has labels %v, want %v", got, want)
	}
	eventually(t, a.Registered, "not registered")

	gs.Stop()
	eventually(t, func() bool { return !a.Registered() }, "still registered after the master stopped")
	serve(t, f, addr)
	if got := recv(t, f.registrations, "registration after the restart").GetLabels(); !maps.Equal(got, want) {
		t.Errorf("registration after the restart has labels %v, want %v", got, want)
	}
}

func TestFailedReportIsRetried(t *testing.T) {
	f := newFakeMaster()
	f.reportErr = func(_ *pb.TaskResult, call int32) error {
		if call == 1 {
			return status.Error(codes.Unavailable, "not now")
		}
		return nil
	}
	_, addr := serve(t, f, "127.0.0.1:0")
	startAgent(t, addr)

	f.tasks <- task("t1", "echo once")
	r := recv(t, f.reports, "report")
	if r.GetTaskId() != "t1" || string(r.GetStdout()) != "once\n" {
		t.Errorf("report = %v", r)
	}
	if n := f.reportCalls.Load(); n != 2 {
		t.Errorf("%d report calls, want 2 (one refused, one retry)", n)
	}
}

func TestUnknownTaskReportIsDropped(t *testing.T) {
	f := newFakeMaster()
	f.reportErr = func(r *pb.TaskResult, _ int32) error {
		if r.GetTaskId() == "forgotten" {
			return status.Error(codes.NotFound, "no such task")
		}
		return nil
	}
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)

	f.tasks <- task("forgotten", "true")
	eventually(t, func() bool { return f.reportCalls.Load() == 1 }, "the first report was never sent")
	f.tasks <- task("next", "true")
	// Reports go in order: this one arrives only if the rejected one was dropped.
	if r := recv(t, f.reports, "report"); r.GetTaskId() != "next" {
		t.Errorf("report for %q, want next", r.GetTaskId())
	}
	if n := f.reportCalls.Load(); n != 2 {
		t.Errorf("%d report calls, want 2: a rejected result must not be retried", n)
	}
	eventually(t, func() bool { return len(a.runningIDs()) == 0 }, "dropped task still counted as running")
}

func TestReregistrationListsRunningTasks(t *testing.T) {
	f := newFakeMaster()
	gs, addr := serve(t, f, "127.0.0.1:0")
	a, stop := startAgent(t, addr)
	recv(t, f.registrations, "first registration")

	f.tasks <- task("long", "sleep 30")
	eventually(t, func() bool { return slices.Contains(a.runningIDs(), "long") }, "task never started")
	gs.Stop()
	serve(t, f, addr)

	second := recv(t, f.registrations, "registration after the restart")
	if !slices.Equal(second.GetRunningTaskIds(), []string{"long"}) {
		t.Errorf("running_task_ids = %q, want [long]", second.GetRunningTaskIds())
	}
	if r := second.GetRunning(); len(r) != 1 || r[0].GetTaskId() != "long" || r[0].GetAttempt() != 1 {
		t.Errorf("running = %v, want long's delivery 1", r)
	}

	// Shutdown kills the task well before its 30 s, and does not report it:
	// the master re-queues the tasks of a worker that goes away.
	stop()
	select {
	case r := <-f.reports:
		t.Errorf("task killed by shutdown was reported: %v", r)
	default:
	}
}

func TestAlreadyExistsIsRetried(t *testing.T) {
	f := newFakeMaster()
	f.refuse.Store(true)
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)

	recv(t, f.registrations, "refused registration")
	recv(t, f.registrations, "second attempt after a refusal")
	if a.Registered() {
		t.Fatal("Registered() is true while the master refuses")
	}
	f.refuse.Store(false)
	eventually(t, a.Registered, "not registered once the master accepts")
}

func TestBackoff(t *testing.T) {
	b := backoff{max: 500 * time.Millisecond}
	ceilings := []time.Duration{100, 200, 400, 500, 500}
	for i, c := range ceilings {
		c *= time.Millisecond
		if d := b.next(); d < 0 || d > c {
			t.Errorf("wait %d = %s, want within [0, %s]", i+1, d, c)
		}
		if b.cur != c {
			t.Errorf("ceiling after wait %d = %s, want %s", i+1, b.cur, c)
		}
	}
	b.reset()
	if b.next(); b.cur != 100*time.Millisecond {
		t.Errorf("ceiling after reset = %s, want 100ms", b.cur)
	}
}

func TestHeartbeats(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	recv(t, f.registrations, "registration")

	for i := range 3 {
		hb := recv(t, f.heartbeats, "heartbeat")
		if hb.GetWorkerId() != "w1" || hb.GetInstanceId() != a.instanceID {
			t.Errorf("heartbeat %d = %v, want worker w1, instance %q", i+1, hb, a.instanceID)
		}
	}
	select {
	case <-f.registrations:
		t.Error("registered again although every heartbeat was acknowledged")
	default:
	}
}

func TestUnknownSessionRegistersAgain(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	first := recv(t, f.registrations, "registration")

	f.tasks <- task("long", "sleep 30")
	eventually(t, func() bool { return slices.Contains(a.runningIDs(), "long") }, "task never started")
	f.unknown.Store(true)
	second := recv(t, f.registrations, "registration after known=false")
	f.unknown.Store(false)
	recv(t, f.streamsEnded, "end of the first stream")
	if second.GetInstanceId() != first.GetInstanceId() || !slices.Equal(second.GetRunningTaskIds(), []string{"long"}) {
		t.Errorf("registration again = %v, want instance %q running [long]", second, first.GetInstanceId())
	}
}

func TestFailingHeartbeatsEndTheSession(t *testing.T) {
	f := newFakeMaster()
	f.heartbeatErr.Store(true)
	_, addr := serve(t, f, "127.0.0.1:0")
	startAgent(t, addr)
	recv(t, f.registrations, "registration")

	// Not at the first failure: a second heartbeat comes from the same
	// session, since a new one would register before its first heartbeat.
	recv(t, f.heartbeats, "failed heartbeat")
	recv(t, f.heartbeats, "second failed heartbeat")
	select {
	case <-f.registrations:
		t.Fatal("registered again after the first failed heartbeat")
	default:
	}
	recv(t, f.streamsEnded, "end of the stream")
	recv(t, f.registrations, "registration after heartbeats kept failing")
}

func TestCancel(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	recv(t, f.registrations, "registration")

	f.cancels <- "nobody" // not running here: ignored
	f.tasks <- task("long", "echo started; sleep 30")
	eventually(t, func() bool { return slices.Contains(a.runningIDs(), "long") }, "task never started")
	f.cancels <- "long"
	r := recv(t, f.reports, "report of the canceled task")
	if r.GetTaskId() != "long" || !r.GetCanceled() || r.GetTimedOut() || r.GetExitCode() != -1 || r.GetError() != "canceled by the master" {
		t.Errorf("report = %v, want long canceled by the master with exit -1", r)
	}
	if d := r.GetFinishedAt().AsTime().Sub(r.GetStartedAt().AsTime()); d >= 30*time.Second {
		t.Errorf("canceled task ran %s: its process was not killed", d)
	}
	eventually(t, func() bool { return len(a.runningIDs()) == 0 }, "canceled task still counted as running")
}

// A newer delivery of a task whose earlier run is over and only waits for
// the master's ack runs: the master gave the earlier delivery up and counts
// on this one. Both results are reported, each under its own attempt.
func TestNewerDeliveryRunsWhileTheOlderAwaitsItsAck(t *testing.T) {
	f := newFakeMaster()
	var ackFirst atomic.Bool
	f.reportErr = func(r *pb.TaskResult, _ int32) error {
		if r.GetAttempt() == 1 && !ackFirst.Load() {
			return status.Error(codes.Unavailable, "not now")
		}
		return nil
	}
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)

	first := task("t1", "echo one")
	f.tasks <- first
	eventually(t, func() bool { return f.reportCalls.Load() >= 1 }, "the first run was never reported")
	second := task("t1", "echo two")
	second.Attempt = first.GetAttempt() + 1
	f.tasks <- second
	eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.attempts["t1"] == second.Attempt && a.running["t1"] == nil
	}, "the newer delivery never ran")
	ackFirst.Store(true)
	got := map[int32]string{}
	for range 2 {
		r := recv(t, f.reports, "report")
		got[r.GetAttempt()] = string(r.GetStdout())
	}
	if got[first.GetAttempt()] != "one\n" || got[second.Attempt] != "two\n" {
		t.Fatalf("reports by attempt %q; want one and two, each under its own", got)
	}
	eventually(t, func() bool { return len(a.runningIDs()) == 0 }, "acknowledged runs still held")
}

// Serving (the worker's /livez) holds while the agent cannot reach its
// master and ends with Run: an orchestrator that replaces what is not
// serving must leave a worker alone for its master's outage.
func TestServingWhileTheMasterIsAwayUntilRunEnds(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nobody listens there
	var logs syncBuffer
	a, stop := startAgentWith(t, Config{MasterAddr: addr}, &logs)
	eventually(t, func() bool { return strings.Count(logs.String(), "not connected to master") >= 2 }, "two failed registrations")
	if a.Registered() || !a.Serving() {
		t.Fatalf("with no master: registered %v, serving %v; want not registered, serving", a.Registered(), a.Serving())
	}
	stop() // returns once Run has
	if a.Serving() {
		t.Fatal("serving after Run returned")
	}
}
