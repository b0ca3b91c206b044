package grpcapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// StreamOutput hands a current delivery's chunks to the live buffers, and
// drops a stale delivery's and malformed ones without ending the stream.
func TestStreamOutputKeepsOnlyTheCurrentDelivery(t *testing.T) {
	live := liveout.New(1 << 16)
	s := startWith(t, setup{live: live})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx := ctxT(t)
	stream := welcomed(t, ctx, c)
	tk, _, err := s.d.Submit(context.Background(), dispatch.Submission{Cmd: "echo hi"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetTask().GetId() != tk.ID {
		t.Fatalf("assignment = %v, %v", m, err)
	}

	out, err := c.StreamOutput(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(attempt int32, st pb.OutputStream, off int64, data string) *pb.OutputChunk {
		return &pb.OutputChunk{TaskId: tk.ID, Attempt: attempt, Stream: st, Offset: off, Data: []byte(data)}
	}
	batches := []*pb.OutputBatch{
		{WorkerId: "w1", InstanceId: "i1", Chunks: []*pb.OutputChunk{
			chunk(1, pb.OutputStream_OUTPUT_STREAM_STDOUT, 0, "hi\n"),
			chunk(2, pb.OutputStream_OUTPUT_STREAM_STDOUT, 0, "stale attempt\n"),
			chunk(1, pb.OutputStream_OUTPUT_STREAM_UNSPECIFIED, 0, "no stream\n"),
			chunk(1, pb.OutputStream_OUTPUT_STREAM_STDERR, -5, "negative\n"),
			{Attempt: 1, Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Data: []byte("no task\n")},
			chunk(1, pb.OutputStream_OUTPUT_STREAM_STDERR, 0, "warn\n"),
		}},
		{WorkerId: "w2", InstanceId: "i2", Chunks: []*pb.OutputChunk{ // not the worker that holds it
			chunk(1, pb.OutputStream_OUTPUT_STREAM_STDOUT, 3, "other worker\n"),
		}},
		{WorkerId: "w1", InstanceId: "i1", Chunks: []*pb.OutputChunk{
			chunk(1, pb.OutputStream_OUTPUT_STREAM_STDOUT, 3, "bye\n"),
		}},
	}
	for _, b := range batches {
		if err := out.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.CloseAndRecv(); err != nil {
		t.Fatalf("StreamOutput ended with %v", err)
	}
	// The ack comes after the last batch was handled.
	snap, ok := live.Snapshot(tk.ID)
	if !ok || snap.Attempt != 1 || snap.WorkerID != "w1" {
		t.Fatalf("Snapshot = %+v, %v", snap, ok)
	}
	if got := string(snap.Streams[liveout.Stdout].Data); got != "hi\nbye\n" {
		t.Errorf("stdout = %q, want %q", got, "hi\nbye\n")
	}
	if got := string(snap.Streams[liveout.Stderr].Data); got != "warn\n" {
		t.Errorf("stderr = %q, want %q", got, "warn\n")
	}
}

// A StreamOutput stream is long-lived (one per registration, kept open by
// the worker while it runs), so, like Report, it must end when the
// dispatcher closes: otherwise the master's graceful stop waits on it until
// MASTER_SHUTDOWN_TIMEOUT, for every worker that ran a task with output.
func TestStreamOutputEndsWhenTheDispatcherCloses(t *testing.T) {
	live := liveout.New(1 << 16)
	s := startWith(t, setup{live: live})
	c := pb.NewNodeServiceClient(dial(t, s.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	welcomed(t, ctx, c)
	out, err := c.StreamOutput(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Send(&pb.OutputBatch{WorkerId: "w1", InstanceId: "i1"}); err != nil {
		t.Fatal(err)
	}
	s.d.Close()
	// The worker keeps its side open, as it does until it registers again;
	// the master must end the stream by itself.
	err = out.RecvMsg(new(pb.OutputAck))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("after Close the output stream ended with %v; want UNAVAILABLE from the master, not the worker's deadline", err)
	}
}
