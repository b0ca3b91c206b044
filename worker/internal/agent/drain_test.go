package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startDrain calls a.Drain(ctx) in a goroutine and returns its result channel.
func startDrain(ctx context.Context, a *Agent) <-chan error {
	done := make(chan error, 1)
	go func() { done <- a.Drain(ctx) }()
	return done
}

func TestDrainFinishesAndReports(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, stop := startAgent(t, addr)
	recv(t, f.registrations, "registration")

	// t1 runs until the test opens its gate, once the late task below has
	// arrived: with a fixed run time instead, a late task that took longer
	// than that to reach the agent (a loaded machine) found the drain over
	// and the stream closed, and the test failed for want of it.
	gate := filepath.Join(t.TempDir(), "gate")
	f.tasks <- task("t1", "until [ -e "+gate+" ]; do sleep 0.02; done; echo done")
	eventually(t, func() bool { return slices.Contains(a.runningIDs(), "t1") }, "task never started")
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	drained := startDrain(ctx, a)

	dr := recv(t, f.drains, "drain request")
	if dr.GetWorkerId() != "w1" || dr.GetInstanceId() != a.instanceID {
		t.Errorf("drain request = %v, want worker w1 instance %q", dr, a.instanceID)
	}
	// A task the master sent before it took note of the drain is run and
	// reported too: dropping it would cost the task an attempt.
	f.tasks <- task("late", "echo late")
	eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.seen["late"] == 1
	}, "the late task never reached the draining agent")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	got := map[string]string{}
	for range 2 {
		r := recv(t, f.reports, "report")
		got[r.GetTaskId()] = string(r.GetStdout())
	}
	if got["t1"] != "done\n" || got["late"] != "late\n" {
		t.Errorf("reports = %v, want t1 with done and late with late", got)
	}
	select {
	case <-f.streamsEnded:
		t.Error("the stream closed before the result was acknowledged")
	default:
	}
	if err := recv(t, drained, "end of the drain"); err != nil {
		t.Errorf("Drain = %v, want nil", err)
	}
	if a.Registered() {
		t.Error("still registered after the drain")
	}
	recv(t, f.streamsEnded, "end of the stream")
	stop()
	select {
	case r := <-f.reports:
		t.Errorf("report after the drain: %v", r)
	default:
	}
	select {
	case <-f.registrations:
		t.Error("registered again during or after the drain")
	default:
	}
}

func TestDrainTimeoutKillsUnreported(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, f, "127.0.0.1:0")
	a, stop := startAgent(t, addr)
	recv(t, f.registrations, "registration")

	f.tasks <- task("long", "sleep 30")
	eventually(t, func() bool { return slices.Contains(a.runningIDs(), "long") }, "task never started")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := recv(t, startDrain(ctx, a), "end of the drain")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v, want the deadline exceeded", err)
	}
	recv(t, f.streamsEnded, "end of the stream")
	stop() // kills the task; stop fails the test unless Run returns well before 30 s
	select {
	case r := <-f.reports:
		t.Errorf("task killed after the drain was reported: %v", r)
	default:
	}
}

func TestDrainWithoutMaster(t *testing.T) {
	f := newFakeMaster()
	gs, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	recv(t, f.registrations, "registration")
	gs.Stop()
	eventually(t, func() bool { return !a.Registered() }, "still registered after the master stopped")

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := recv(t, startDrain(ctx, a), "end of the drain"); err != nil {
		t.Errorf("Drain without a master = %v, want nil: there was nothing to wait for", err)
	}
}

// inFlightMaster answers a drain naming held, the deliveries it holds a
// slot of this worker for, as the master does.
type inFlightMaster struct {
	*fakeMaster
	held []*pb.RunningTask
}

func (m inFlightMaster) Drain(ctx context.Context, r *pb.DrainRequest) (*pb.DrainAck, error) {
	if _, err := m.fakeMaster.Drain(ctx, r); err != nil {
		return nil, err
	}
	return &pb.DrainAck{InFlight: m.held}, nil
}

// awaiting says how many deliveries the drain waits to arrive.
func (a *Agent) awaiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.awaited)
}

