package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// The whole master, wired as main wires it: a task posted over REST reaches
// a worker registered over gRPC, and SIGTERM (ctx canceled) ends worker
// streams, stops both servers and makes serve return nil.
func TestServeAndGracefulShutdown(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"MASTER_DB_PATH": filepath.Join(t.TempDir(), "rh.db")})
	if err != nil {
		t.Fatal(err)
	}
	grpcLis, _ := net.Listen("tcp", "127.0.0.1:0")
	httpLis, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), grpcLis, httpLis) }()

	if err := healthcheck(httpLis.Addr().String()); err != nil {
		t.Fatalf("healthcheck of a serving master: %v", err)
	}
	// Ready once gRPC serves and the database answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + httpLis.Addr().String() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cc, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	stream, err := pb.NewNodeServiceClient(cc).AssignTask(sctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	resp, err := http.Post("http://"+httpLis.Addr().String()+"/tasks", "application/json", strings.NewReader(`{"cmd":"echo hi"}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /tasks: %v %v", resp, err)
	}
	resp.Body.Close()
	if m, err := stream.Recv(); err != nil || m.GetTask().GetCmd() != "echo hi" {
		t.Fatalf("assignment: %v %v", m, err)
	}

	// An open event stream must not hold the shutdown up.
	evResp, err := http.Get("http://" + httpLis.Addr().String() + "/events")
	if err != nil || evResp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %v %v", evResp, err)
	}
	defer evResp.Body.Close()
	streamEnded := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, evResp.Body); streamEnded <- err }()

	cancel() // what SIGTERM does in main
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("worker stream after shutdown: %v, want Unavailable", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve returned %v, want nil", err)
		}
	case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
		t.Fatal("serve did not return after shutdown")
	}
	if err := healthcheck(httpLis.Addr().String()); err == nil {
		t.Error("healthcheck passed after shutdown")
	}
	select {
	case err := <-streamEnded:
		if err != nil {
			t.Errorf("event stream ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the event stream stayed open after the master stopped")
	}
}
