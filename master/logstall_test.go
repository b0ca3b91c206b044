package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/roundhouse-lab/roundhouse/proto/logbuf"
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
	out := &stalledOutput{released: make(chan struct{})}
	release := sync.OnceFunc(func() { close(out.released) })
	defer release()
	log, logOut := logbuf.NewLogger(out, "debug", "text")
	m := startMasterLogging(t, nil, log)

	cc, err := grpc.NewClient(m.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node := pb.NewNodeServiceClient(cc)
	stream, err := node.AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: 100})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", msg, err)
	}

	const n = 20
	ids := map[string]bool{}
	for i := range n {
		code, _, body := m.request(t, http.MethodPost, "/tasks", "", strings.NewReader(fmt.Sprintf(`{"cmd":"echo %d"}`, i)), nil)
		var created struct{ ID string }
		if err := json.Unmarshal([]byte(body), &created); code != http.StatusAccepted || err != nil {
			t.Fatalf("POST /tasks with the log output stalled: %d %s", code, body)
		}
		ids[created.ID] = true
	}
	for range n {
		msg, err := stream.Recv()
		if err != nil || !ids[msg.GetTask().GetId()] {
			t.Fatalf("assignment with the log output stalled: %v %v", msg, err)
		}
		now := timestamppb.Now()
		if _, err := node.ReportStatus(ctx, &pb.TaskResult{TaskId: msg.GetTask().GetId(), WorkerId: "w1", InstanceId: "i1",
			Attempt: msg.GetTask().GetAttempt(), StartedAt: now, FinishedAt: now}); err != nil {
			t.Fatalf("report with the log output stalled: %v", err)
		}
	}
	for id := range ids {
		_, _, body := m.request(t, http.MethodGet, "/tasks/"+id, "", nil, nil)
		var got struct{ Status string }
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Status != "succeeded" {
			t.Errorf("task %s: %s; want succeeded", id, body)
		}
	}

	// The lines logged so far come out once the output moves; the master
	// goes on until the test's cleanup, its later lines dropped.
	release()
	logOut.Close()
	if got := strings.Count(out.String(), `msg="task finished"`); got != n {
		t.Errorf("%d task finished lines once the output moved, want %d:\n%s", got, n, out.String())
	}
}
