package agent

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/worker/internal/runner"
)

// Live output: the output of the runs going on here goes to the master as it
// is written (StreamOutput), so that people can follow a task. It is a view,
// not the record: the final output still goes in the result (ReportStatus),
// so whatever the shipper drops costs a follower some bytes, never the result.
// A task never waits for it: what does not fit in its pending bound is dropped.
const (
	// outputEvery is how long output waits for more before it is sent.
	outputEvery = 100 * time.Millisecond
	// outputBatchBytes pending (all runs) are sent without waiting.
	outputBatchBytes = 32 << 10
	// outputMaxPending bounds the bytes waiting to be sent per run, stdout
	// and stderr together; what a run writes past it is dropped.
	outputMaxPending = 256 << 10
	// outputMaxBatch bounds the data in one batch: a master may accept
	// messages of little more than 64 KiB (MASTER_GRPC_MAX_RECV_BYTES).
	outputMaxBatch = 48 << 10
	// outputSendTimeout gives up a stream whose Send blocks this long (a
	// master that does not read): otherwise ended runs would pile up behind it.
	outputSendTimeout = 10 * time.Second
)

// shipper holds the output of the runs going on here until the agent's
// shipping goroutine (shipOutput) takes it. The runs' reader goroutines
// write to it and never wait for anything but mu, which is held only to
// copy or to take bytes.
type shipper struct {
	// wake tells shipOutput there is output to look at: it began to pile
	// up, reached outputBatchBytes, or a run ended. It has room for one
	// signal, so writers never block and a signal is never lost.
	wake chan struct{}

	mu      sync.Mutex // protects runs, pending, peak, dropped and every liveRun's fields but the first three
	runs    []*liveRun // the runs that have written, until they have ended and their output is taken; by first write
	pending int        // bytes pending in all runs
	peak    int        // the most bytes ever pending at once, for tests
	dropped int64      // bytes dropped past outputMaxPending, all runs
}

func newShipper() *shipper {
	return &shipper{wake: make(chan struct{}, 1)}
}

// liveRun is the live output of one delivery: the runner.Live of its run.
type liveRun struct {
	s       *shipper
	taskID  string
	attempt int32

	streams [2]liveStream // stdout, stderr
	pending int           // bytes pending in streams
	dropped int64         // bytes dropped past outputMaxPending
	listed  bool          // in s.runs: it has written
	done    bool          // the run is over; forgotten once its output is taken
}

// liveStream is the pending output of one stream of a run.
type liveStream struct {
	written int64             // bytes the run wrote to the stream: the offset of the next
	chunks  []*pb.OutputChunk // pending, in order; a drop starts a new chunk
}

var _ runner.Live = (*liveRun)(nil)

// start begins to collect the output of a delivery. The run joins s.runs
// at its first write: most tasks write nothing, and cost the shipper nothing.
func (s *shipper) start(taskID string, attempt int32) *liveRun {
	return &liveRun{s: s, taskID: taskID, attempt: attempt}
}

// end marks r's run over: what it wrote is sent at once, and then r is
// forgotten. It returns the bytes dropped from r's live output.
func (s *shipper) end(r *liveRun) int64 {
	s.mu.Lock()
	r.done = true
	if r.pending == 0 && r.listed {
		s.forgetLocked(r)
	}
	dropped, pending := r.dropped, r.pending
	s.mu.Unlock()
	if pending > 0 {
		s.signal()
	}
	return dropped
}

func (s *shipper) forgetLocked(r *liveRun) {
	for i, x := range s.runs {
		if x == r {
			s.runs = append(s.runs[:i], s.runs[i+1:]...)
			return
		}
	}
}

func (s *shipper) signal() {
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Write keeps what fits of p, a copy, for shipOutput. It is called by the
// run's reader goroutines.
func (r *liveRun) Write(stream runner.Stream, p []byte) {
	if stream != runner.Stdout && stream != runner.Stderr {
		return
	}
	s := r.s
	s.mu.Lock()
	st := &r.streams[stream-runner.Stdout]
	keep := max(0, min(len(p), outputMaxPending-r.pending))
	before := s.pending
	if keep > 0 {
		if !r.listed {
			r.listed = true
			s.runs = append(s.runs, r)
		}
		if n := len(st.chunks); n > 0 && st.chunks[n-1].Offset+int64(len(st.chunks[n-1].Data)) == st.written {
			st.chunks[n-1].Data = append(st.chunks[n-1].Data, p[:keep]...)
		} else {
			st.chunks = append(st.chunks, &pb.OutputChunk{
				TaskId: r.taskID, Attempt: r.attempt, Stream: pbStream(stream),
				Offset: st.written, Data: append([]byte(nil), p[:keep]...),
			})
		}
		r.pending += keep
		s.pending += keep
		s.peak = max(s.peak, s.pending)
	}
	r.dropped += int64(len(p) - keep)
	s.dropped += int64(len(p) - keep)
	st.written += int64(len(p))
	wake := keep > 0 && (before == 0 || before < outputBatchBytes && s.pending >= outputBatchBytes)
	s.mu.Unlock()
	if wake {
		s.signal()
	}
}

func pbStream(s runner.Stream) pb.OutputStream {
	if s == runner.Stderr {
		return pb.OutputStream_OUTPUT_STREAM_STDERR
	}
	return pb.OutputStream_OUTPUT_STREAM_STDOUT
}

// due reports whether the pending output should go without waiting more:
// there is a batch's worth, or a run has ended (runs in s.runs that have
// ended have output pending).
func (s *shipper) due() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending >= outputBatchBytes {
		return true
	}
	for _, r := range s.runs {
		if r.done {
			return true
		}
	}
	return false
}

