package grpcapi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

const workerToken = "worker-token-0123456789abcdef"

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
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

func TestWorkerTokenGuardsNodeServiceOnly(t *testing.T) {
	var logged syncBuffer
	d, addr := startServer(t, Params{WorkerToken: workerToken, Log: slog.New(slog.NewTextHandler(&logged, nil))})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := pb.NewNodeServiceClient(cc)
	reg := &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 1}

	tests := []struct {
		name    string
		auth    []string // authorization metadata values
		want    codes.Code
		wantMsg string
	}{
		{"no token", nil, codes.Unauthenticated, "missing worker token"},
		{"wrong token", []string{"Bearer wrong-token-0123456789abc"}, codes.Unauthenticated, "invalid worker token"},
		{"token prefix", []string{"Bearer " + workerToken[:8]}, codes.Unauthenticated, "invalid worker token"},
		{"basic scheme", []string{"Basic " + workerToken}, codes.Unauthenticated, `must be "Bearer <token>"`},
		{"two headers", []string{"Bearer " + workerToken, "Bearer x"}, codes.Unauthenticated, "more than one"},
		{"right token", []string{"Bearer " + workerToken}, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			for _, v := range tt.auth {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
			}
			// Unary: Heartbeat. Stream: AssignTask, whose error comes with
			// the first Recv.
			_, herr := c.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: "w1", InstanceId: "i1"})
			stream, err := c.AssignTask(ctx, reg)
			if err == nil {
				var m *pb.Assignment
				m, err = stream.Recv()
				if err == nil && m.GetWelcome() == nil {
					t.Fatalf("first message %v, want a welcome", m)
				}
			}
			// StreamOutput, a client stream: its error comes with the ack.
			var oerr error
			if out, err := c.StreamOutput(ctx); err != nil {
				oerr = err
			} else {
				_, oerr = out.CloseAndRecv()
			}
			for what, err := range map[string]error{"Heartbeat": herr, "AssignTask": err, "StreamOutput": oerr} {
				if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
					t.Errorf("%s: %v, want %s with %q", what, err, tt.want, tt.wantMsg)
				}
			}
			if tt.want != codes.OK {
				if n := len(d.Workers()); n != 0 {
					t.Errorf("%d workers in the rotation after a refused call, want 0", n)
				}
				if !strings.Contains(logged.String(), "worker call refused") {
					t.Errorf("refusal not logged: %s", logged.String())
				}
			} else if n := len(d.Workers()); n != 1 {
				t.Errorf("%d workers in the rotation with the right token, want 1", n)
			}
			if strings.Contains(logged.String(), workerToken) {
				t.Error("the log holds the worker token")
			}
		})
	}

	// Probes and grpcurl need no token.
	hc, err := healthpb.NewHealthClient(cc).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check without a token: %v %v", hc, err)
	}
}

func TestRecoveryInterceptors(t *testing.T) {
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	info := &grpc.UnaryServerInfo{FullMethod: "/roundhouse.v1.NodeService/ReportStatus"}
	_, err := recoverUnary(log)(context.Background(), nil, info, func(context.Context, any) (any, error) {
		panic("boom in /src/secret.go")
	})
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Errorf("unary: %v, want Internal \"internal error\"", err)
	}
	err = recoverStream(log)(nil, nil, &grpc.StreamServerInfo{FullMethod: "/roundhouse.v1.NodeService/AssignTask"}, func(any, grpc.ServerStream) error {
		panic("boom again")
	})
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Errorf("stream: %v, want Internal \"internal error\"", err)
	}
	if l := logged.String(); !strings.Contains(l, "boom in /src/secret.go") || !strings.Contains(l, "boom again") || !strings.Contains(l, "goroutine") {
		t.Errorf("panics not logged with their stacks: %s", l)
	}
	// Calls that do not panic pass through untouched.
	got, err := recoverUnary(log)(context.Background(), nil, info, func(context.Context, any) (any, error) { return "ok", nil })
	if got != "ok" || err != nil {
		t.Errorf("plain call: %v %v", got, err)
	}
}

// A call whose caller went away ends Canceled (or DeadlineExceeded), not
// Internal, and logs no error: nothing failed on the master's side.
func TestCallerGoneIsNoInternalError(t *testing.T) {
	var logged syncBuffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logged, nil))}
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("store: get t1: %w", context.Canceled), codes.Canceled},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	} {
		if got := status.Code(s.toStatus(tc.err, "task_id", "t1")); got != tc.want {
			t.Errorf("toStatus(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	if l := logged.String(); l != "" {
		t.Errorf("logged for a caller that went away: %s", l)
	}
}
