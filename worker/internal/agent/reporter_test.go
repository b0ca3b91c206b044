package agent

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// streamMaster is a fakeMaster that takes the Report stream: handle
// serves each stream, numbered from 1.
type streamMaster struct {
	*fakeMaster
	streams atomic.Int32
	handle  func(n int32, stream pb.NodeService_ReportServer) error
}

func (m *streamMaster) Report(stream pb.NodeService_ReportServer) error {
	return m.handle(m.streams.Add(1), stream)
}

// recvN reads n results from stream.
func recvN(stream pb.NodeService_ReportServer, n int) ([]*pb.TaskResult, error) {
	var out []*pb.TaskResult
	for range n {
		r, err := stream.Recv()
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// ackOf answers r with code.
func ackOf(r *pb.TaskResult, code codes.Code) *pb.ResultAck {
	return &pb.ResultAck{TaskId: r.GetTaskId(), Attempt: r.GetAttempt(), Code: int32(code)}
}

// holdStream keeps a stream open until the worker goes.
func holdStream(stream pb.NodeService_ReportServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

func runTasks(f *fakeMaster, ids ...string) {
	for _, id := range ids {
		f.tasks <- task(id, "echo "+id)
	}
}

// Results go on one stream without waiting for each ack, and one message
// may acknowledge them all; ReportStatus is never called.
func TestReportStreamBatchedAcks(t *testing.T) {
	f := newFakeMaster()
	got := make(chan []*pb.TaskResult, 1)
	m := &streamMaster{fakeMaster: f, handle: func(_ int32, stream pb.NodeService_ReportServer) error {
		rs, err := recvN(stream, 2) // both before any ack: nothing waits for one
		if err != nil {
			return err
		}
		got <- rs
		if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(rs[0], codes.OK), ackOf(rs[1], codes.OK)}}); err != nil {
			return err
		}
		return holdStream(stream)
	}}
	_, addr := serve(t, m, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	runTasks(f, "t1", "t2")
	rs := recv(t, got, "two results on the stream")
	ids := []string{rs[0].GetTaskId(), rs[1].GetTaskId()}
	if strings.Join(ids, ",") != "t1,t2" && strings.Join(ids, ",") != "t2,t1" {
		t.Fatalf("results for %v, want t1 and t2", ids)
	}
	eventually(t, func() bool { return a.queued() == 0 && len(a.runningIDs()) == 0 }, "acknowledged results still held")
	if n := f.reportCalls.Load(); n != 0 {
		t.Errorf("%d ReportStatus calls, want none: the stream carries every result", n)
	}
	if n := m.streams.Load(); n != 1 {
		t.Errorf("%d streams, want 1", n)
	}
}

// A result leaves the queue, and frees its slot, only when its own ack
// comes: an ack of a later result removes that one alone.
func TestReportStreamRemovesOnlyWhatIsAcked(t *testing.T) {
	f := newFakeMaster()
	got := make(chan []*pb.TaskResult, 1)
	ackFirst := make(chan struct{})
	m := &streamMaster{fakeMaster: f, handle: func(_ int32, stream pb.NodeService_ReportServer) error {
		rs, err := recvN(stream, 2)
		if err != nil {
			return err
		}
		got <- rs
		if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(rs[1], codes.OK)}}); err != nil {
			return err
		}
		select {
		case <-ackFirst:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(rs[0], codes.OK)}}); err != nil {
			return err
		}
		return holdStream(stream)
	}}
	_, addr := serve(t, m, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	runTasks(f, "t1", "t2")
	rs := recv(t, got, "two results on the stream")
	first, second := rs[0].GetTaskId(), rs[1].GetTaskId()
	eventually(t, func() bool { return a.queued() == 1 }, "the acked result still queued")
	if ids := a.runningIDs(); len(ids) != 1 || ids[0] != first {
		t.Fatalf("held %v after %s's ack; want only %s, whose ack has not come", ids, second, first)
	}
	if r := a.oldestResult(); r.GetTaskId() != first {
		t.Fatalf("queued %s, want %s", r.GetTaskId(), first)
	}
	close(ackFirst)
	eventually(t, func() bool { return a.queued() == 0 && len(a.runningIDs()) == 0 }, "the first result still held after its ack")
}

