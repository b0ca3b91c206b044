package agent

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// masterConn is the connection to the master that every call of the agent
// goes through. Before each try to register, Run has it replace a channel
// that failed to connect by a new one (ready), so that the try dials the
// master and, if it fails, fails with that dial's own error: a TLS handshake
// or a plaintext worker's "server preface" is reported as such, at once.
//
// A failed channel would not dial: pick_first holds it in TRANSIENT_FAILURE
// until a connection is READY, re-dials only at the end of gRPC's own
// backoff, and meanwhile fails calls at once with the last dial's error. A
// try soon after the master came back failed without dialling, and the wait
// was the agent's backoff plus what was left of gRPC's: up to 2.2 times
// ReconnectMax, long enough for a restarted master to re-queue the tasks the
// worker still runs. ClientConn.ResetConnectBackoff starts the channel's next
// dial at once, but nothing says when that dial is over (a failure leaves the
// channel in TRANSIENT_FAILURE, so WaitForStateChange hears only of a
// success): a call made right after it still fails on the previous dial's
// error. A gRPC backoff short enough never to delay a try would dial many
// times per wait of the agent's. A new channel is IDLE: its first call dials
// and waits for the outcome, as the agent's first try ever does.
type masterConn struct {
	cfg Config
	mu  sync.Mutex       // protects cc
	cc  *grpc.ClientConn // the channel calls go to
}

var _ grpc.ClientConnInterface = (*masterConn)(nil)

// newMasterConn returns a connection that dials at the first call.
func newMasterConn(cfg Config) (*masterConn, error) {
	cc, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	return &masterConn{cfg: cfg, cc: cc}, nil
}

func (m *masterConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return m.current().Invoke(ctx, method, args, reply, opts...)
}

func (m *masterConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return m.current().NewStream(ctx, desc, method, opts...)
}

func (m *masterConn) current() *grpc.ClientConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cc
}

// ready makes sure the next call dials the master or finds a connection: it
// replaces a channel in TRANSIENT_FAILURE by a new one. A READY channel
// serves the call; an IDLE or CONNECTING one has the call wait for its dial.
// The failed channel holds no connection, so closing it ends no call in
// progress; a call that was about to start on it fails as it would have,
// and its caller retries.
func (m *masterConn) ready() error {
	m.mu.Lock()
	old := m.cc
	if old.GetState() != connectivity.TransientFailure {
		m.mu.Unlock()
		return nil
	}
	cc, err := dial(m.cfg)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.cc = cc
	m.mu.Unlock()
	old.Close() // fails only on a channel closed already; only ready closes this one
	return nil
}

// Close closes the channel in use.
func (m *masterConn) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cc.Close()
}
