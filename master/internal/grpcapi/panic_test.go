package grpcapi

import (
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// The recovery interceptor covers a handler's own goroutine only. A Report
// stream takes its results into the dispatcher on a goroutine of its own:
// a panic there (an event observer's stands in for any) must cost that
// result an Internal answer, as it costs a ReportStatus, not the master.
func TestReportStreamSurvivesAPanic(t *testing.T) {
	hub := events.NewHub(10, 10)
	var armed atomic.Bool
	hub.Observe(func(e events.Event) {
		if e.Type == events.TaskFinished && armed.CompareAndSwap(true, false) {
			panic("observer failed")
		}
	})
	s := startWith(t, setup{hub: hub})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	_, tasks := delivered(t, ctx, s, c, "w1", 2)
	rs, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if err := rs.Send(resultOf("w1", tasks[0])); err != nil {
		t.Fatal(err)
	}
	if ack := recvAcks(t, rs, 1)[0]; codes.Code(ack.GetCode()) != codes.Internal || ack.GetTaskId() != tasks[0].GetId() {
		t.Fatalf("ack %v; want Internal for the result whose report panicked", ack)
	}
	// The stream, and the master, go on.
	if err := rs.Send(resultOf("w1", tasks[1])); err != nil {
		t.Fatal(err)
	}
	if ack := recvAcks(t, rs, 1)[0]; ack.GetCode() != 0 || ack.GetTaskId() != tasks[1].GetId() {
		t.Fatalf("ack %v; want the next result acknowledged", ack)
	}
	if hb, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", InstanceId: "i1"}); err != nil || !hb.GetKnown() {
		t.Fatalf("heartbeat after the panic: %v, %v; want known", hb, err)
	}
}
