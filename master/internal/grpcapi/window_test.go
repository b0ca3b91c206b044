package grpcapi

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/proto/wiretest"
)

// The master's flow-control windows are fixed: with gRPC's dynamic ones
// it would send a PING with nearly every result it received (the
// bandwidth-delay estimate), two more frames to write and read per task
// on each side.
func TestNoPingPerResult(t *testing.T) {
	s := startWith(t, setup{})
	var conn atomic.Pointer[wiretest.Conn] // set by the dialer, on gRPC's goroutine
	cc := dial(t, s.addr,
		// The client's own windows fixed too, so that only the master's
		// settings decide whether it pings.
		grpc.WithStaticStreamWindowSize(1<<20), grpc.WithStaticConnWindowSize(4<<20),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rc := &wiretest.Conn{Conn: c}
			conn.Store(rc)
			return rc, nil
		}))
	c := pb.NewNodeServiceClient(cc)
	ctx := ctxT(t)
	stream := welcomed(t, ctx, c)
	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for range n {
		if _, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: "true"}); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil || m.GetTask() == nil {
			t.Fatalf("assignment %v, %v", m, err)
		}
		if err := rs.Send(resultOf("w1", m.GetTask())); err != nil {
			t.Fatal(err)
		}
		recvAcks(t, rs, 1)
	}

	frames, pings, err := wiretest.Frames(conn.Load().Recorded(), false)
	if err != nil {
		t.Fatal(err)
	}
	if frames < 2*n {
		t.Fatalf("read %d frames from the master for %d tasks; the recording is broken", frames, n)
	}
	// Keepalive pings come every 5 s; this test takes well under that.
	if pings > 0 {
		t.Errorf("the master sent %d PINGs (of %d frames) for %d results; want none", pings, frames, n)
	}
}
