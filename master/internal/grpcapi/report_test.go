package grpcapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// delivered registers worker id (instance i1) with slots, submits n tasks
// and returns them as the worker received them.
func delivered(t *testing.T, ctx context.Context, s served, c pb.NodeServiceClient, id string, n int) (pb.NodeService_AssignTaskClient, []*pb.Task) {
	t.Helper()
	stream, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: id, InstanceId: "i1", Slots: int32(n)})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("first message %v, %v; want the welcome", m, err)
	}
	var tasks []*pb.Task
	for i := range n {
		if _, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: fmt.Sprintf("echo %d", i)}); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil || m.GetTask() == nil {
			t.Fatalf("assignment %v, %v", m, err)
		}
		tasks = append(tasks, m.GetTask())
	}
	return stream, tasks
}

func resultOf(worker string, tk *pb.Task) *pb.TaskResult {
	return &pb.TaskResult{TaskId: tk.GetId(), WorkerId: worker, InstanceId: "i1", Attempt: tk.GetAttempt(), Stdout: []byte(tk.GetId())}
}

// recvAcks reads acks until it has n, in the order they came.
func recvAcks(t *testing.T, rs pb.NodeService_ReportClient, n int) []*pb.ResultAck {
	t.Helper()
	var got []*pb.ResultAck
	for len(got) < n {
		m, err := rs.Recv()
		if err != nil {
			t.Fatalf("after %d acks of %d: %v", len(got), n, err)
		}
		if len(m.GetAcks()) == 0 {
			t.Fatal("an empty ReportAcks")
		}
		got = append(got, m.GetAcks()...)
	}
	return got
}

// Results on a Report stream are acknowledged only once they are on disk:
// while the store cannot write, the master takes every result (they are
// final in memory) but sends no ack; once the write lands, each is acked,
// in the order sent, and stored.
func TestReportStreamAcksOnlyAfterCommit(t *testing.T) {
	s := startWith(t, setup{storeOpts: storeRetryFast})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	_, tasks := delivered(t, ctx, s, c, "w1", 3)

	release := storetest.HoldWriteLock(t, s.dbPath)
	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		if err := rs.Send(resultOf("w1", tk)); err != nil {
			t.Fatal(err)
		}
	}
	type received struct {
		m   *pb.ReportAcks
		err error
	}
	first := make(chan received, 1)
	go func() {
		m, err := rs.Recv()
		first <- received{m, err}
	}()
	eventually(t, "every result to be taken", func() bool {
		for _, tk := range tasks {
			if got, err := s.d.Get(context.Background(), tk.GetId()); err != nil || got.Status != task.StatusSucceeded {
				return false
			}
		}
		return true
	})
	eventually(t, "the store to say writes fail", func() bool { return s.st.WriteErr() != nil })
	// Nothing can send an ack now short of a bug, so this waits out a
	// window in which an ack that did not wait for the disk would show.
	select {
	case r := <-first:
		t.Fatalf("while the write was failing (%v) the worker got %v, %v; want no ack until the results are on disk", s.st.WriteErr(), r.m, r.err)
	case <-time.After(200 * time.Millisecond):
	}

	release()
	var acks []*pb.ResultAck
	select {
	case r := <-first:
		if r.err != nil {
			t.Fatal(r.err)
		}
		acks = r.m.GetAcks()
	case <-ctx.Done():
		t.Fatal("no ack after the lock was released")
	}
	acks = append(acks, recvAcks(t, rs, len(tasks)-len(acks))...)
	for i, tk := range tasks {
		a := acks[i]
		if a.GetTaskId() != tk.GetId() || a.GetAttempt() != 1 || a.GetCode() != 0 || a.GetDuplicate() {
			t.Errorf("ack %d = %v; want a plain ack of %s attempt 1", i, a, tk.GetId())
		}
		if got, err := s.st.Get(context.Background(), tk.GetId()); err != nil || got.Status != task.StatusSucceeded || got.Stdout != tk.GetId() {
			t.Errorf("stored %s = %s %q, %v; want succeeded with its output", tk.GetId(), got.Status, got.Stdout, err)
		}
	}
	if err := rs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if m, err := rs.Recv(); err == nil {
		t.Fatalf("after the worker closed its side: %v; want the stream to end", m)
	}
}

// storeRetryFast gives up a locked write soon and retries it soon, so that
// the store says it is failing, and lands it soon after the release.
var storeRetryFast = []store.Option{store.WithBusyTimeout(50 * time.Millisecond), store.WithRetryBackoff(time.Millisecond, 20*time.Millisecond)}

