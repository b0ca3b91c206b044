package grpcapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// FuzzReportStatus sends worker results, well-formed or not, through
// ReportStatus into a dispatcher on a real database. It must not panic; a
// malformed result gets InvalidArgument and changes nothing; a result for a
// task nobody knows gets NotFound; any other result is recorded, with its
// output bounded and valid UTF-8.
//
//	go test -run '^$' -fuzz FuzzReportStatus -fuzztime 60s ./master/internal/grpcapi
func FuzzReportStatus(f *testing.F) {
	f.Add(true, "", "w1", "i1", int32(1), int32(0), []byte("hello\n"), []byte(""), "", int64(0), false, false)
	f.Add(true, "", "w1", "i1", int32(3), int32(-1), []byte("\xff\xfe"), []byte("x"), "killed", int64(1700000000), true, false)
	f.Add(false, "no-such-task", "w1", "i1", int32(1), int32(0), []byte(nil), []byte(nil), "", int64(0), false, true)
	f.Add(true, "", "", "i1", int32(1), int32(0), []byte(nil), []byte(nil), "", int64(0), false, false)
	f.Add(true, "", "w/1", "", int32(0), int32(2), []byte(nil), []byte(nil), "", int64(1<<62), false, false)

	const maxOutput = 64
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(f.TempDir(), "rh.db"), log)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	d := dispatch.New(dispatch.Params{
		Log: log, Store: st, Now: time.Now, NewID: uuid.NewString, MaxCmdBytes: 100,
		DefaultTimeout: time.Hour, MaxTimeout: time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second, MaxOutputBytes: maxOutput,
	})
	s := &Server{d: d, log: log}
	ctx := context.Background()
	n := 0
	// Every real task is delivered to w1 (instance i1) as attempt 1: only a
	// result for that delivery is valid, any other names a delivery never sent.
	sess, _, err := d.Register(ctx, dispatch.Registration{WorkerID: "w1", InstanceID: "i1", Slots: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, realTask bool, taskID, workerID, instanceID string, attempt, exitCode int32,
		stdout, stderr []byte, errText string, startSec int64, timedOut, canceled bool) {
		if realTask { // a live task, so that valid reports reach the store
			n++
			tk, _, err := d.Submit(ctx, dispatch.Submission{Cmd: fmt.Sprintf("echo %d", n)})
			if err != nil {
				t.Fatal(err)
			}
			taskID = tk.ID
			sess.Take()
		}
		r := &pb.TaskResult{
			TaskId: taskID, WorkerId: workerID, InstanceId: instanceID, Attempt: attempt, ExitCode: exitCode,
			Stdout: stdout, Stderr: stderr, Error: errText, TimedOut: timedOut, Canceled: canceled,
		}
		if startSec != 0 {
			r.StartedAt = &timestamppb.Timestamp{Seconds: startSec}
		}
		before, beforeErr := d.Get(ctx, taskID)

		_, err := s.ReportStatus(ctx, r)

		_, invalid := toResult(r)
		switch code := status.Code(err); {
		case invalid != nil:
			if code != codes.InvalidArgument {
				t.Fatalf("malformed result (%v) answered %v, want InvalidArgument", invalid, err)
			}
			if after, _ := d.Get(ctx, taskID); beforeErr == nil && after.Status != before.Status {
				t.Fatalf("a refused result moved the task from %s to %s", before.Status, after.Status)
			}
		case code == codes.NotFound:
			if realTask && workerID == "w1" && attempt == 1 && before.Status == task.StatusRunning {
				t.Fatalf("the result of the delivery sent answered %v", err)
			}
			if after, _ := d.Get(ctx, taskID); beforeErr == nil && after.Status != before.Status {
				t.Fatalf("a refused result moved the task from %s to %s", before.Status, after.Status)
			}
		case code != codes.OK:
			t.Fatalf("valid result answered %v", err)
		default:
			tk, err := d.Get(ctx, taskID)
			if err != nil {
				t.Fatal(err)
			}
			if canceled {
				// The master never cancels a task that goes on, so a kill
				// it did not order ends the delivery, not the task.
				if tk.Status.Final() || tk.History[0].Outcome != task.OutcomeLost {
					t.Fatalf("a kill the master did not order ended the task: %+v", tk)
				}
				return
			}
			if !tk.Status.Final() || tk.WorkerID != workerID || tk.ExitCode == nil || *tk.ExitCode != int(exitCode) {
				t.Fatalf("result not recorded: %+v", tk)
			}
			if len(tk.Stdout) > maxOutput || len(tk.Stderr) > maxOutput || !utf8.ValidString(tk.Stdout) || !utf8.ValidString(tk.Stderr) {
				t.Fatalf("stored output not bounded UTF-8: %q %q", tk.Stdout, tk.Stderr)
			}
			if (len(stdout) > maxOutput) && !tk.StdoutCut {
				t.Fatalf("stdout of %d bytes stored whole or unmarked", len(stdout))
			}
		}
	})
}
