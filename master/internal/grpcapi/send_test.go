package grpcapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
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
