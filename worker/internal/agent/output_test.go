package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// outputMaster is a fakeMaster that takes live output.
type outputMaster struct {
	*fakeMaster
	batches chan *pb.OutputBatch // every batch received
	// stall makes StreamOutput never read: it holds each stream until the
	// worker or the server ends it, as a master that cannot keep up would.
	stall  bool
	opened atomic.Int32 // StreamOutput calls
}

func newOutputMaster(stall bool) *outputMaster {
	return &outputMaster{fakeMaster: newFakeMaster(), batches: make(chan *pb.OutputBatch, 1000), stall: stall}
}

func (m *outputMaster) StreamOutput(stream pb.NodeService_StreamOutputServer) error {
	m.opened.Add(1)
	if m.stall {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.OutputAck{})
		}
		if err != nil {
			return err
		}
		m.batches <- b
	}
}

// liveOutput is what a master saw of one delivery's live output.
type liveOutput struct {
	taskID  string
	attempt int32
	streams map[pb.OutputStream]string
}

// add checks b and keeps its chunks: each must belong to the delivery and
// follow on from the last (this master reads everything, so nothing is
// dropped and no offset jumps).
func (o *liveOutput) add(t *testing.T, b *pb.OutputBatch, instanceID string) {
	t.Helper()
	if b.GetWorkerId() != "w1" || b.GetInstanceId() != instanceID {
		t.Errorf("batch from worker %q instance %q, want w1 %q", b.GetWorkerId(), b.GetInstanceId(), instanceID)
	}
	for _, c := range b.GetChunks() {
		if c.GetTaskId() != o.taskID || c.GetAttempt() != o.attempt {
			t.Errorf("chunk of task %q attempt %d, want %q attempt %d", c.GetTaskId(), c.GetAttempt(), o.taskID, o.attempt)
		}
		s := c.GetStream()
		if s != pb.OutputStream_OUTPUT_STREAM_STDOUT && s != pb.OutputStream_OUTPUT_STREAM_STDERR {
			t.Errorf("chunk of stream %v", s)
		}
		if have := int64(len(o.streams[s])); c.GetOffset() != have {
			t.Errorf("%v chunk %q at offset %d, want %d", s, c.GetData(), c.GetOffset(), have)
		}
		o.streams[s] += string(c.GetData())
	}
}

func (o *liveOutput) stdout() string { return o.streams[pb.OutputStream_OUTPUT_STREAM_STDOUT] }
func (o *liveOutput) stderr() string { return o.streams[pb.OutputStream_OUTPUT_STREAM_STDERR] }

func TestLiveOutputArrivesWhileTheTaskRuns(t *testing.T) {
	f := newOutputMaster(false)
	_, addr := serve(t, f, "127.0.0.1:0")
	var logged syncBuffer
	startAgentWith(t, Config{MasterAddr: addr}, &logged)
	reg := recv(t, f.registrations, "registration")

	// The task stops after its first line until the test opens its gate,
	// so line1 can only arrive while it runs: with a fixed run time
	// instead (0.6 s after line1), a loaded machine that took longer to
	// ship line1 failed the test, though the output did come live. The
	// command spells no "line1" or "err1": the log check below needs that.
	gate := filepath.Join(t.TempDir(), "gate")
	f.tasks <- &pb.Task{Id: "t1", Cmd: "printf 'err%s\\n' 1 >&2; printf 'line%s\\n' 1; until [ -e '" + gate + "' ]; do sleep 0.02; done; for i in 2 3 4; do echo line$i; done", Attempt: 2}
	out := &liveOutput{taskID: "t1", attempt: 2, streams: map[pb.OutputStream]string{}}
	for !strings.Contains(out.stdout(), "line1\n") {
		out.add(t, recv(t, f.batches, "a batch with line1"), reg.GetInstanceId())
	}
	if len(f.reports) > 0 {
		t.Fatalf("the result was reported while the task waited at its gate (stdout so far %q)", out.stdout())
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := recv(t, f.reports, "report")
	// The rest is sent as the run ends; it may land just after the result.
	const want = "line1\nline2\nline3\nline4\n"
	deadline := time.After(within)
	for out.stdout() != want || out.stderr() != "err1\n" {
		select {
		case b := <-f.batches:
			out.add(t, b, reg.GetInstanceId())
		case <-deadline:
			t.Fatalf("after %s live stdout %q, stderr %q; want %q, %q", within, out.stdout(), out.stderr(), want, "err1\n")
		}
	}
	if string(r.GetStdout()) != want || string(r.GetStderr()) != "err1\n" || r.GetStdoutTruncated() {
		t.Errorf("result stdout %q, stderr %q, truncated %v; want the whole output as before", r.GetStdout(), r.GetStderr(), r.GetStdoutTruncated())
	}
	if f.opened.Load() != 1 {
		t.Errorf("%d output streams opened, want one", f.opened.Load())
	}
	// The log shows the command; only the output has "line1" and "err1".
	if l := logged.String(); strings.Contains(l, "line1") || strings.Contains(l, "err1") {
		t.Errorf("the log holds the task's output:\n%s", l)
	}
}

func TestSlowMasterNeverSlowsTasks(t *testing.T) {
	f := newOutputMaster(true)
	// A fixed 64 KiB window (no BDP growth): Send blocks once it is full.
	_, addr := serve(t, f, "127.0.0.1:0", grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	a, _ := startAgent(t, addr)
	recv(t, f.registrations, "registration")

	f.tasks <- task("big", "head -c 8000000 /dev/zero")
	f.tasks <- task("quick", "echo quick")
	got := map[string]*pb.TaskResult{}
	for len(got) < 2 {
		r := recv(t, f.reports, "reports of big and quick")
		got[r.GetTaskId()] = r
	}
	if r := got["big"]; r.GetExitCode() != 0 || len(r.GetStdout()) != 1024 || !r.GetStdoutTruncated() {
		t.Errorf("big: exit %d, %d bytes of stdout, truncated %v; want 0, 1024, true", r.GetExitCode(), len(r.GetStdout()), r.GetStdoutTruncated())
	}
	if r := got["quick"]; r.GetExitCode() != 0 || string(r.GetStdout()) != "quick\n" {
		t.Errorf("quick: exit %d, stdout %q; want 0, quick", r.GetExitCode(), r.GetStdout())
	}
	if f.opened.Load() < 1 {
		t.Errorf("no output stream opened: the test did not cover a master that does not read")
	}
	a.out.mu.Lock()
	peak, dropped := a.out.peak, a.out.dropped
	a.out.mu.Unlock()
	if peak > 2*outputMaxPending {
		t.Errorf("%d bytes pending at the peak, want at most %d (two runs)", peak, 2*outputMaxPending)
	}
	if dropped == 0 {
		t.Errorf("no output dropped: the bound was never reached")
	}
}

// countStreamOutput counts the StreamOutput calls a master sees.
func countStreamOutput(n *atomic.Int32) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		if info.FullMethod == pb.NodeService_StreamOutput_FullMethodName {
			n.Add(1)
		}
		return next(srv, ss)
	}
}