func (s *shipper) pendingBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// chunkOverhead bounds what a chunk costs in a batch besides its data: its
// task ID, the tags and varints of its fields, and its own tag and length.
// Hundreds of runs writing a little each would otherwise make a batch of
// outputMaxBatch bytes of data far larger than that.
func chunkOverhead(c *pb.OutputChunk) int { return len(c.TaskId) + 32 }

// take removes up to limit bytes of pending output, each chunk's overhead
// counted, oldest run first, and forgets the ended runs it has taken all of.
func (s *shipper) take(limit int) []*pb.OutputChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*pb.OutputChunk
	size := 0
	kept := s.runs[:0]
	for _, r := range s.runs {
		for i := range r.streams {
			st := &r.streams[i]
			for len(st.chunks) > 0 {
				c := st.chunks[0]
				room := limit - size - chunkOverhead(c)
				if room <= 0 {
					break
				}
				n := len(c.Data)
				if n > room {
					// The rest is copied: the run may append to the
					// chunk it stays in while this part is being sent.
					n = room
					out = append(out, &pb.OutputChunk{TaskId: c.TaskId, Attempt: c.Attempt, Stream: c.Stream, Offset: c.Offset, Data: c.Data[:n]})
					c.Data = append([]byte(nil), c.Data[n:]...)
					c.Offset += int64(n)
				} else {
					out = append(out, c)
					st.chunks[0] = nil
					st.chunks = st.chunks[1:]
				}
				size += n + chunkOverhead(c)
				r.pending -= n
				s.pending -= n
			}
			if len(st.chunks) == 0 {
				st.chunks = nil
			}
		}
		if !r.done || r.pending > 0 {
			kept = append(kept, r)
		}
	}
	clear(s.runs[len(kept):])
	s.runs = kept
	return out
}

// shipOutput sends the pending output to the master until ctx is done: a
// batch about every outputEvery, or sooner at outputBatchBytes or when a run
// ends, on one StreamOutput stream per registration, opened when there is
// something to send.
func (a *Agent) shipOutput(ctx context.Context, client pb.NodeServiceClient) {
	s := a.out
	snd := &outputSender{a: a, client: client}
	defer snd.drop()
	for {
		if s.pendingBytes() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		if !s.gather(ctx) {
			return
		}
		chunks := s.take(outputMaxBatch)
		if len(chunks) == 0 {
			continue
		}
		if !a.registered.Load() {
			continue // nobody to send it to; it is a view, and the moment has passed
		}
		snd.send(ctx, &pb.OutputBatch{WorkerId: a.cfg.WorkerID, InstanceId: a.instanceID, Chunks: chunks}, a.registrations.Load())
	}
}

// gather waits until the pending output is due: outputEvery from now, or
// sooner. It returns false once ctx is done.
func (s *shipper) gather(ctx context.Context) bool {
	t := time.NewTimer(outputEvery)
	defer t.Stop()
	for !s.due() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-s.wake:
		}
	}
	return true
}

// outputSender owns shipOutput's stream; only shipOutput uses it.
type outputSender struct {
	a      *Agent
	client pb.NodeServiceClient
	stream pb.NodeService_StreamOutputClient // nil: none open
	cancel context.CancelFunc                // ends stream
	gen    int64                             // the registration stream was opened in
	// off is the registration in which the master answered Unimplemented
	// (0: none): nothing is sent until the next one.
	off       int64
	loggedOff bool // the Unimplemented answer was logged
	failing   bool // the last send failed: the next failure is logged at debug
}

// send sends batch on the stream of registration gen, opening it if need
// be. After an error the batch is lost and the stream dropped; the next
// batch opens another.
func (o *outputSender) send(ctx context.Context, batch *pb.OutputBatch, gen int64) {
	if gen == o.off {
		return
	}
	if o.stream != nil && o.gen != gen {
		o.drop() // a stream per registration: the master ties it to the session
	}
	if o.stream == nil {
		sctx, cancel := context.WithCancel(ctx)
		st, err := o.client.StreamOutput(sctx)
		if err != nil {
			cancel()
			o.failed(ctx, err, gen)
			return
		}
		o.stream, o.cancel, o.gen = st, cancel, gen
	}
	// Send blocks while the master's flow-control window is full; the runs
	// meanwhile only pile up to their bound and drop.
	stop := time.AfterFunc(outputSendTimeout, o.cancel)
	err := o.stream.Send(batch)
	if errors.Is(err, io.EOF) {
		// The master ended the stream; its status says why.
		_, err = o.stream.CloseAndRecv()
		if err == nil {
			err = io.EOF
		}
	}
	stop.Stop()
	if err != nil {
		o.drop()
		o.failed(ctx, err, gen)
		return
	}
	o.failing = false
}

// failed notes a failed open or send in registration gen.
func (o *outputSender) failed(ctx context.Context, err error, gen int64) {
	log := o.a.log
	switch {
	case ctx.Err() != nil:
	case status.Code(err) == codes.Unimplemented:
		o.off = gen
		if !o.loggedOff {
			o.loggedOff = true
			log.Info("master does not take live output (it predates StreamOutput); not sending it until the next registration")
		}
	case errors.Is(err, io.EOF):
		log.Debug("master ended the live output stream; the next batch opens another")
	case o.failing:
		log.Debug("sending live output failed again; dropped", "err", err)
	default:
		o.failing = true
		log.Warn("sending live output failed; dropped, retried with the next batch", "err", err)
	}
}

// drop ends the open stream, if any.
func (o *outputSender) drop() {
	if o.stream == nil {
		return
	}
	o.cancel()
	o.stream, o.cancel = nil, nil
}
