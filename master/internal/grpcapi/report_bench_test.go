package grpcapi

import (
	"context"
	"sync"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// reportBatch is the results per benchmark op: a worker's full flight.
const reportBatch = 64

// BenchmarkReport measures reportBatch results reported to a real master
// (loopback gRPC, SQLite in a temp dir): one ReportStatus after another,
// as a worker without the stream does, and all on one Report stream, as
// the worker does now. Submitting and assigning the tasks is outside the
// timer.
func BenchmarkReport(b *testing.B) {
	for _, mode := range []string{"path=unary", "path=stream"} {
		b.Run(mode, func(b *testing.B) {
			s := startWith(b, setup{})
			c := pb.NewNodeServiceClient(dial(b, s.addr))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			assigned, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: "w1", InstanceId: "i1", Slots: reportBatch})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := assigned.Recv(); err != nil {
				b.Fatal(err)
			}
			var rs pb.NodeService_ReportClient
			if mode == "path=stream" {
				if rs, err = c.Report(ctx); err != nil {
					b.Fatal(err)
				}
			}
			results := make([]*pb.TaskResult, reportBatch)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				deliver(b, s.d, assigned, results)
				b.StartTimer()
				if mode == "path=unary" {
					for _, r := range results {
						if _, err := c.ReportStatus(ctx, r); err != nil {
							b.Fatal(err)
						}
					}
					continue
				}
				for _, r := range results {
					if err := rs.Send(r); err != nil {
						b.Fatal(err)
					}
				}
				for n := 0; n < reportBatch; {
					m, err := rs.Recv()
					if err != nil {
						b.Fatal(err)
					}
					for _, a := range m.GetAcks() {
						if a.GetCode() != 0 {
							b.Fatalf("ack %v", a)
						}
					}
					n += len(m.GetAcks())
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reportBatch), "ns/result")
		})
	}
}

// deliver submits len(results) tasks at once (their writes share commits),
// receives them on assigned, and fills results with their reports.
func deliver(b *testing.B, d *dispatch.Dispatcher, assigned pb.NodeService_AssignTaskClient, results []*pb.TaskResult) {
	var wg sync.WaitGroup
	for range results {
		wg.Go(func() {
			if _, _, err := d.Submit(context.Background(), dispatch.Submission{Cmd: "true"}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range results {
		m, err := assigned.Recv()
		if err != nil || m.GetTask() == nil {
			b.Fatalf("assignment %v, %v", m, err)
		}
		results[i] = &pb.TaskResult{TaskId: m.GetTask().GetId(), WorkerId: "w1", InstanceId: "i1", Attempt: m.GetTask().GetAttempt(), Stdout: []byte("ok\n")}
	}
}
