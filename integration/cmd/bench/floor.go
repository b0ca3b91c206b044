package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
	rhproto "github.com/roundhouse-lab/roundhouse/proto"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// The floor master: the least a master can do per task and still keep
// Roundhouse's promise with the real workers. It answers POST /tasks only
// once the task is committed (WAL, synchronous=FULL, group commit, as the
// master), hands each task to a connected worker round-robin over the
// real protocol (AssignTask, Report), and acknowledges a result only once
// it is committed too. That is two durable writes per task, into a table
// with no index but its rowid, and nothing else: no delivery written
// (the master's epoch scheme, measured and reverted, showed a delivery can
// go without its own write), no event, metric, log line, lease, retry,
// cancel, output, idempotency key or read API, no redelivery (the bench
// kills none of its workers). Whatever a master adds to this, it cannot
// run tasks faster than the floor on the same machine with the same
// workers: completed_vs_floor is the share of that ceiling Roundhouse
// reaches, and floor_completed_vs_forkexec says how close any durable
// master can get to the fork/exec baseline with these workers.

const (
	floorTable  = `CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, cmd TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, stdout BLOB, stderr BLOB, error TEXT)`
	floorInsert = `INSERT INTO tasks (cmd) VALUES (?)`
	floorResult = `UPDATE tasks SET done = 1, exit_code = ?, stdout = ?, stderr = ?, error = ? WHERE id = ?`
)

// floorMaster is the floor master's state.
type floorMaster struct {
	pb.UnimplementedNodeServiceServer
	w        *groupWriter
	ins, upd *sql.Stmt // floorInsert, floorResult
	grpcAddr string

	mu      sync.Mutex
	queue   []*pb.Task     // committed and not delivered, oldest first
	workers []*floorWorker // connected, by ID: the rotation
	next    int            // the rotation's position

	// The run's interval, as the master's completed_rate takes it from
	// its tasks (first created_at to last finished_at): first is when the
	// first submission since the last POST /mark arrived, last the latest
	// finished_at of a committed result, both Unix ns.
	first, last atomic.Int64
	completed   atomic.Int64 // results committed
	accepted    atomic.Int64 // tasks committed and answered 202
}

// floorWorker is one connected worker.
type floorWorker struct {
	id          string
	slots, free int           // free: slots without a task, under floorMaster.mu
	send        chan *pb.Task // cap: its slots, so a send for a free slot never blocks
}

// floorStats is GET /stats: what the driver reads to time a run.
type floorStats struct {
	Accepted  int64  `json:"accepted"`
	Completed int64  `json:"completed"`
	FirstNS   int64  `json:"first_ns"`
	LastNS    int64  `json:"last_ns"`
	Workers   int    `json:"workers"`
	GRPC      string `json:"grpc"`
}

// serveFloor runs the floor master: gRPC on a port of loopback, and the
// REST side (POST /tasks, GET /stats, POST /mark) as the handlers serve
// theirs. Its gRPC server is set up as the master's is for its workers.
func serveFloor() error {
	ctx := context.Background()
	conn, err := openDurable()
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, floorTable); err != nil {
		return err
	}
	ins, err := conn.PrepareContext(ctx, floorInsert)
	if err != nil {
		return err
	}
	upd, err := conn.PrepareContext(ctx, floorResult)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f := &floorMaster{w: newGroupWriter(conn), ins: ins, upd: upd, grpcAddr: l.Addr().String()}
	go f.w.run()
	gs := grpc.NewServer(
		// The workers ping every 10 s, with or without a stream.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// As the master's and the worker's: no PING per message.
		grpc.StaticStreamWindowSize(rhproto.StreamWindow),
		grpc.StaticConnWindowSize(rhproto.ConnWindow),
	)
	pb.RegisterNodeServiceServer(gs, f)
	go func() { _ = gs.Serve(l) }() // until the process is killed
	return serve(func(rw http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			f.submit(rw, r)
		case r.Method == http.MethodPost && r.URL.Path == "/mark":
			f.first.Store(0)
			rw.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodGet && r.URL.Path == "/stats":
			// completed before last: a result's done moves last before
			// it counts the result (and takes no lock), so every result
			// this count holds is in the last read after it. Read the
			// other way round, the count could hold the run's final result
			// while last did not yet, and the run would seem shorter.
			completed := f.completed.Load()
			f.mu.Lock()
			st := floorStats{FirstNS: f.first.Load(), LastNS: f.last.Load(), Accepted: f.accepted.Load(), Completed: completed, Workers: len(f.workers), GRPC: f.grpcAddr}
			f.mu.Unlock()
			rw.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(rw).Encode(st)
		default:
			http.NotFound(rw, r)
		}
	})
}