// An idle worker drains while a task the master gave it is still on its way
// (the master sends a delivery once it is on disk, so it can come after the
// drain's answer, which names it). The drain waits for it, runs it and
// reports it; before, the drain of an idle worker was over at once, and
// stopping the worker killed the task unreported, an attempt lost.
func TestDrainWaitsForATaskStillOnItsWay(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, inFlightMaster{f, []*pb.RunningTask{{TaskId: "late", Attempt: 1}}}, "127.0.0.1:0")
	a, stop := startAgent(t, addr)
	recv(t, f.registrations, "registration")
	eventually(t, a.Registered, "not registered")
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	drained := startDrain(ctx, a)
	recv(t, f.drains, "drain request")
	eventually(t, func() bool { return a.awaiting() == 1 }, "the drain to await the late task")
	select {
	case err := <-drained:
		t.Fatalf("Drain = %v before the task the master named arrived; want it to wait", err)
	default:
	}
	f.tasks <- task("late", "echo late")
	if r := recv(t, f.reports, "the late task's result"); r.GetTaskId() != "late" || string(r.GetStdout()) != "late\n" {
		t.Fatalf("reported %v; want late", r)
	}
	if err := recv(t, drained, "end of the drain"); err != nil {
		t.Errorf("Drain = %v, want nil", err)
	}
	recv(t, f.streamsEnded, "end of the stream")
	stop()
}

// A delivery the master names that was here as the drain began (running,
// or its result unacknowledged) is not waited for as one on its way, or the
// drain would wait for it after it has gone; nor is one still on its way
// once the stream has ended, since nothing more comes on it.
func TestDrainAwaitsOnlyWhatCanStillCome(t *testing.T) {
	t.Run("held at the start", func(t *testing.T) {
		f := newFakeMaster()
		_, addr := serve(t, inFlightMaster{f, []*pb.RunningTask{{TaskId: "t1", Attempt: 1}}}, "127.0.0.1:0")
		a, _ := startAgent(t, addr)
		recv(t, f.registrations, "registration")
		f.tasks <- task("t1", "sleep 0.2")
		eventually(t, func() bool { return slices.Contains(a.runningIDs(), "t1") }, "t1 to start")
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		drained := startDrain(ctx, a)
		recv(t, f.drains, "drain request")
		recv(t, f.reports, "t1's result")
		if err := recv(t, drained, "end of the drain"); err != nil {
			t.Errorf("Drain = %v, want nil", err)
		}
	})
	t.Run("stream ended", func(t *testing.T) {
		f := newFakeMaster()
		gs, addr := serve(t, inFlightMaster{f, []*pb.RunningTask{{TaskId: "never", Attempt: 1}}}, "127.0.0.1:0")
		a, _ := startAgent(t, addr)
		recv(t, f.registrations, "registration")
		eventually(t, a.Registered, "not registered")
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		drained := startDrain(ctx, a)
		recv(t, f.drains, "drain request")
		eventually(t, func() bool { return a.awaiting() == 1 }, "the drain to await the task")
		gs.Stop() // the master goes away before sending it
		if err := recv(t, drained, "end of the drain"); err != nil {
			t.Errorf("Drain = %v, want nil: nothing more could come", err)
		}
	})
}

// welcomeLateMaster holds each registration's Welcome until release is
// closed. It answers the first Drain with notFirst's error, if any (the
// master's answer to a worker it does not know yet), and every answer
// names held.
type welcomeLateMaster struct {
	*fakeMaster
	arrived  chan struct{} // one per AssignTask call, before its Welcome
	release  chan struct{}
	first    error
	held     []*pb.RunningTask
	drainsIn *atomic.Int32
}

func (m welcomeLateMaster) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	m.arrived <- struct{}{}
	select {
	case <-m.release:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	return m.fakeMaster.AssignTask(req, stream)
}

