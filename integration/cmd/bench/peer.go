package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// The old system (-peer) is the one Roundhouse replaces: a binary built
// from its own sources, run here only to be measured with the same load in
// the same run. Nothing of it is part of Roundhouse, and no test needs it.
// Its ports are fixed, so it runs only when nothing else listens there.
const (
	peerREST = "9092"
	peerGRPC = "50051"
	peerURL  = "http://127.0.0.1:" + peerREST + "/tasks"
	// peerQuiet is how long the old system's workers must print nothing
	// before its lost tasks are given up for lost: it keeps no record of
	// them, so silence is the only end it has.
	peerQuiet = 2 * time.Second
)

// checkPeer fails unless path is an executable file and both of the old
// system's ports are free.
func checkPeer(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("-peer: %w", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("-peer %s: not an executable file", path)
	}
	for _, port := range []string{peerREST, peerGRPC} {
		if err := portFree(port); err != nil {
			return fmt.Errorf("-peer: the old system's ports are fixed (REST :%s, gRPC :%s) and port %s is taken: %v; stop what listens there (make dev? a lab?) or run without it (make bench PEER=)",
				peerREST, peerGRPC, port, err)
		}
	}
	return nil
}

// portFree says whether the old system could listen on port: on every
// address, as it does, and with nothing answering on loopback.
func portFree(port string) error {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond); err == nil {
		c.Close()
		return errors.New("something answers on 127.0.0.1:" + port)
	}
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	return l.Close()
}

// execLog counts what one of the old system's workers ran, from its console:
// it prints "Worker <id> received command: <cmd>" before each task and
// "Worker <id>: Command output:" or "Worker <id>: Command failed: ..."
// after it, and keeps no other record. Lines are stamped when read.
type execLog struct {
	mu        sync.Mutex // protects the fields below
	connected bool
	received  int       // tasks started: the count of executed tasks
	finished  int       // tasks ended, in success or failure
	last      time.Time // when the latest received or finished line was read
}

// observe takes one line of the worker's output, read at at.
func (l *execLog) observe(line string, at time.Time) {
	rest, ok := strings.CutPrefix(line, "Worker ")
	if !ok {
		return // a command's own output, or a blank line after it
	}
	// The worker's ID ends at the first space; "Worker w1: Command ..."
	// leaves the colon on the ID.
	if _, rest, ok = strings.Cut(rest, " "); !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case strings.HasPrefix(rest, "received command: "):
		l.received++
		l.last = at
	case strings.HasPrefix(rest, "Command output:"), strings.HasPrefix(rest, "Command failed:"):
		l.finished++
		l.last = at
	case rest == "connected to master":
		l.connected = true
	}
}

// execTally is the sum of some workers' logs.
type execTally struct {
	connected          int // workers connected
	received, finished int
	last               time.Time
}

func tally(logs []*execLog) execTally {
	var t execTally
	for _, l := range logs {
		l.mu.Lock()
		if l.connected {
			t.connected++
		}
		t.received += l.received
		t.finished += l.finished
		if l.last.After(t.last) {
			t.last = l.last
		}
		l.mu.Unlock()
	}
	return t
}

// peerProc is one running process of the old system.
type peerProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited and been reaped
	log    *execLog      // workers only
	read   chan struct{} // workers: closed when their output is read to the end
}

// startProc starts cmd and reaps it when it exits.
func startProc(cmd *exec.Cmd) (*peerProc, error) {
	// Killed with the bench, whatever ends it: the ports are fixed, and a
	// leftover would block the next run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peerProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop kills it (it keeps nothing, so it has nothing to save) and waits
// until it is reaped and its output read.
func (p *peerProc) stop() {
	_ = p.cmd.Process.Kill()
	<-p.exited
	if p.read != nil {
		<-p.read
	}
}

// peerCluster is the old system's master and its workers.
type peerCluster struct {
	master  *peerProc
	workers []*peerProc
	logPath string // the master's console
}

func (c *peerCluster) stop() {
	for _, w := range c.workers {
		w.stop()
	}
	if c.master != nil {
		c.master.stop()
	}
}

func (c *peerCluster) logs() []*execLog {
	ls := make([]*execLog, len(c.workers))
	for i, w := range c.workers {
		ls[i] = w.log
	}
	return ls
}

func (c *peerCluster) tally() execTally { return tally(c.logs()) }

// startPeer starts the old system's master, as its README says, and n
// workers, and waits until the master listens and every worker has said
// it is connected.
func startPeer(ctx context.Context, bin, dir string, n int) (*peerCluster, error) {
	if err := checkPeer(bin); err != nil {
		return nil, err
	}
	c := &peerCluster{logPath: filepath.Join(dir, "peer-master.log")}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "-type=master")
	cmd.Env = append(os.Environ(), "GIN_MODE=release")
	cmd.Stdout, cmd.Stderr = logf, logf
	if c.master, err = startProc(cmd); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, c.master, peerREST, peerGRPC); err != nil {
		c.stop()
		return nil, fmt.Errorf("old system's master: %w (its console: %s)", err, c.logPath)
	}
	for i := 1; i <= n; i++ {
		w, err := startPeerWorker(bin, fmt.Sprintf("w%d", i))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.workers = append(c.workers, w)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = client.Poll(wctx, 10*time.Millisecond, func() (bool, error) { return c.tally().connected == n, nil })
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("old system: %d of %d workers connected: %w", c.tally().connected, n, err)
	}
	return c, nil
}