// Each result of a stream gets its own answer, as ReportStatus would give
// it, and the stream goes on past a refused one; a result sent again (on
// the same stream or a new one) gets the same answer; a late result of a
// delivery the master gave up is acked as a duplicate.
func TestReportStreamAnswersEachResult(t *testing.T) {
	var mono atomic.Int64
	s := startWith(t, setup{mono: func() time.Duration { return time.Duration(mono.Load()) }})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)

	// w0 gets a task and goes away; nobody claims it in time, so it is
	// re-queued, and w1 gets it as attempt 2.
	w0ctx, leave := context.WithCancel(ctx)
	_, lost := delivered(t, w0ctx, s, c, "w0", 1)
	leave()
	eventually(t, "w0 to leave", func() bool { return len(s.d.Workers()) == 0 })
	mono.Add(int64(time.Hour))
	s.d.Sweep()
	stream, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("first message %v, %v; want the welcome", m, err)
	}
	m, err := stream.Recv() // the re-queued task was waiting for a worker
	if err != nil || m.GetTask().GetId() != lost[0].GetId() {
		t.Fatalf("got %v, %v; want the re-queued task", m, err)
	}
	again := m.GetTask()
	if _, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	if m, err = stream.Recv(); err != nil || m.GetTask() == nil {
		t.Fatalf("got %v, %v; want the new task", m, err)
	}
	other := m.GetTask()
	if again.GetAttempt() != 2 {
		t.Fatalf("re-queued task came as attempt %d, want 2", again.GetAttempt())
	}

	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		r        *pb.TaskResult
		wantCode codes.Code
		wantDup  bool
	}{
		{"unknown task", &pb.TaskResult{TaskId: "nope", WorkerId: "w1", InstanceId: "i1", Attempt: 1}, codes.NotFound, false},
		{"no task ID", &pb.TaskResult{WorkerId: "w1", InstanceId: "i1", Attempt: 1}, codes.InvalidArgument, false},
		{"a delivery never sent", &pb.TaskResult{TaskId: other.GetId(), WorkerId: "w1", InstanceId: "i1", Attempt: 5}, codes.NotFound, false},
		{"the current delivery", resultOf("w1", again), codes.OK, false},
		{"the same again", resultOf("w1", again), codes.OK, false},
		{"w0's late result", resultOf("w0", lost[0]), codes.OK, true},
		{"w0's late result again", resultOf("w0", lost[0]), codes.OK, true},
		{"the other task", resultOf("w1", other), codes.OK, false},
	}
	for _, tt := range tests {
		if err := rs.Send(tt.r); err != nil {
			t.Fatal(err)
		}
	}
	acks := recvAcks(t, rs, len(tests))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := acks[i]
			if a.GetTaskId() != tt.r.GetTaskId() || a.GetAttempt() != tt.r.GetAttempt() {
				t.Fatalf("ack %d names %s attempt %d; want %s attempt %d", i, a.GetTaskId(), a.GetAttempt(), tt.r.GetTaskId(), tt.r.GetAttempt())
			}
			if codes.Code(a.GetCode()) != tt.wantCode || a.GetDuplicate() != tt.wantDup {
				t.Errorf("ack = %v; want code %s, duplicate %v", a, tt.wantCode, tt.wantDup)
			}
			if tt.wantCode != codes.OK && a.GetMessage() == "" {
				t.Error("a refusal without a message")
			}
		})
	}
	if got, err := s.st.Get(context.Background(), again.GetId()); err != nil || got.Status != task.StatusSucceeded || got.WorkerID != "w1" {
		t.Fatalf("stored %s = %s by %s, %v; want w1's result to stand", again.GetId(), got.Status, got.WorkerID, err)
	}

	// The stream breaks; a new one carries the same result again: the
	// same answer, as ReportStatus gives a retried report.
	rs2, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs2.Send(resultOf("w0", lost[0])); err != nil {
		t.Fatal(err)
	}
	if a := recvAcks(t, rs2, 1)[0]; a.GetCode() != 0 || !a.GetDuplicate() {
		t.Errorf("resent on a new stream: %v; want the duplicate ack again", a)
	}
	ack, err := c.ReportStatus(ctx, resultOf("w1", again))
	if err != nil || ack.GetDuplicate() {
		t.Errorf("the same result through ReportStatus: %v, %v; want a plain ack", ack, err)
	}
}