// A stream that breaks before the acks costs nothing: the next stream
// carries every unacknowledged result again.
func TestReportStreamResendsAfterABreak(t *testing.T) {
	f := newFakeMaster()
	var mu sync.Mutex
	seen := map[int32][]string{} // results per stream; protected by mu
	done := make(chan struct{})
	m := &streamMaster{fakeMaster: f, handle: func(n int32, stream pb.NodeService_ReportServer) error {
		rs, err := recvN(stream, 2)
		mu.Lock()
		for _, r := range rs {
			seen[n] = append(seen[n], r.GetTaskId())
		}
		mu.Unlock()
		if err != nil {
			return err
		}
		if n == 1 {
			return status.Error(codes.Unavailable, "master going away") // no ack
		}
		if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(rs[0], codes.OK), ackOf(rs[1], codes.OK)}}); err != nil {
			return err
		}
		close(done)
		return holdStream(stream)
	}}
	_, addr := serve(t, m, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	runTasks(f, "t1", "t2")
	recv(t, done, "the second stream")
	eventually(t, func() bool { return a.queued() == 0 }, "results still queued after the second stream's acks")
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen[1]) != fmt.Sprint(seen[2]) || len(seen[2]) != 2 {
		t.Errorf("first stream got %v, second %v; want both results on each, in the same order", seen[1], seen[2])
	}
}

// A master without the Report RPC gets each result through ReportStatus.
func TestReportFallsBackToReportStatus(t *testing.T) {
	f := newFakeMaster() // answers Report with Unimplemented
	_, addr := serve(t, f, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	runTasks(f, "t1", "t2")
	got := map[string]bool{}
	for range 2 {
		got[recv(t, f.reports, "report").GetTaskId()] = true
	}
	if !got["t1"] || !got["t2"] {
		t.Errorf("reported %v, want t1 and t2", got)
	}
	eventually(t, func() bool { return a.queued() == 0 }, "results still queued")
}

// Each result's answer on the stream is handled as ReportStatus's would
// be: NOT_FOUND drops it, RESOURCE_EXHAUSTED sends it again without its
// output, UNAVAILABLE ends the stream and the next sends it again.
func TestReportStreamAnswersPerResult(t *testing.T) {
	f := newFakeMaster()
	final := make(chan *pb.TaskResult, 10)
	m := &streamMaster{fakeMaster: f, handle: func(n int32, stream pb.NodeService_ReportServer) error {
		for {
			r, err := stream.Recv()
			if err != nil {
				return err
			}
			code := codes.OK
			switch {
			case r.GetTaskId() == "gone":
				code = codes.NotFound
			case r.GetTaskId() == "big" && len(r.GetStdout()) > 0:
				code = codes.ResourceExhausted
			case r.GetTaskId() == "flaky" && n == 1:
				code = codes.Unavailable
			}
			if code == codes.OK {
				final <- r
			}
			if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(r, code)}}); err != nil {
				return err
			}
		}
	}}
	_, addr := serve(t, m, "127.0.0.1:0")
	a, _ := startAgent(t, addr)
	runTasks(f, "gone", "big", "flaky")
	got := map[string]*pb.TaskResult{}
	for len(got) < 2 {
		r := recv(t, final, "an accepted result")
		got[r.GetTaskId()] = r
	}
	if r := got["big"]; r == nil || len(r.GetStdout()) != 0 || !r.GetStdoutTruncated() || !strings.Contains(r.GetError(), "MASTER_GRPC_MAX_RECV_BYTES") {
		t.Errorf("big arrived as %v; want it without output, saying why", r)
	}
	if got["flaky"] == nil {
		t.Error("flaky never accepted")
	}
	eventually(t, func() bool { return a.queued() == 0 && len(a.runningIDs()) == 0 }, "results still held")
	if n := m.streams.Load(); n < 2 {
		t.Errorf("%d streams, want a second after the UNAVAILABLE answer", n)
	}
}

