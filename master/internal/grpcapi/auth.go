package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/bearer"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// nodeServicePrefix starts the full method name of every NodeService call.
var nodeServicePrefix = "/" + pb.NodeService_ServiceDesc.ServiceName + "/"

// workerAuth checks the worker token on NodeService calls. The token is
// kept only as its hash and compared in constant time (bearer.Token), so
// neither timing nor length tells anything about it.
type workerAuth struct {
	token bearer.Token
	log   *slog.Logger
}

func newWorkerAuth(token string, log *slog.Logger) *workerAuth {
	return &workerAuth{token: bearer.New(token), log: log}
}

func (a *workerAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return next(ctx, req)
}

func (a *workerAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return next(srv, ss)
}

func (a *workerAuth) check(ctx context.Context, method string) error {
	if !a.token.Enabled() || !strings.HasPrefix(method, nodeServicePrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	var why string
	switch {
	case len(vals) == 0:
		why = "missing worker token: set WORKER_TOKEN to the master's MASTER_WORKER_TOKEN"
	case len(vals) > 1:
		why = "more than one authorization header"
	default:
		// One value, but perhaps empty: that is malformed here (ErrMissing),
		// since the metadata key was sent.
		switch err := a.token.Check(vals[0]); {
		case errors.Is(err, bearer.ErrMissing), errors.Is(err, bearer.ErrMalformed):
			why = `the authorization metadata must be "Bearer <token>"`
		case err != nil:
			why = "invalid worker token: WORKER_TOKEN does not match the master's MASTER_WORKER_TOKEN"
		}
	}
	if why == "" {
		return nil
	}
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	a.log.Warn("worker call refused", "method", method, "peer", from, "why", why)
	return status.Error(codes.Unauthenticated, why)
}

// recoverUnary and recoverStream turn a panic in a handler into an Internal
// error, logged once with its stack: the master keeps serving, and the
// client learns nothing about its insides.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (_ any, err error) {
		defer recoverTo(log, info.FullMethod, &err)
		return next(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) (err error) {
		defer recoverTo(log, info.FullMethod, &err)
		return next(srv, ss)
	}
}

func recoverTo(log *slog.Logger, method string, err *error) {
	if v := recover(); v != nil {
		log.Error("handler panicked", "method", method, "panic", v, "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}
