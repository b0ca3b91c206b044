package agent

import (
	"context"
	"fmt"
	"time"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// drainCallTimeout bounds the Drain call: telling the master is a courtesy,
// and a master that does not answer must not eat the worker's drain time.
const drainCallTimeout = 3 * time.Second

// Drain winds the agent down for a stop: it takes no new tasks, tells the
// master so, and waits until every task running here has finished and the
// master has acknowledged its result, or until ctx is done. Then it closes
// the stream to the master and returns; it returns ctx's error if tasks were
// left. Drain kills nothing: canceling Run's context, after Drain, kills the
// tasks left, which are not reported. Call Drain once, while Run runs.
func (a *Agent) Drain(ctx context.Context) error {
	a.mu.Lock()
	a.startDrain()
	client := a.client
	before := len(a.running)
	a.noteDrained()
	a.mu.Unlock()
	a.log.Info("draining", "tasks", before)

	if client != nil && ctx.Err() == nil {
		callCtx, cancel := context.WithTimeout(ctx, drainCallTimeout)
		_, err := client.Drain(callCtx, &pb.DrainRequest{WorkerId: a.cfg.WorkerID, InstanceId: a.instanceID})
		cancel()
		if err != nil {
			a.log.Warn("could not tell the master about the drain; draining anyway", "err", err)
		}
	}

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

// noteDrained closes drained if a drain has begun and nothing is left to
// wait for. The caller holds mu.
func (a *Agent) noteDrained() {
	if a.draining.Err() == nil || len(a.running) > 0 {
		return
	}
	select {
	case <-a.drained:
	default:
		close(a.drained)
	}
}