// A Report stream is long-lived, so the master's shutdown does not wait
// for the worker to close it: the dispatcher's Close ends it, after the
// acks of what it took, with UNAVAILABLE.
func TestReportStreamEndsWhenTheDispatcherCloses(t *testing.T) {
	s := startWith(t, setup{})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	_, tasks := delivered(t, ctx, s, c, "w1", 1)
	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(resultOf("w1", tasks[0])); err != nil {
		t.Fatal(err)
	}
	if a := recvAcks(t, rs, 1)[0]; a.GetCode() != 0 {
		t.Fatalf("ack %v", a)
	}
	s.d.Close()
	if m, err := rs.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Close: %v, %v; want the stream to end with UNAVAILABLE", m, err)
	}
}

// A worker that stops reading its acks lets the stream's flow-control
// window fill, and the master's next send of acks blocks. The send deadline
// ends the handler, rather than leaving it, the results it took and, at
// shutdown, the server's graceful stop waiting on the worker for as long
// as its connection lives. (The worker hears nothing of it: gRPC queues
// the stream's status behind the acks it cannot send.)
func TestReportHandlerOfAWorkerThatReadsNoAcksEnds(t *testing.T) {
	s := startWith(t, setup{params: Params{SendTimeout: 300 * time.Millisecond}})
	// The smallest windows gRPC allows, as in TestWorkerThatStopsReadingIsDropped.
	cc := dial(t, s.addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	// Not ctxT: its deadline would end the stream about when eventually
	// gives up, so the test could pass without the send deadline.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Handlers of earlier tests' streams may still be on their way out.
	before := handlerGoroutines()
	rs, err := pb.NewNodeServiceClient(cc).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each ack names its result's task: IDs of a kilobyte make few acks
	// fill the windows, and the test quick even under -race on a busy machine.
	pad := strings.Repeat("x", 1<<10)
	result := func(i int) *pb.TaskResult {
		return &pb.TaskResult{TaskId: fmt.Sprintf("unknown-%d-%s", i, pad), WorkerId: "w1", InstanceId: "i1", Attempt: 1}
	}
	if err := rs.Send(result(0)); err != nil {
		t.Fatal(err)
	}
	recvAcks(t, rs, 1) // the handler runs
	if handlerGoroutines() == 0 {
		t.Fatal("no goroutine of a Report handler while this one's stream is open")
	}
	// Results of tasks the master does not know are each answered with an
	// error: the 64 KiB window and the server's 64 KiB write quota hold
	// about a hundred of those acks. The worker sends until its own sends
	// block, and reads nothing more.
	go func() {
		for i := 1; rs.Send(result(i)) == nil; i++ {
		}
	}()
	eventually(t, "the Report handler and its goroutines to end", func() bool { return handlerGoroutines() <= before })
}

// handlerGoroutines counts the goroutines running Report or one of its
// helpers (the reader, ackReports), in any test's server.
func handlerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "grpcapi.(*Server).Report(") || strings.Contains(g, "grpcapi.(*Server).Report.func") ||
			strings.Contains(g, "grpcapi.(*Server).ackReports(") {
			count++
		}
	}
	return count
}

