package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// stalledOutput is a log output nobody reads, as a paused terminal or a
// log driver behind on its disk: its writes wait until it is released.
type stalledOutput struct {
	released chan struct{}
	syncBuffer
}

func (s *stalledOutput) Write(p []byte) (int, error) {
	<-s.released
	return s.syncBuffer.Write(p)
}

// A master whose log output has stopped being read goes on: it starts,
// answers submissions, hands tasks to a worker and records their results,
// though the dispatcher logs each of those steps under its lock. The lines
// come out once the output moves again.
func TestStalledLogOutputStopsNothing(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"MASTER_DB_PATH": filepath.Join(t.TempDir(), "rh.db"), "LOG_LEVEL": "debug"})
	if err != nil {
		t.Fatal(err)
	}
	out := &stalledOutput{released: make(chan struct{})}
	release := sync.OnceFunc(func() { close(out.released) })
	defer release()
	log, logOut := newLogger(out, cfg.LogLevel, cfg.LogFormat)
	grpcLis, _ := net.Listen("tcp", "127.0.0.1:0")
	httpLis, _ := net.Listen("tcp", "127.0.0.1:0")
	base := "http://" + httpLis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, log, grpcLis, httpLis) }()

	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200 with the log output stalled: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cc, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	node := pb.NewNodeServiceClient(cc)
	stream, err := node.AssignTask(sctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 100})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}

	const n = 20
	ids := map[string]bool{}
	for i := range n {
		resp, err := client.Post(base+"/tasks", "application/json", strings.NewReader(fmt.Sprintf(`{"cmd":"echo %d"}`, i)))
		if err != nil {
			t.Fatalf("POST /tasks with the log output stalled: %v", err)
		}
		var body struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || err != nil {
			t.Fatalf("POST /tasks: %d %v", resp.StatusCode, err)
		}
		ids[body.ID] = true
	}
	for range n {
		m, err := stream.Recv()
		if err != nil || !ids[m.GetTask().GetId()] {
			t.Fatalf("assignment with the log output stalled: %v %v", m, err)
		}
		now := timestamppb.Now()
		if _, err := node.ReportStatus(sctx, &pb.TaskResult{TaskId: m.GetTask().GetId(), WorkerId: "w1", InstanceId: "i1",
			Attempt: m.GetTask().GetAttempt(), StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatalf("report with the log output stalled: %v", err)
		}
	}
	for id := range ids {
		resp, err := client.Get(base + "/tasks/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Status string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.Status != "succeeded" {
			t.Errorf("task %s: %q %v; want succeeded", id, body.Status, err)
		}
	}

	release()
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	logOut.Close()
	if got := strings.Count(out.String(), `msg="task finished"`); got != n {
		t.Errorf("%d task finished lines once the output moved, want %d:\n%s", got, n, out.String())
	}
}
