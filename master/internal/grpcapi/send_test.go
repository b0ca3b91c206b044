package grpcapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// A worker that stops reading lets its stream's flow-control window fill;
// the master's next Send then blocks for as long as the worker stays
// silent. The send deadline drops the worker, so its slots leave the
// rotation instead of waiting on it forever.
func TestWorkerThatStopsReadingIsDropped(t *testing.T) {
	const cmdBytes = 60 << 10
	s := startWith(t, setup{params: Params{SendTimeout: 300 * time.Millisecond}, maxCmdBytes: cmdBytes})
	// The smallest windows gRPC allows; setting them turns off its BDP
	// estimation, which would otherwise grow them to megabytes.
	cc := dial(t, s.addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	// Not ctxT: its deadline would end the stream, and drop the worker,
	// about when eventually gives up, so the test could pass without the
	// send deadline.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := pb.NewNodeServiceClient(cc).AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("first message %v, %v; want the welcome", m, err)
	}
	// The worker reads nothing more. 64 tasks of 60 KiB, near 4 MiB, are
	// far more than the windows and the server's per-stream write quota
	// (64 KiB each) hold, with room to spare should any of them grow.
	cmd := "true " + strings.Repeat("x", cmdBytes-len("true "))
	for range 64 {
		if _, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: cmd}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the worker that stopped reading to leave the rotation", func() bool { return len(s.d.Workers()) == 0 })
}

// A task is sent only once its delivery is on disk: while the database
// refuses writes, the worker does not hear of the task the master gave it,
// and hears of it, as attempt 1, once the write lands.
func TestTaskIsSentOnlyOnceOnDisk(t *testing.T) {
	// Writes give up on a held lock after 50ms and are retried within
	// milliseconds, so WriteErr soon says they fail.
	s := startWith(t, setup{storeOpts: []store.Option{
		store.WithBusyTimeout(50 * time.Millisecond), store.WithRetryBackoff(time.Millisecond, 20*time.Millisecond),
	}})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	stream := welcomed(t, ctx, c)
	// Both submitted while writes succeed (Submit refuses once they fail):
	// A takes the one slot, B waits in the queue for it.
	a, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: "echo a"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetTask().GetId() != a.ID {
		t.Fatalf("got %v, %v; want task A", m, err)
	}
	b, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: "echo b"})
	if err != nil {
		t.Fatal(err)
	}

	release := storetest.HoldWriteLock(t, s.dbPath)
	// A's result frees the slot, and B is assigned to it; neither write can
	// land, so the report's ack, which means "on disk", waits.
	reported := make(chan error, 1)
	go func() {
		_, err := c.ReportStatus(ctx, &pb.TaskResult{TaskId: a.ID, WorkerId: "w1", InstanceId: "i1", Attempt: 1})
		reported <- err
	}()
	type received struct {
		m   *pb.Assignment
		err error
	}
	next := make(chan received, 1)
	go func() {
		m, err := stream.Recv()
		next <- received{m, err}
	}()
	eventually(t, "B to be assigned", func() bool {
		got, err := s.d.Get(context.Background(), b.ID)
		return err == nil && got.Status == task.StatusRunning
	})
	eventually(t, "the store to say writes fail", func() bool { return s.st.WriteErr() != nil })
	// Nothing can make B arrive now short of a bug, so this waits out a
	// window in which a send that did not wait for the disk would show.
	select {
	case r := <-next:
		t.Fatalf("while the write was failing (%v) the worker got %v, %v; want nothing until B's delivery is on disk", s.st.WriteErr(), r.m, r.err)
	case err := <-reported:
		t.Fatalf("A's report returned (%v) while its write was failing; want it to wait for the disk", err)
	case <-time.After(200 * time.Millisecond):
	}

	release()
	select {
	case r := <-next:
		if r.err != nil || r.m.GetTask().GetId() != b.ID || r.m.GetTask().GetAttempt() != 1 {
			t.Fatalf("after the lock was released the worker got %v, %v; want B, attempt 1", r.m, r.err)
		}
	case <-ctx.Done():
		t.Fatal("B never arrived after the lock was released")
	}
	// The worker heard of B: its delivery is on disk already.
	if got, err := s.st.Get(context.Background(), b.ID); err != nil || got.Status != task.StatusRunning || got.Attempts != 1 {
		t.Fatalf("stored B = %s attempts %d, %v; want running, attempts 1", got.Status, got.Attempts, err)
	}
	select {
	case err := <-reported:
		if err != nil {
			t.Fatalf("A's report: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("A's report never returned after the lock was released")
	}
	if got, err := s.st.Get(context.Background(), a.ID); err != nil || got.Status != task.StatusSucceeded {
		t.Fatalf("stored A = %s, %v; want succeeded", got.Status, err)
	}
}
