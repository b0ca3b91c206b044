package grpcapi

import (
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
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

// StreamOutput takes its chunks on a goroutine of its own too: a panic
// there must fail that stream with Internal, not end the master, and the
// worker's next stream is served as before.
func TestStreamOutputSurvivesAPanic(t *testing.T) {
	var armed atomic.Bool
	appendChunk = func(b *liveout.Buffers, c liveout.Chunk) bool {
		if armed.CompareAndSwap(true, false) {
			panic("append failed")
		}
		return b.Append(c)
	}
	t.Cleanup(func() { appendChunk = (*liveout.Buffers).Append })
	live := liveout.New(1 << 16)
	s := startWith(t, setup{live: live})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	_, tasks := delivered(t, ctx, s, c, "w1", 1)
	id := tasks[0].GetId()
	batch := func(data string, off int64) *pb.OutputBatch {
		return &pb.OutputBatch{WorkerId: "w1", InstanceId: "i1", Chunks: []*pb.OutputChunk{
			{TaskId: id, Attempt: 1, Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Offset: off, Data: []byte(data)}}}
	}

	armed.Store(true)
	out, err := c.StreamOutput(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(batch("lost\n", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := out.CloseAndRecv(); status.Code(err) != codes.Internal {
		t.Fatalf("the stream whose append panicked ended with %v; want Internal", err)
	}

	// The master goes on: a new stream's chunks reach the live buffers.
	out, err = c.StreamOutput(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(batch("hi\n", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := out.CloseAndRecv(); err != nil {
		t.Fatalf("the next stream ended with %v", err)
	}
	if snap, ok := live.Snapshot(id); !ok || string(snap.Streams[liveout.Stdout].Data) != "hi\n" {
		t.Fatalf("live output = %+v, %v; want the next stream's chunk", snap, ok)
	}
	if hb, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", InstanceId: "i1"}); err != nil || !hb.GetKnown() {
		t.Fatalf("heartbeat after the panic: %v, %v; want known", hb, err)
	}
}
