package agent

import (
	"context"
	"fmt"
	"maps"
	"time"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// drainCallTimeout bounds the Drain call: telling the master is a courtesy,
// and a master that does not answer must not eat the worker's drain time.
const drainCallTimeout = 3 * time.Second

// Drain winds the agent down for a stop: it takes no new tasks, tells the
// master so, and waits until every task running here has finished and the
// master has acknowledged its result, or until ctx is done. The tasks it
// waits for include those the master's answer names that have not arrived
// yet: sent before the master took note of the drain, they run. Then it closes
// the stream to the master and returns; it returns ctx's error if tasks were
// left. Drain kills nothing: canceling Run's context, after Drain, kills the
// tasks left, which are not reported. Call Drain once, while Run runs.
func (a *Agent) Drain(ctx context.Context) error {
	a.mu.Lock()
	a.startDrain()
	client := a.client
	before := len(a.running)
	maps.Copy(a.seen, a.attempts)
	a.mu.Unlock()
	a.log.Info("draining", "tasks", before)

	a.tellDrain(ctx, client)

	var err error
	select {
	case <-a.drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.closeDown()
	<-a.offline // Run has ended the session, so the master sees the stream close
	left := len(a.runningIDs())
	a.log.Info("drained", "tasks_finished", before-left, "tasks_unfinished", left)
	if err != nil {
		return fmt.Errorf("drain cut short with %d tasks unfinished: %w", left, err)
	}
	return nil
}

// tellDrain tells the master of the drain and, while a stream is
// registered, has the drain wait for the deliveries the master's answer
// names that have not reached us: sent (or about to be) before the master
// took note of the drain, they run. Only on the stream that is open now:
// once that ends, nothing more comes on it. And only if that stream was
// open as the call went out: asked while a registration was on its way, the
// master may answer about the stream lost before, naming deliveries sent on
// it that will never come; the session tells the master again once
// welcomed, and that answer counts. Nor those the registration of
// that stream listed, which had arrived: the master still names one whose
// result it took while the worker registered, until the next heartbeat
// frees its slot. Then the drain counts as asked, answered or not.
func (a *Agent) tellDrain(ctx context.Context, client pb.NodeServiceClient) {
	on := a.stream()
	var held []*pb.RunningTask
	if client != nil && ctx.Err() == nil {
		callCtx, cancel := context.WithTimeout(ctx, drainCallTimeout)
		ack, err := client.Drain(callCtx, &pb.DrainRequest{WorkerId: a.cfg.WorkerID, InstanceId: a.instanceID})
		cancel()
		if err != nil {
			a.log.Warn("could not tell the master about the drain; draining anyway", "err", err)
		}
		held = ack.GetInFlight()
	}
	defer tellDrainHook()
	a.mu.Lock()
	defer a.mu.Unlock()
	if on != 0 && a.stream() == on {
		for _, h := range held {
			if id, n := h.GetTaskId(), h.GetAttempt(); a.seen[id] < n && a.listed[id] < n {
				a.awaited[id] = n
			}
		}
	}
	if len(a.awaited) > 0 {
		a.log.Info("waiting for tasks the master sent before it heard of the drain", "tasks", len(a.awaited))
	}
	a.asked = true
	a.noteDrained()
}

// tellDrainHook runs at the end of each tellDrain, once the master's answer
// has been taken into account; tests set it to order a late answer against
// a registration.
var tellDrainHook = func() {}

// noteDrained closes drained if a drain has begun, the master has answered
// it, no registration is on its way, and nothing is left to wait for. The
// caller holds mu.
func (a *Agent) noteDrained() {
	if a.draining.Err() == nil || !a.asked || a.registering || len(a.running) > 0 || len(a.awaited) > 0 {
		return
	}
	select {
	case <-a.drained:
	default:
		close(a.drained)
	}
}