// waitListening waits until both ports accept connections.
func waitListening(ctx context.Context, p *peerProc, ports ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-p.exited:
			return false, fmt.Errorf("exited: %v", p.cmd.ProcessState)
		default:
		}
		for _, p := range ports {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, 200*time.Millisecond)
			if err != nil {
				return false, nil
			}
			c.Close()
		}
		return true, nil
	})
}

// startPeerWorker starts one worker and reads its console into an execLog.
func startPeerWorker(bin, id string) (*peerProc, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-type=worker", "-id="+id, "-master=127.0.0.1:"+peerGRPC)
	cmd.Stdout, cmd.Stderr = pw, pw
	p, err := startProc(cmd)
	pw.Close() // the child holds the write end; EOF comes when it exits
	if err != nil {
		pr.Close()
		return nil, err
	}
	p.log, p.read = &execLog{}, make(chan struct{})
	go func() {
		defer close(p.read)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.log.observe(sc.Text(), time.Now())
		}
	}()
	return p, nil
}

// peerPhase measures the old system with Roundhouse's load, run by run: on
// a master with no worker, accepted/s at concurrency 64 (it drops those
// tasks); then, unless the e2e phase made them (peerInE2E), on a fresh
// master with o.workers workers, the executed rate of o.tasks tasks of
// `true` submitted at concurrency 16, the CPU time per task, and accepted/s
// at concurrency 64 while its workers run them (peerWithWorkers).
func peerPhase(ctx context.Context, o options, _ launcher, col *collector) error {
	if o.peer == "" {
		o.logf("no -peer: the old system's column stays empty")
		return nil
	}
	dir, err := os.MkdirTemp("", "roundhouse-bench-peer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	body := []byte(`{"cmd":"true"}`)
	for r := 1; r <= o.runs; r++ {
		c, err := startPeer(ctx, o.peer, dir, 0)
		if err != nil {
			return err
		}
		hc := newHTTPClient(64)
		res, err := acceptedRate(ctx, load{client: hc, url: peerURL, body: body, want: 200, conc: 64}, o.dur)
		hc.CloseIdleConnections()
		c.stop()
		if err != nil {
			return fmt.Errorf("old system, no worker: %w", err)
		}
		col.put("peer_accepted_rate_c64_noworker", "req/s", res)
		o.logf("run %d/%d: old system, no worker, at concurrency 64: %.0f/s answered 200 (and dropped)", r, o.runs, res)

		if !peerInE2E(o) {
			if err := peerWithWorkers(ctx, o, r, dir, col); err != nil {
				return err
			}
		}
	}
	col.notes["peer_accepted_rate_c64_noworker"] = "the old system (-peer): POST /tasks answered 200 per second at concurrency 64 with no worker connected; it drops these tasks"
	col.notes["peer_completed_rate"] = fmt.Sprintf("the old system: %d tasks of {\"cmd\":\"true\"} (run without a shell), %d workers, submitted at concurrency 16: tasks its workers logged as received / (last worker log line - first submission)", o.tasks, o.workers)
	col.notes["peer_executed_fraction"] = "the old system: tasks its workers logged as received / tasks answered 200, in the completed-rate run"
	col.notes["peer_accepted_rate_c64_workers"] = "the old system: POST /tasks answered 200 per second at concurrency 64 while its workers run the tasks"
	col.notes["peer_cpu_master_ms_per_task"] = "the old system's master CPU time during the completed-rate run, per task"
	col.notes["peer_cpu_workers_ms_per_task"] = "the old system's worker processes' own CPU time during the completed-rate run, per task"
	return nil
}

// peerInE2E reports whether the e2e phase makes the old system's runs with
// workers, each right after its own run's throughput runs: it does when
// both phases are asked for and the old system is there. The ratios to the
// old system (completed_vs_peer, accepted_vs_peer_c64) pair run r with run
// r, and the peer phase comes minutes after the e2e phase's last run.
func peerInE2E(o options) bool {
	return o.peer != "" && slices.Contains(o.phases, "peer") && slices.Contains(o.phases, "e2e")
}

// peerWithWorkers is run r's measurements of the old system with workers.
func peerWithWorkers(ctx context.Context, o options, r int, dir string, col *collector) error {
	c, err := startPeer(ctx, o.peer, dir, o.workers)
	if err != nil {
		return err
	}
	defer c.stop()
	hc := newHTTPClient(64)
	defer hc.CloseIdleConnections()
	body := []byte(`{"cmd":"true"}`)
	if err := peerWarm(ctx, c, body); err != nil {
		return err
	}

	pids := []int{c.master.cmd.Process.Pid}
	for _, w := range c.workers {
		pids = append(pids, w.cmd.Process.Pid)
	}
	before, err := readCPUs(pids)
	if err != nil {
		return err
	}
	t0 := c.tally()
	start := time.Now()
	if _, err := (load{client: hc, url: peerURL, body: body, want: 200, conc: 16, count: o.tasks}).run(ctx); err != nil {
		return fmt.Errorf("old system, %d tasks: %w", o.tasks, err)
	}
	t1, err := peerSettle(ctx, c, t0.finished+o.tasks)
	if err != nil {
		return err
	}
	after, err := readCPUs(pids)
	if err != nil {
		return err
	}
	ran := t1.received - t0.received
	if ran == 0 {
		return fmt.Errorf("old system: none of %d tasks ran", o.tasks)
	}
	rate := float64(ran) / t1.last.Sub(start).Seconds()
	perTask := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(o.tasks) }
	col.put("peer_completed_rate", "tasks/s", rate)
	col.put("peer_executed_fraction", "ratio", float64(ran)/float64(o.tasks))
	col.put("peer_cpu_master_ms_per_task", "ms", perTask(after[0].self-before[0].self))
	var wk time.Duration
	for i := 1; i < len(pids); i++ {
		wk += after[i].self - before[i].self
	}
	col.put("peer_cpu_workers_ms_per_task", "ms", perTask(wk))
	o.logf("run %d/%d: old system, %d x true on %d workers: %d ran, %.0f tasks/s", r, o.runs, o.tasks, o.workers, ran, rate)

	acc, err := acceptedRate(ctx, load{client: hc, url: peerURL, body: body, want: 200, conc: 64}, o.dur)
	if err != nil {
		return fmt.Errorf("old system, %d workers: %w", o.workers, err)
	}
	col.put("peer_accepted_rate_c64_workers", "req/s", acc)
	o.logf("run %d/%d: old system, %d workers running the tasks, at concurrency 64: %.0f/s answered 200", r, o.runs, o.workers, acc)
	return nil
}