// Drain's answer names the deliveries the master holds for the worker, so
// that a worker can wait for one still on its way.
func TestDrainNamesTheDeliveriesHeld(t *testing.T) {
	s := startWith(t, setup{})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	_, tasks := delivered(t, ctx, s, c, "w1", 1)
	ack, err := c.Drain(ctx, &pb.DrainRequest{WorkerId: "w1", InstanceId: "i1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ack.GetInFlight(); len(got) != 1 || got[0].GetTaskId() != tasks[0].GetId() || got[0].GetAttempt() != 1 {
		t.Fatalf("in_flight = %v; want %s attempt 1", got, tasks[0].GetId())
	}
}

// When the handler of a worker that reads no acks gives up on its stream,
// its reader goes on taking the results the worker already sent (it races
// the handler for the lock that stops it), and drops each it cannot queue:
// written, but nobody waits for its write, so the task it finished never
// leaves memory. Every result taken must be waited for, by the handler or,
// once its stream has ended, by the sweep (the handler's doc): here a task
// that retention deleted from the store must no longer be served.
func TestReportHandlerThatGivesUpLeavesNoFinishedTaskInMemory(t *testing.T) {
	s := startWith(t, setup{params: Params{SendTimeout: time.Second}})
	cc := dial(t, s.addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := pb.NewNodeServiceClient(cc)
	const n = reportsInFlight + 64
	_, tasks := delivered(t, ctx, s, c, "w1", n)

	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Acks of a kilobyte each (they name a task ID too long to take) fill
	// the windows, so that the acks' send blocks; the results behind them
	// fill the queue, and the reader waits with one more in hand when the
	// handler gives up.
	pad := strings.Repeat("x", 1<<10)
	for i := range 200 {
		if err := rs.Send(&pb.TaskResult{TaskId: fmt.Sprintf("unknown-%d-%s", i, pad), WorkerId: "w1", InstanceId: "i1", Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range tasks {
		if err := rs.Send(resultOf("w1", tk)); err != nil {
			t.Fatal(err)
		}
	}
	// This stream's handler gives up after SendTimeout: seen running
	// first (it may start after the sends went through), then gone with
	// every other, those of earlier tests' streams too (while one of those
	// ends, a count no higher than before this stream would say nothing).
	running := false
	eventually(t, "the Report handler to give up and its goroutines to end", func() bool {
		n := handlerGoroutines()
		running = running || n > 0
		return running && n == 0
	})
	if err := s.st.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The writes the ended stream stopped waiting for are on disk; the
	// sweeper, every SweepInterval, drops their tasks from memory.
	s.d.Sweep()
	var finished []string
	for _, tk := range tasks {
		if got, err := s.st.Get(context.Background(), tk.GetId()); err == nil && got.Status.Final() {
			finished = append(finished, tk.GetId())
		}
	}
	if len(finished) == 0 {
		t.Fatal("no result was taken; the test is broken")
	}
	// Retention deletes them; each must now be gone from the master.
	if _, err := s.st.DeleteFinished(context.Background(), time.Now().Add(time.Hour), 10*n); err != nil {
		t.Fatal(err)
	}
	for _, id := range finished {
		if got, err := s.d.Get(context.Background(), id); err == nil {
			t.Errorf("task %s (%s) is still served from memory after its row was deleted: its finishing write was never waited for", id, got.Status)
		}
	}
	t.Logf("%d of %d results were taken", len(finished), n)
}

// reportStream is the server's side of a Report stream, for a test that
// must see the handler return: Recv yields what is put on in, and fails,
// as gRPC's does, once the stream's context ends.
type reportStream struct {
	grpc.ServerStream // unused: Report calls only what is below
	ctx               context.Context
	in                chan *pb.TaskResult
}

func (r *reportStream) Context() context.Context { return r.ctx }

func (r *reportStream) Recv() (*pb.TaskResult, error) {
	select {
	case m := <-r.in:
		return m, nil
	case <-r.ctx.Done():
		return nil, status.FromContextError(r.ctx.Err()).Err()
	}
}

func (r *reportStream) Send(*pb.ReportAcks) error {
	return status.FromContextError(r.ctx.Err()).Err()
}

// During a store outage a Report stream's handler waits for its results'
// writes only as long as the stream lives: once its context ends (the
// worker went away, or gRPC ends the stream when the master's shutdown
// stops waiting) it returns without the disk. The results stay queued, and
// land once the disk recovers.
func TestReportStreamEndsWithItsContextDuringAnOutage(t *testing.T) {
	tests := []struct {
		name     string
		shutdown bool // the master shuts down before the stream's context ends
	}{
		{name: "worker gone"},
		{name: "master shutting down", shutdown: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startWith(t, setup{storeOpts: storeRetryFast})
			c := pb.NewNodeServiceClient(dial(t, s.addr))
			_, tasks := delivered(t, ctxT(t), s, c, "w1", 2)
			release := storetest.HoldWriteLock(t, s.dbPath)
			sctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rs := &reportStream{ctx: sctx, in: make(chan *pb.TaskResult, len(tasks))}
			srv := &Server{d: s.d, log: slog.New(slog.NewTextHandler(io.Discard, nil)), sendTimeout: time.Minute}
			done := make(chan error, 1)
			go func() { done <- srv.Report(rs) }()
			for _, tk := range tasks {
				rs.in <- resultOf("w1", tk)
			}
			eventually(t, "every result to be taken", func() bool {
				for _, tk := range tasks {
					if got, err := s.d.Get(context.Background(), tk.GetId()); err != nil || got.Status != task.StatusSucceeded {
						return false
					}
				}
				return true
			})
			eventually(t, "the store to say writes fail", func() bool { return s.st.WriteErr() != nil })
			if tt.shutdown {
				s.d.Close()
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler still waits for the disk 10s after its stream's context ended")
			}
			release()
			for _, tk := range tasks {
				eventually(t, "the result of "+tk.GetId()+" to land", func() bool {
					got, err := s.st.Get(context.Background(), tk.GetId())
					return err == nil && got.Status == task.StatusSucceeded
				})
			}
		})
	}
}
