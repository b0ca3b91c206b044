package grpcapi

import (
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// StreamOutput takes the live output of the worker's running tasks until
// the worker closes the stream, and answers once. Each chunk goes to the
// live buffers, which keep only chunks of a current delivery from the
// worker that holds it. A malformed chunk is skipped, not fatal: live
// output is a view, and one bad chunk must not cost a worker its stream.
// Append never blocks (the buffers' lock is a leaf, and followers read at
// their own pace), so a slow follower never slows this stream or the
// worker behind it.
func (s *Server) StreamOutput(stream pb.NodeService_StreamOutputServer) error {
	// The stream is long-lived (one per registration), so, like Report, it
	// ends when the dispatcher closes: the master's shutdown must not wait
	// for the worker to close it. The chunks are taken on a goroutine of
	// its own, so that the handler can return while a Recv is blocked;
	// gRPC then ends the stream, and with it that Recv.
	read := make(chan error, 1)
	go func() { read <- s.takeOutput(stream) }()
	select {
	case err := <-read:
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.OutputAck{})
		}
		return err
	case <-s.d.Closed():
		return status.Error(codes.Unavailable, "the master is shutting down")
	}
}

// takeOutput hands the stream's chunks to the live buffers until Recv
// fails, and returns its error. It runs on a goroutine of the handler's,
// which the recovery interceptor does not cover: a panic, logged with its
// stack, fails this stream with Internal instead of ending the master.
func (s *Server) takeOutput(stream pb.NodeService_StreamOutputServer) (err error) {
	defer recoverTo(s.log, pb.NodeService_StreamOutput_FullMethodName, &err)
	for {
		batch, err := stream.Recv()
		if err != nil {
			return err
		}
		if s.live == nil || !workerIDPattern.MatchString(batch.GetWorkerId()) {
			continue
		}
		for _, c := range batch.GetChunks() {
			if ch, ok := chunkOf(batch.GetWorkerId(), c); ok {
				appendChunk(s.live, ch)
			}
		}
	}
}

// appendChunk is (*liveout.Buffers).Append; a test replaces it to panic.
var appendChunk = (*liveout.Buffers).Append

// chunkOf converts a chunk, or reports it malformed: an unknown stream, a
// negative offset or attempt, a task ID that is empty or too long.
func chunkOf(workerID string, c *pb.OutputChunk) (liveout.Chunk, bool) {
	var st liveout.Stream
	switch c.GetStream() {
	case pb.OutputStream_OUTPUT_STREAM_STDOUT:
		st = liveout.Stdout
	case pb.OutputStream_OUTPUT_STREAM_STDERR:
		st = liveout.Stderr
	default:
		return liveout.Chunk{}, false
	}
	if c.GetTaskId() == "" || len(c.GetTaskId()) > maxIDLen || c.GetOffset() < 0 || c.GetAttempt() < 1 {
		return liveout.Chunk{}, false
	}
	return liveout.Chunk{TaskID: c.GetTaskId(), WorkerID: workerID, Attempt: int(c.GetAttempt()), Stream: st,
		Offset: c.GetOffset(), Data: c.GetData()}, true
}