// peerWarm sends tasks one at a time until every worker has run one, which
// shows that the master has registered them all, then waits for the last to
// end, so that the measured run starts on an idle cluster.
func peerWarm(ctx context.Context, c *peerCluster, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ld := load{client: newHTTPClient(1), url: peerURL, body: body, want: 200, conc: 1, count: 1}
	err := client.Poll(ctx, 5*time.Millisecond, func() (bool, error) {
		for _, w := range c.workers {
			if tally([]*execLog{w.log}).received == 0 {
				_, err := ld.run(ctx)
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("old system: not every worker ran a warm-up task: %w", err)
	}
	_, err = peerSettle(ctx, c, c.tally().received)
	return err
}

// peerSettle waits until the workers have finished want tasks in all, or
// have printed nothing for peerQuiet (the old system loses tasks, and has
// no other way to tell), and returns the tally then.
func peerSettle(ctx context.Context, c *peerCluster, want int) (execTally, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var t execTally
	err := client.Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		t = c.tally()
		return t.finished >= want || (!t.last.IsZero() && time.Since(t.last) > peerQuiet), nil
	})
	return t, err
}

// acceptedRate is ld's rate over dur, after a warm-up of 20 requests per
// sender (connections, caches), as the submit phase measures.
func acceptedRate(ctx context.Context, ld load, dur time.Duration) (float64, error) {
	ld.count = ld.conc * 20
	if _, err := ld.run(ctx); err != nil {
		return 0, err
	}
	ld.count, ld.dur = 0, dur
	res, err := ld.run(ctx)
	if err != nil {
		return 0, err
	}
	return res.rate(), nil
}

// readCPUs reads the CPU time of each process.
func readCPUs(pids []int) ([]cpuTime, error) {
	out := make([]cpuTime, len(pids))
	for i, pid := range pids {
		t, err := readCPU(pid)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}