// submit is POST /tasks: the task committed, then answered and queued.
func (f *floorMaster) submit(rw http.ResponseWriter, r *http.Request) {
	f.first.CompareAndSwap(0, time.Now().UnixNano())
	var body struct {
		Cmd string `json:"cmd"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Cmd == "" {
		http.Error(rw, `{"error":"want {\"cmd\":\"...\"}"}`, http.StatusBadRequest)
		return
	}
	var id int64
	err := f.w.write(func(ctx context.Context) error {
		res, err := f.ins.ExecContext(ctx, body.Cmd)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		http.Error(rw, err.Error(), http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	f.queue = append(f.queue, &pb.Task{Id: strconv.FormatInt(id, 10), Cmd: body.Cmd, Timeout: durationpb.New(time.Hour), Attempt: 1})
	f.dispatchLocked()
	f.mu.Unlock()
	f.accepted.Add(1)
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(rw, "{\"id\":\"%d\"}\n", id)
}

// dispatchLocked hands queued tasks to workers with a free slot, round-robin
// by worker ID. It never blocks: a worker's channel has room for each of
// its free slots, unless a result came twice.
func (f *floorMaster) dispatchLocked() {
	for len(f.queue) > 0 {
		var w *floorWorker
		for i := range f.workers {
			c := f.workers[(f.next+i)%len(f.workers)]
			if c.free > 0 {
				w, f.next = c, (f.next+i+1)%len(f.workers)
				break
			}
		}
		if w == nil {
			return
		}
		select {
		case w.send <- f.queue[0]:
		default: // a result reported twice freed a slot that was not
			w.free = 0
			continue
		}
		w.free--
		f.queue[0] = nil
		f.queue = f.queue[1:]
	}
}

// AssignTask registers a worker and streams its tasks until it goes away.
func (f *floorMaster) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	slots := max(int(req.GetSlots()), 1)
	w := &floorWorker{id: req.GetWorkerId(), slots: slots, free: slots, send: make(chan *pb.Task, slots)}
	welcome := &pb.Welcome{HeartbeatInterval: durationpb.New(2 * time.Second)}
	if err := stream.Send(&pb.Assignment{Kind: &pb.Assignment_Welcome{Welcome: welcome}}); err != nil {
		return err
	}
	f.mu.Lock()
	f.workers = append(f.workers, w)
	slices.SortFunc(f.workers, func(a, b *floorWorker) int { return strings.Compare(a.id, b.id) })
	f.dispatchLocked()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.workers = slices.DeleteFunc(f.workers, func(x *floorWorker) bool { return x == w })
		f.next = 0
		f.mu.Unlock()
	}()
	for {
		select {
		case t := <-w.send:
			if err := stream.Send(&pb.Assignment{Kind: &pb.Assignment_Task{Task: t}}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// Heartbeat knows every worker: the floor keeps no lease.
func (f *floorMaster) Heartbeat(context.Context, *pb.HeartbeatRequest) (*pb.HeartbeatAck, error) {
	return &pb.HeartbeatAck{Known: true}, nil
}

// Report frees the slot of each result as it arrives, and acknowledges
// the result once it is committed. The floor assumes what the bench
// guarantees: no worker reconnects or sends a result twice (a second copy
// would free a slot twice and count twice), and none dies with tasks.
func (f *floorMaster) Report(stream pb.NodeService_ReportServer) error {
	// A worker has at most 64 results in flight on a stream, so the
	// writer's sends into acks never find it full.
	acks := make(chan *pb.ResultAck, 1024)
	quit, sent := make(chan struct{}), make(chan struct{})
	go func() { // the stream's ack sender, owned by this handler, which waits for it
		defer close(sent)
		for {
			select {
			case a := <-acks:
				batch := []*pb.ResultAck{a}
				for len(acks) > 0 {
					batch = append(batch, <-acks)
				}
				if stream.Send(&pb.ReportAcks{Acks: batch}) != nil {
					return
				}
			case <-quit:
				return // the acks of results still committing are lost: the worker sends them again
			}
		}
	}()
	defer func() { close(quit); <-sent }()
	for {
		res, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		for _, w := range f.workers {
			if w.id == res.GetWorkerId() {
				w.free = min(w.free+1, w.slots)
				break
			}
		}
		f.dispatchLocked()
		f.mu.Unlock()
		ack := &pb.ResultAck{TaskId: res.GetTaskId(), Attempt: res.GetAttempt()}
		id, err := strconv.ParseInt(res.GetTaskId(), 10, 64)
		if err != nil {
			ack.Code, ack.Message = int32(codes.NotFound), "no such task"
			acks <- ack
			continue
		}
		f.w.enqueue(pendingWrite{
			exec: func(ctx context.Context) error {
				_, err := f.upd.ExecContext(ctx, int64(res.GetExitCode()), res.GetStdout(), res.GetStderr(), res.GetError(), id)
				return err
			},
			done: func(err error) {
				if err != nil {
					ack.Code, ack.Message = int32(codes.Unavailable), err.Error()
				} else {
					at := res.GetFinishedAt().AsTime().UnixNano()
					for last := f.last.Load(); at > last && !f.last.CompareAndSwap(last, at); last = f.last.Load() {
					}
					f.completed.Add(1)
				}
				select {
				case acks <- ack:
				default: // never: see acks; the worker would send it again
				}
			},
		})
	}
}

// floorAddrEnv names the floor master's gRPC address for an os/exec worker.
const floorAddrEnv = "ROUNDHOUSE_BENCH_FLOOR_ADDR"

// serveFloorWorker is the os/exec worker: the least a worker does per
// task over the protocol, written the plain way. It registers with one
// slot, runs each task with os/exec as the fork/exec baseline does
// (`/bin/sh -c`, output captured), and sends its result on a Report
// stream; no log line, heartbeat, live output, timeout, cancel, retry or
// metric. With the floor master it makes a cluster of floors but for the
// exec path, os/exec's (floor_osexec_completed_rate), and shows what a
// worker written that way costs beside Roundhouse's
// (cpu_floor_osexec_workers_ms_per_task).
func serveFloorWorker() error {
	id := os.Getenv("WORKER_ID")
	conn, err := grpc.NewClient(os.Getenv(floorAddrEnv), grpc.WithTransportCredentials(insecure.NewCredentials()),
		// As the worker's: no PING per message.
		grpc.WithStaticStreamWindowSize(rhproto.StreamWindow), grpc.WithStaticConnWindowSize(rhproto.ConnWindow))
	if err != nil {
		return err
	}
	c := pb.NewNodeServiceClient(conn)
	ctx := context.Background()
	tasks, err := c.AssignTask(ctx, &pb.RegisterRequest{WorkerId: id, Slots: 1})
	if err != nil {
		return err
	}
	if a, err := tasks.Recv(); err != nil || a.GetWelcome() == nil {
		return fmt.Errorf("no welcome: %v", err)
	}
	results, err := c.Report(ctx)
	if err != nil {
		return err
	}
	go func() { // the acks' reader, for the process's life: the floor never sends a result again
		for {
			if _, err := results.Recv(); err != nil {
				fmt.Fprintln(os.Stderr, "os/exec worker: report stream:", err)
				os.Exit(1)
			}
		}
	}()
	for {
		a, err := tasks.Recv()
		if err != nil {
			return err
		}
		t := a.GetTask()
		if t == nil {
			continue
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("/bin/sh", "-c", t.GetCmd())
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		res := &pb.TaskResult{TaskId: t.GetId(), WorkerId: id, Attempt: t.GetAttempt(), ExitCode: -1}
		if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
			res.Error = err.Error()
		} else {
			res.ExitCode = int32(cmd.ProcessState.ExitCode())
		}
		res.Stdout, res.Stderr, res.FinishedAt = stdout.Bytes(), stderr.Bytes(), timestamppb.Now()
		if err := results.Send(res); err != nil {
			return err
		}
	}
}

// floorCluster is the floor master and its workers, as processes on
// loopback, for the e2e phase to run beside the master.
type floorCluster struct {
	dir     string // the database and the workers' log; removed by stop
	api     string
	master  *exec.Cmd
	workers []*exec.Cmd
	hc      *http.Client
}

// startFloor starts the floor master and n workers, one slot each, and
// waits until all n are connected: workers of workerBin, or os/exec
// workers (this binary re-executed) when workerBin is "".
func startFloor(ctx context.Context, workerBin string, n int) (_ *floorCluster, err error) {
	dir, err := os.MkdirTemp("", "roundhouse-bench-floor-")
	if err != nil {
		return nil, err
	}
	c := &floorCluster{dir: dir, hc: newHTTPClient(16)}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if c.api, c.master, err = startHandler("floor-master", durableDBEnv+"="+filepath.Join(dir, "floor.db")); err != nil {
		return nil, err
	}
	st, err := c.stats(ctx)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "workers.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the workers hold their own descriptors
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		w := localcluster.Worker{ID: fmt.Sprintf("w%d", i)}
		cmd := exec.Command(workerBin)
		cmd.Env = append(os.Environ(), localcluster.WorkerEnv(st.GRPC, w)...)
		if workerBin == "" {
			cmd = exec.Command(self)
			cmd.Env = append(os.Environ(), roleEnv+"=osexec-worker", floorAddrEnv+"="+st.GRPC, "WORKER_ID="+w.ID)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		// Killed with the bench, should it die without stopping them.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		c.workers = append(c.workers, cmd)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = client.Poll(wctx, 20*time.Millisecond, func() (bool, error) {
		st, err := c.stats(wctx)
		return err == nil && st.Workers == n, err
	})
	if err != nil {
		// stop removes the log: what it says goes in the error.
		out, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("floor master: waiting for %d workers: %w; their output:\n%s", n, err, out[max(0, len(out)-2000):])
	}
	return c, nil
}

func (c *floorCluster) stats(ctx context.Context) (floorStats, error) {
	var st floorStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// throughput submits n tasks of `true` at concurrency 16, as the master's
// throughput run does, waits until all n results are committed, and
// returns the tasks per second from the first submission's arrival to the
// last result's finished_at, as completed_rate takes them, and the CPU the
// floor master and its workers used meanwhile.
func (c *floorCluster) throughput(ctx context.Context, n int) (float64, cpuShare, error) {
	before, err := c.cpu()
	if err != nil {
		return 0, cpuShare{}, err
	}
	st, err := c.stats(ctx)
	if err != nil {
		return 0, cpuShare{}, err
	}
	want := st.Completed + int64(n)
	if err := c.mark(ctx); err != nil {
		return 0, cpuShare{}, err
	}
	ld := load{client: c.hc, url: c.api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 16, count: n}
	if _, err := ld.run(ctx); err != nil {
		return 0, cpuShare{}, err
	}
	st, err = c.waitStats(ctx, func(st floorStats) bool { return st.Completed >= want })
	if err != nil {
		return 0, cpuShare{}, fmt.Errorf("floor master: waiting for %d results: %w", n, err)
	}
	after, err := c.cpu()
	if err != nil {
		return 0, cpuShare{}, err
	}
	return float64(n) / time.Duration(st.LastNS-st.FirstNS).Seconds(), after.minus(before), nil
}

// acceptedBeside returns the floor master's accepted/s at concurrency 64
// while its workers run the tasks, measured as submit_rate_c64_workers is,
// and then waits until the workers have run every task it accepted, so
// that its next run starts with none queued.
// hc is a client with a connection for each of the 64 senders.
func (c *floorCluster) acceptedBeside(ctx context.Context, hc *http.Client, dur time.Duration) (float64, error) {
	rate, err := acceptedRate(ctx, load{client: hc, url: c.api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 64}, dur)
	if err != nil {
		return 0, err
	}
	if _, err := c.waitStats(ctx, func(st floorStats) bool { return st.Completed >= st.Accepted }); err != nil {
		return 0, fmt.Errorf("floor master: waiting for its workers to run the tasks it accepted: %w", err)
	}
	return rate, nil
}

// waitStats reads the floor master's /stats until done holds of them, for
// 10 minutes at most, and returns the ones it held of.
func (c *floorCluster) waitStats(ctx context.Context, done func(floorStats) bool) (floorStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var st floorStats
	err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		st, err = c.stats(ctx)
		return err == nil && done(st), err
	})
	return st, err
}

// mark starts a run: the floor master takes the next submission as its first.
func (c *floorCluster) mark(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.api+"/mark", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("floor master: POST /mark: %s", resp.Status)
	}
	return nil
}

func (c *floorCluster) cpu() (cpuShare, error) {
	m := &node{pid: c.master.Process.Pid}
	ws := map[string]*node{}
	for i, w := range c.workers {
		ws[strconv.Itoa(i)] = &node{pid: w.Process.Pid}
	}
	return clusterCPU(m, ws)
}

// stop ends the workers (SIGTERM, as a lab stops them) and the floor
// master, and removes the database.
func (c *floorCluster) stop() {
	for _, w := range c.workers {
		_ = w.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range c.workers {
		done := make(chan struct{})
		go func() { _ = w.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = w.Process.Kill()
			<-done
		}
	}
	if c.master != nil {
		_ = c.master.Process.Kill()
		_ = c.master.Wait()
	}
	os.RemoveAll(c.dir)
}