func (m welcomeLateMaster) Drain(ctx context.Context, r *pb.DrainRequest) (*pb.DrainAck, error) {
	if _, err := m.fakeMaster.Drain(ctx, r); err != nil {
		return nil, err
	}
	if m.drainsIn.Add(1) == 1 && m.first != nil {
		return nil, m.first
	}
	return &pb.DrainAck{InFlight: m.held}, nil
}

// A drain that begins while the worker registers: the master does not know
// the worker yet (it answers NOT_FOUND), or it does and has sent tasks with
// the Welcome. Before, the worker left the new stream as soon as the Welcome
// came, and each task sent with it came back to the master as a lost
// attempt (a task with one attempt failed); now the drain tells the master
// again on that stream and runs what it sent.
func TestDrainDuringRegistrationRunsWhatCameWithTheWelcome(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first error
	}{
		{"master did not know the worker", status.Error(codes.NotFound, `worker "w1": not found`)},
		{"master knew the worker", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeMaster()
			m := welcomeLateMaster{fakeMaster: f, arrived: make(chan struct{}, 10), release: make(chan struct{}),
				first: tc.first, held: []*pb.RunningTask{{TaskId: "w", Attempt: 1}}, drainsIn: new(atomic.Int32)}
			_, addr := serve(t, m, "127.0.0.1:0")
			a, stop := startAgent(t, addr)
			recv(t, m.arrived, "registration")
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			drained := startDrain(ctx, a)
			recv(t, f.drains, "drain request")
			f.tasks <- task("w", "echo welcome") // goes out right after the Welcome
			close(m.release)
			recv(t, f.registrations, "registration")
			recv(t, f.drains, "the drain told again on the new stream")
			if r := recv(t, f.reports, "the result of the task sent with the Welcome"); r.GetTaskId() != "w" || string(r.GetStdout()) != "welcome\n" {
				t.Fatalf("reported %v; want w", r)
			}
			if err := recv(t, drained, "end of the drain"); err != nil {
				t.Errorf("Drain = %v, want nil", err)
			}
			recv(t, f.streamsEnded, "end of the stream")
			stop()
			select {
			case <-m.arrived:
				t.Error("registered again during or after the drain")
			default:
			}
		})
	}
}

