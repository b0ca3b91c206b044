package agent

import (
	"context"
	"errors"
	"time"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// defaultHeartbeatInterval applies when the Welcome names no interval.
const defaultHeartbeatInterval = 2 * time.Second

// heartbeatGrace is how many intervals of failed heartbeats end a session:
// by then the master has most likely dropped us and re-queued our tasks.
const heartbeatGrace = 3

var (
	errSessionUnknown = errors.New("the master does not know this session")
	errHeartbeatsFail = errors.New("heartbeats failed for longer than 3 intervals")
)

// heartbeat renews the session's lease every interval until ctx, the
// session's stream context, is done. It ends the session with end when the
// master no longer knows it, or has not acknowledged a heartbeat for longer
// than heartbeatGrace intervals, so that the agent registers again.
func (a *Agent) heartbeat(ctx context.Context, client pb.NodeServiceClient, interval time.Duration, end context.CancelCauseFunc) {
	req := &pb.HeartbeatRequest{WorkerId: a.cfg.WorkerID, InstanceId: a.instanceID}
	lastOK := time.Now() // the Welcome counts as an acknowledgement
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// What we hold now: the master frees the slots of deliveries we
		// listed when we registered and no longer hold.
		req.Running, req.RunningListed = a.holding(), true
		callCtx, cancel := context.WithTimeout(ctx, interval)
		ack, err := client.Heartbeat(callCtx, req)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failing := time.Since(lastOK)
			a.log.Warn("heartbeat failed", "err", err, "failing_for", failing.Round(time.Millisecond))
			if failing > heartbeatGrace*interval {
				end(errHeartbeatsFail)
				return
			}
		case !ack.GetKnown():
			a.log.Warn("master does not know this session; registering again")
			end(errSessionUnknown)
			return
		default:
			lastOK = time.Now()
			a.log.Debug("heartbeat acknowledged")
		}
	}
}
