package agent

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// syncBuffer is a log destination safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const token = "worker-token-0123456789abcdef"

// requireToken is the master's check, reduced to what the agent can see.
func requireToken(seen chan<- string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		got := strings.Join(md.Get("authorization"), ",")
		select {
		case seen <- got:
		default:
		}
		if got != "Bearer "+token {
			return status.Error(codes.Unauthenticated, "invalid worker token")
		}
		return next(srv, ss)
	}
}

func TestTokenIsSent(t *testing.T) {
	f := newFakeMaster()
	seen := make(chan string, 100)
	_, addr := serve(t, f, "127.0.0.1:0", grpc.StreamInterceptor(requireToken(seen)))
	a, _ := startAgentWith(t, Config{MasterAddr: addr, Token: token}, t.Output())
	if got := recv(t, seen, "a registration"); got != "Bearer "+token {
		t.Fatalf("authorization %q, want the bearer token", got)
	}
	eventually(t, a.Registered, "not registered with the right token")
}

// A refused token is a configuration error: the agent says so, plainly,
// and retries at its slowest pace instead of spinning.
func TestRefusedTokenIsLoggedAndRetriedSlowly(t *testing.T) {
	f := newFakeMaster()
	seen := make(chan string, 100)
	_, addr := serve(t, f, "127.0.0.1:0", grpc.StreamInterceptor(requireToken(seen)))
	var logged syncBuffer
	a, stop := startAgentWith(t, Config{MasterAddr: addr, Token: "wrong-token-0123456789abcdef"}, &logged)
	recv(t, seen, "first attempt")
	recv(t, seen, "second attempt")
	if a.Registered() {
		t.Fatal("registered with a wrong token")
	}
	stop()
	l := logged.String()
	if !strings.Contains(l, "master refused the worker token: set WORKER_TOKEN to the master's MASTER_WORKER_TOKEN") ||
		!strings.Contains(l, "retry_in=200ms") {
		t.Errorf("log does not say what to fix and retry at ReconnectMax:\n%s", l)
	}
	if strings.Contains(l, "wrong-token-0123456789abcdef") {
		t.Error("the log holds the token")
	}
	if len(f.registrations) != 0 {
		t.Errorf("%d registrations reached the service past the refusal", len(f.registrations))
	}
}

func TestBearerRequiresTLSOnlyWithTLS(t *testing.T) {
	if (bearer{token: token}).RequireTransportSecurity() {
		t.Error("plaintext configuration: RequireTransportSecurity is true; no call could be made")
	}
	if !(bearer{token: token, secure: true}).RequireTransportSecurity() {
		t.Error("TLS configuration: RequireTransportSecurity is false; the token could leak in plaintext")
	}
	md, err := (bearer{token: token}).GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer "+token {
		t.Errorf("metadata %v %v", md, err)
	}
}

// A master that takes smaller messages than the worker's output limit
// (MASTER_GRPC_MAX_RECV_BYTES) still gets the exit status, without output.
func TestTooLargeResultIsReportedWithoutOutput(t *testing.T) {
	f := newFakeMaster()
	f.reportErr = func(r *pb.TaskResult, _ int32) error {
		if len(r.GetStdout()) > 0 {
			return status.Error(codes.ResourceExhausted, "grpc: received message larger than max")
		}
		return nil
	}
	_, addr := serve(t, f, "127.0.0.1:0")
	startAgent(t, addr)
	f.tasks <- task("t1", "echo lots; exit 3")
	r := recv(t, f.reports, "report")
	if r.GetExitCode() != 3 || len(r.GetStdout()) != 0 || !r.GetStdoutTruncated() || r.GetStderrTruncated() ||
		!strings.Contains(r.GetError(), "MASTER_GRPC_MAX_RECV_BYTES") {
		t.Fatalf("report = %v, want exit 3, no stdout, stdout_truncated and an error naming the limit", r)
	}
	if n := f.reportCalls.Load(); n != 2 {
		t.Errorf("%d report calls, want 2", n)
	}
}