func TestMasterWithoutStreamOutput(t *testing.T) {
	f := newFakeMaster() // StreamOutput: Unimplemented
	var opened atomic.Int32
	_, addr := serve(t, f, "127.0.0.1:0", grpc.StreamInterceptor(countStreamOutput(&opened)))
	var logged syncBuffer
	a, _ := startAgentWith(t, Config{MasterAddr: addr}, &logged)
	recv(t, f.registrations, "registration")

	for i := range 4 {
		id := fmt.Sprint("t", i)
		f.tasks <- task(id, "echo out; echo err >&2")
		r := recv(t, f.reports, "report of "+id)
		if r.GetTaskId() != id || r.GetExitCode() != 0 || string(r.GetStdout()) != "out\n" || string(r.GetStderr()) != "err\n" {
			t.Fatalf("report %v, want %s with its output", r, id)
		}
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("%d output streams opened in one registration, want 1 (tried once, then off)", n)
	}
	if n := strings.Count(logged.String(), "master does not take live output"); n != 1 {
		t.Errorf("the Unimplemented answer logged %d times, want once:\n%s", n, logged.String())
	}

	// A new registration tries again, once.
	f.unknown.Store(true)
	recv(t, f.registrations, "registration after known=false")
	f.unknown.Store(false)
	eventually(t, a.Registered, "not registered again")
	f.tasks <- task("again", "for i in 1 2 3; do echo $i; sleep 0.2; done")
	if r := recv(t, f.reports, "report of again"); string(r.GetStdout()) != "1\n2\n3\n" {
		t.Errorf("report %v, want again with its output", r)
	}
	eventually(t, func() bool { return opened.Load() >= 2 }, "no output stream opened after the new registration")
	n := opened.Load()
	regs := int32(2) + int32(len(f.registrations)) // after n: registrations only add up
	if n > regs {
		t.Errorf("%d output streams opened in %d registrations, want at most one each", n, regs)
	}
	if n := strings.Count(logged.String(), "master does not take live output"); n != 1 {
		t.Errorf("the Unimplemented answer logged %d times, want once", n)
	}
}