// recordEach takes the results of stream into f.reports and acks each,
// until the stream fails.
func recordEach(f *fakeMaster, stream pb.NodeService_ReportServer) error {
	for {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		f.reports <- r
		if err := stream.Send(&pb.ReportAcks{Acks: []*pb.ResultAck{ackOf(r, codes.OK)}}); err != nil {
			return err
		}
	}
}

// A result larger than the master's stream accepts ends the stream with
// RESOURCE_EXHAUSTED, which names no result: the queued ones go through
// ReportStatus, which sends the big one without its output.
func TestReportStreamTooLargeGoesThroughReportStatus(t *testing.T) {
	f := newFakeMaster()
	m := &streamMaster{fakeMaster: f, handle: func(_ int32, stream pb.NodeService_ReportServer) error {
		return recordEach(f, stream)
	}}
	_, addr := serve(t, m, "127.0.0.1:0", grpc.MaxRecvMsgSize(600))
	a, _ := startAgent(t, addr) // keeps 1024 bytes of output
	f.tasks <- task("big", "head -c 1000 /dev/zero")
	r := recv(t, f.reports, "the big result")
	if r.GetTaskId() != "big" || len(r.GetStdout()) != 0 || !r.GetStdoutTruncated() {
		t.Fatalf("got %v; want big without its output", r)
	}
	// gRPC refuses the first call, with the output, before the handler.
	if n := f.reportCalls.Load(); n != 1 {
		t.Errorf("%d ReportStatus calls reached the master, want 1: the result without its output", n)
	}
	eventually(t, func() bool { return a.queued() == 0 }, "result still queued")
	f.tasks <- task("small", "true")
	if r := recv(t, f.reports, "the next result"); r.GetTaskId() != "small" {
		t.Fatalf("got %s, want small", r.GetTaskId())
	}
	if n := f.reportCalls.Load(); n != 1 {
		t.Errorf("%d ReportStatus calls, want still 1: the stream carries the next result", n)
	}
}

// A backlog of results meets a master that ends the Report stream with an
// answer that changes how results are sent: RESOURCE_EXHAUSTED (the first
// result is larger than it takes on the stream) or UNIMPLEMENTED (a master
// without the stream). The results are large enough that a second Send
// blocks on flow control, and a blocked Send returns only io.EOF when the
// stream ends: the status must still be read from Recv, so that the queued
// results go through ReportStatus instead of down the same failing stream
// again and again.
func TestReportStreamAnswerBehindABlockedSend(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer func(*fakeMaster, pb.NodeService_ReportServer) error // the second stream
	}{
		{"too large", recordEach}, // until a result past the server's limit, 1 MiB: RESOURCE_EXHAUSTED
		{"no Report stream", func(*fakeMaster, pb.NodeService_ReportServer) error {
			return status.Error(codes.Unimplemented, "unknown method Report")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeMaster()
			backlog := make(chan struct{})
			m := &streamMaster{fakeMaster: f, handle: func(n int32, stream pb.NodeService_ReportServer) error {
				if n == 1 { // a master busy at first, while the results pile up
					<-backlog
					return status.Error(codes.Unavailable, "busy")
				}
				return tt.answer(f, stream)
			}}
			_, addr := serve(t, m, "127.0.0.1:0", grpc.MaxRecvMsgSize(1<<20))
			a, _ := startAgentWith(t, Config{MasterAddr: addr, MaxOutput: 2 << 20}, t.Output())
			ids := []string{"small", "big1", "big2", "big3"}
			for _, id := range ids {
				f.tasks <- task(id, map[bool]string{true: "true", false: "head -c 1200000 /dev/zero"}[id == "small"])
			}
			eventually(t, func() bool { return a.queued() == len(ids) }, "the results to pile up")
			close(backlog)
			got := map[string]bool{}
			for len(got) < len(ids) {
				got[recv(t, f.reports, "the results through ReportStatus").GetTaskId()] = true
			}
			// Stream 1: the busy master; stream 2: the answer.
			if n := m.streams.Load(); n != 2 {
				t.Errorf("%d Report streams opened, want 2: the answer was taken for a broken stream", n)
			}
		})
	}
}