// A delivery the worker listed when it registered is not on its way: it
// had arrived. The master may still name it in its drain answer after the
// worker's result for it was acknowledged: a report the master took
// between the worker's list and its registration (the worker resends its
// results as it reconnects, after a master restart) leaves the claim of
// the listed delivery standing until the next heartbeat. The drain must
// not wait for it to arrive; it used to, for the whole drain timeout.
func TestDrainDoesNotAwaitADeliveryListedAtRegistration(t *testing.T) {
	f := newFakeMaster()
	var ack atomic.Bool
	f.reportErr = func(*pb.TaskResult, int32) error {
		if !ack.Load() {
			return status.Error(codes.Unavailable, "not now")
		}
		return nil
	}
	_, addr := serve(t, inFlightMaster{f, []*pb.RunningTask{{TaskId: "t1", Attempt: 1}}}, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	recv(t, f.registrations, "registration")
	f.tasks <- task("t1", "true")
	eventually(t, func() bool { return f.reportCalls.Load() >= 1 }, "t1 was never reported")

	// The session ends (the master forgot it) while t1's result waits for
	// its ack: the next registration lists t1.
	f.unknown.Store(true)
	again := recv(t, f.registrations, "registration after known=false")
	f.unknown.Store(false)
	if r := again.GetRunning(); len(r) != 1 || r[0].GetTaskId() != "t1" || r[0].GetAttempt() != 1 {
		t.Fatalf("registration lists %v, want t1's delivery 1", r)
	}
	eventually(t, a.Registered, "not registered again")
	ack.Store(true)
	recv(t, f.reports, "t1's result")
	eventually(t, func() bool { return len(a.runningIDs()) == 0 }, "t1 still held after its ack")

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := recv(t, startDrain(ctx, a), "end of the drain"); err != nil {
		t.Errorf("Drain = %v, want nil: t1 had come and gone", err)
	}
}

// staleAnswerMaster is a master from which the worker re-registers while it
// drains. Its first Drain answer is about the stream the worker lost: it is
// held until the test releases it, and names stale, a delivery sent on that
// stream that never arrived (the new registration does not list it, so the
// master re-queues it, and it never comes). Later answers are about the new
// stream and name fresh. The Welcome of every registration after the first
// is held until release is closed.
type staleAnswerMaster struct {
	*fakeMaster
	arrived      chan struct{} // one per AssignTask call
	release      chan struct{} // closed to send the held Welcomes
	answerFirst  chan struct{} // closed to answer the first Drain
	stale, fresh []*pb.RunningTask
	calls        *atomic.Int32 // AssignTask calls
	drainsIn     *atomic.Int32
}

func (m staleAnswerMaster) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	m.arrived <- struct{}{}
	if m.calls.Add(1) > 1 {
		select {
		case <-m.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return m.fakeMaster.AssignTask(req, stream)
}

func (m staleAnswerMaster) Drain(ctx context.Context, r *pb.DrainRequest) (*pb.DrainAck, error) {
	if _, err := m.fakeMaster.Drain(ctx, r); err != nil {
		return nil, err
	}
	if m.drainsIn.Add(1) > 1 {
		return &pb.DrainAck{InFlight: m.fresh}, nil
	}
	select {
	case <-m.answerFirst:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pb.DrainAck{InFlight: m.stale}, nil
}

// A drain that begins while the worker re-registers asks the master before
// the new stream is welcomed: the answer may be about the stream that was
// lost, and name deliveries sent on it that will never come. If that answer
// lands after the Welcome (the drain told again on the new stream, whose
// answer is the one that counts), the drain used to await them, and waited
// out WORKER_DRAIN_TIMEOUT with nothing left to run. Now only an answer to a
// call made on the stream that is still registered counts.
func TestDrainIgnoresAnAnswerAboutAnEarlierStream(t *testing.T) {
	f := newFakeMaster()
	m := staleAnswerMaster{fakeMaster: f, arrived: make(chan struct{}, 10), release: make(chan struct{}), answerFirst: make(chan struct{}),
		stale: []*pb.RunningTask{{TaskId: "gone", Attempt: 1}}, fresh: []*pb.RunningTask{{TaskId: "w", Attempt: 1}},
		calls: new(atomic.Int32), drainsIn: new(atomic.Int32)}
	told := make(chan struct{}, 10)
	tellDrainHook = func() { told <- struct{}{} }
	t.Cleanup(func() { tellDrainHook = func() {} })
	_, addr := serve(t, m, "127.0.0.1:0")
	a, stop := startAgent(t, addr)
	recv(t, m.arrived, "registration")
	eventually(t, a.Registered, "not registered")

	// The session ends; the next registration waits for its Welcome.
	f.unknown.Store(true)
	recv(t, m.arrived, "re-registration")
	f.unknown.Store(false)

	ctx, cancel := context.WithTimeout(context.Background(), within/2)
	defer cancel()
	drained := startDrain(ctx, a)
	recv(t, f.drains, "drain request during the re-registration")

	// w goes out with the Welcome and runs until the gate opens, so that
	// the drain is not over before the late answer lands.
	gate := filepath.Join(t.TempDir(), "gate")
	f.tasks <- task("w", "until [ -e "+gate+" ]; do sleep 0.02; done; echo welcome")
	close(m.release)
	recv(t, f.drains, "the drain told again on the new stream")
	recv(t, told, "the new stream's answer taken into account")
	close(m.answerFirst)
	recv(t, told, "the late answer taken into account")
	a.mu.Lock()
	_, stale := a.awaited["gone"]
	a.mu.Unlock()
	if stale {
		t.Error("the drain awaits a delivery named by the answer about the lost stream")
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, f.reports, "w's result"); r.GetTaskId() != "w" || string(r.GetStdout()) != "welcome\n" {
		t.Fatalf("reported %v; want w", r)
	}
	if err := recv(t, drained, "end of the drain"); err != nil {
		t.Errorf("Drain = %v, want nil: w, the only task, was done", err)
	}
	recv(t, f.streamsEnded, "end of the stream")
	stop()
}