// The shipper's bound, offsets and batching, without a master.
func TestShipperBoundsAndOffsets(t *testing.T) {
	s := newShipper()
	r := s.start("t1", 3)
	big := strings.Repeat("x", outputMaxPending-10)
	r.Write(1, []byte(big))
	r.Write(2, []byte("0123456789abcdef")) // 10 fit, 6 dropped
	r.Write(1, []byte("dropped"))
	if s.pendingBytes() != outputMaxPending || r.dropped != 13 {
		t.Fatalf("pending %d, dropped %d; want %d, 13", s.pendingBytes(), r.dropped, outputMaxPending)
	}
	if !s.due() {
		t.Error("a full run is not due")
	}
	var got []*pb.OutputChunk
	for {
		c := s.take(outputMaxBatch)
		if len(c) == 0 {
			break
		}
		got = append(got, c...)
	}
	// Taking frees room: what comes next starts where the stream stands.
	r.Write(1, []byte("after"))
	r.Write(2, []byte("E"))
	if dropped := s.end(r); dropped != 13 {
		t.Errorf("end says %d dropped, want 13", dropped)
	}
	got = append(got, s.take(outputMaxBatch)...)
	if len(s.runs) != 0 || s.pendingBytes() != 0 {
		t.Errorf("%d runs, %d bytes pending after the ended run was taken; want none", len(s.runs), s.pendingBytes())
	}
	seen := map[pb.OutputStream]string{}
	next := map[pb.OutputStream]int64{}
	var jumps []string
	for _, c := range got {
		if c.GetOffset() != next[c.GetStream()] {
			jumps = append(jumps, fmt.Sprintf("%v %d->%d", c.GetStream(), next[c.GetStream()], c.GetOffset()))
		}
		seen[c.GetStream()] += string(c.GetData())
		next[c.GetStream()] = c.GetOffset() + int64(len(c.GetData()))
		if c.GetTaskId() != "t1" || c.GetAttempt() != 3 {
			t.Errorf("chunk of %q attempt %d, want t1 attempt 3", c.GetTaskId(), c.GetAttempt())
		}
	}
	if want := big + "after"; seen[pb.OutputStream_OUTPUT_STREAM_STDOUT] != want {
		t.Errorf("stdout: %d bytes, want %d", len(seen[pb.OutputStream_OUTPUT_STREAM_STDOUT]), len(want))
	}
	if want := "0123456789E"; seen[pb.OutputStream_OUTPUT_STREAM_STDERR] != want {
		t.Errorf("stderr %q, want %q", seen[pb.OutputStream_OUTPUT_STREAM_STDERR], want)
	}
	wantJumps := []string{
		fmt.Sprintf("OUTPUT_STREAM_STDOUT %d->%d", outputMaxPending-10, outputMaxPending-3),
		"OUTPUT_STREAM_STDERR 10->16",
	}
	if fmt.Sprint(jumps) != fmt.Sprint(wantJumps) {
		t.Errorf("offset jumps %v, want %v", jumps, wantJumps)
	}
}

// A run joins the shipper's list at its first write, and leaves it once it
// has ended and its output is taken; one that never writes costs nothing.
func TestShipperListsRunsThatWrite(t *testing.T) {
	s := newShipper()
	quiet, loud := s.start("quiet", 1), s.start("loud", 1)
	if len(s.runs) != 0 {
		t.Fatalf("%d runs listed before any output, want none", len(s.runs))
	}
	loud.Write(1, []byte("hi"))
	if len(s.runs) != 1 || s.runs[0] != loud {
		t.Fatalf("runs %v after one wrote, want only it", s.runs)
	}
	if dropped := s.end(quiet); dropped != 0 || len(s.runs) != 1 {
		t.Errorf("ending the quiet run: dropped %d, %d runs listed; want 0, 1", dropped, len(s.runs))
	}
	s.end(loud)
	if c := s.take(outputMaxBatch); len(c) != 1 || string(c[0].GetData()) != "hi" || len(s.runs) != 0 {
		t.Errorf("took %v, %d runs left; want hi and none", c, len(s.runs))
	}
}

// minMasterRecv is the smallest MASTER_GRPC_MAX_RECV_BYTES a master accepts:
// 2×MASTER_MAX_OUTPUT_BYTES (at least 1 KiB) + 64 KiB. outputMaxBatch is
// meant to keep every batch under it; a batch over it ends the stream and
// is lost.
const minMasterRecv = 2*1024 + 64<<10

// Many runs writing a little each (a worker with 256 slots of chatty tasks):
// each chunk also carries its task ID, attempt, stream and offset, so take
// counts those with the data; it used to count the data alone, and such a
// batch reached 72 KB.
func TestOutputBatchFitsTheSmallestMaster(t *testing.T) {
	s := newShipper()
	for i := range 256 {
		r := s.start(fmt.Sprintf("%s-%03d", uuid.NewString(), i), 1) // 40-character IDs
		r.Write(1, []byte(strings.Repeat("o", 90)))
		r.Write(2, []byte(strings.Repeat("e", 90)))
	}
	for s.pendingBytes() > 0 {
		batch := &pb.OutputBatch{WorkerId: strings.Repeat("w", 64), InstanceId: uuid.NewString(), Chunks: s.take(outputMaxBatch)}
		if n := proto.Size(batch); n > minMasterRecv {
			t.Fatalf("a batch of %d chunks is %d bytes, over the %d a master may accept", len(batch.Chunks), n, minMasterRecv)
		}
	}
}
