// Command bench measures Roundhouse on this machine, side by side with the
// machine's own limits measured in the same run, and writes the figures as
// a table on stdout and as JSON (bench/results/latest.json by default).
//
// It starts its own cluster: the master and worker binaries, built into a
// temporary directory and run on loopback (the default), or the project's
// images with -containers. Each master gets a fresh database with the
// default, durable SQLite settings. The assign phase needs no cluster: it
// runs the dispatcher's BenchmarkAssignStep with go test. Every figure is
// the median of -runs runs, shown with min and max.
//
//	go run ./integration/cmd/bench               # the full run (make bench)
//	go run ./integration/cmd/bench -quick        # one short run, no 1M RSS step
//	go run ./integration/cmd/bench -no-1m        # the full run without the 1,000,000-task RSS step
//	go run ./integration/cmd/bench -containers   # the images instead of local processes
//	go run ./integration/cmd/bench -peer ../shared/peers/seed-server
//	                                             # the old system too, in the same run
//
// With -peer, the system Roundhouse replaces is measured with the same load
// (the peer phase) and its column of the closing table filled in; it needs
// its fixed ports, 9092 and 50051, free. Nothing else needs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

type options struct {
	runs        int
	dur         time.Duration // per submit or fork/exec measurement
	conc        []int         // submit concurrencies
	tasks       int           // tasks per completed-throughput run
	idleTasks   int           // tasks per idle-latency run
	rssSteps    []int         // queued tasks at which the master's RSS is read
	assignSteps int           // timed assign steps per queue length and run (go test -benchtime Nx)
	workers     int
	peer        string   // the old system's binary; empty: not measured
	phases      []string // which of submit, e2e, memory, assign to run
	containers  bool
	buildImgs   bool
	masterBin   string
	workerBin   string
	out         string // JSON path; empty writes none
	log         io.Writer
}

func defaults() options {
	return options{
		runs: 3, dur: 3 * time.Second, conc: []int{1, 16, 64}, tasks: 3000, idleTasks: 50,
		rssSteps: []int{100_000, 1_000_000}, assignSteps: 50_000, workers: 5, buildImgs: true,
		phases: []string{"submit", "e2e", "peer", "memory", "assign"}, out: filepath.Join("bench", "results", "latest.json"), log: os.Stderr,
	}
}

func main() {
	if os.Getenv(minimalRole) == "minimal-handler" {
		if err := serveMinimal(); err != nil {
			fmt.Fprintln(os.Stderr, "minimal handler:", err)
			os.Exit(1)
		}
		return
	}
	o := defaults()
	quick := flag.Bool("quick", false, "one short run: few tasks, 1,000 queued for RSS, no 1M step, fewer assign steps (about a minute)")
	no1m := flag.Bool("no-1m", false, "skip the 1,000,000-queued-tasks RSS step (it takes minutes)")
	flag.IntVar(&o.runs, "runs", o.runs, "runs per figure; each figure is their median")
	flag.DurationVar(&o.dur, "duration", o.dur, "length of each submit and fork/exec measurement")
	flag.IntVar(&o.tasks, "tasks", o.tasks, "tasks per completed-throughput run")
	flag.IntVar(&o.idleTasks, "idle-tasks", o.idleTasks, "tasks, one at a time, per idle-latency run")
	flag.IntVar(&o.assignSteps, "assign-steps", o.assignSteps, "timed assign steps per queue length and run (BenchmarkAssignStep's -benchtime)")
	flag.BoolVar(&o.containers, "containers", false, "run the images (MASTER_IMAGE, WORKER_IMAGE) instead of local processes")
	flag.BoolVar(&o.buildImgs, "build-images", true, "with -containers: build the images first (bash docker/images.sh)")
	flag.StringVar(&o.masterBin, "master", "", "master binary (default: go build one)")
	flag.StringVar(&o.workerBin, "worker", "", "worker binary (default: go build one)")
	flag.StringVar(&o.out, "out", o.out, "where to write the JSON results (empty: nowhere)")
	flag.StringVar(&o.peer, "peer", "", "the old system's binary (seed-server) to measure beside Roundhouse; it needs ports 9092 and 50051 free (empty: not measured)")
	phases := flag.String("phases", strings.Join(o.phases, ","), "which measurements to make: submit (and the machine's limits), e2e, peer (the old system, with -peer), memory, assign")
	flag.Parse()
	o.phases = strings.Split(*phases, ",")
	if *quick {
		o.runs, o.dur, o.tasks, o.idleTasks, o.rssSteps = 1, 500*time.Millisecond, 200, 10, []int{1000}
		o.assignSteps = 10_000
	}
	if *no1m {
		o.rssSteps = []int{100_000}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o)
	if rep != nil {
		rep.writeTable(os.Stdout)
	}
	if err == nil && o.out != "" {
		err = writeJSON(o.out, rep)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func writeJSON(path string, rep *Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// collector gathers per-run values under metric names, in first-seen order.
type collector struct {
	names []string
	units map[string]string
	notes map[string]string
	vals  map[string][]float64
}

func newCollector() *collector {
	return &collector{units: map[string]string{}, notes: map[string]string{}, vals: map[string][]float64{}}
}

func (c *collector) put(name, unit string, v float64) {
	if _, ok := c.units[name]; !ok {
		c.names = append(c.names, name)
		c.units[name] = unit
	}
	c.vals[name] = append(c.vals[name], v)
}

func (c *collector) fill(r *Report) {
	for _, n := range c.names {
		r.add(n, c.units[n], c.vals[n], c.notes[n])
	}
}

// steps are the phases of a run, by the names -phases takes.
var steps = map[string]func(context.Context, options, launcher, *collector) error{
	"submit": submitAndLimits, "e2e": endToEnd, "peer": peerPhase, "memory": memory, "assign": assignStep,
}

// clusterless are the phases that start no Roundhouse master or worker: a
// run of only these builds nothing (and gets a nil launcher).
var clusterless = map[string]bool{"assign": true, "peer": true}

// run does every measurement and returns the report, partial on error.
func run(ctx context.Context, o options) (*Report, error) {
	for _, name := range o.phases {
		if steps[name] == nil {
			return nil, fmt.Errorf("-phases: no phase %q (use submit, e2e, peer, memory, assign)", name)
		}
	}
	// Before minutes of measuring: the old system's ports may be taken.
	if o.peer != "" && slices.Contains(o.phases, "peer") {
		if err := checkPeer(o.peer); err != nil {
			return nil, err
		}
	}
	began := time.Now()
	rep := &Report{Machine: machine(o)}
	col := newCollector()
	defer func() {
		col.fill(rep)
		rep.evaluate()
		rep.Duration = time.Since(began).Round(time.Second).String()
	}()

	var l launcher // nil when no phase needs a cluster
	if slices.ContainsFunc(o.phases, func(p string) bool { return !clusterless[p] }) {
		var err error
		if l, err = newLauncher(ctx, o); err != nil {
			return rep, err
		}
		defer l.close()
	}

	for _, name := range o.phases {
		if err := steps[name](ctx, o, l, col); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// newLauncher builds the binaries, or the images with -containers.
func newLauncher(ctx context.Context, o options) (launcher, error) {
	if o.containers {
		mi, wi := envOr("MASTER_IMAGE", "roundhouse/master:dev"), envOr("WORKER_IMAGE", "roundhouse/worker:dev")
		c, err := newContainers(ctx, mi, wi, o.buildImgs)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	p, err := newProcesses(ctx, o.masterBin, o.workerBin)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (o options) logf(format string, args ...any) {
	fmt.Fprintf(o.log, "bench: "+format+"\n", args...)
}

// submitAndLimits measures POST /tasks against the master (no workers) and
// against the minimal handler at each concurrency, and the fork/exec rate,
// interleaved run by run so that each run's ratio compares like with like.
func submitAndLimits(ctx context.Context, o options, l launcher, col *collector) error {
	minURL, minCmd, err := startMinimal()
	if err != nil {
		return err
	}
	defer func() { _ = minCmd.Process.Kill(); _ = minCmd.Wait() }()
	hc := newHTTPClient(max(64, slicesMax(o.conc)))
	body := []byte(`{"cmd":"true"}`)
	for r := 1; r <= o.runs; r++ {
		fe, err := forkExecRate(ctx, 2, o.dur)
		if err != nil {
			return err
		}
		col.put("forkexec_rate_c2", "runs/s", fe)
		o.logf("run %d/%d: sh -c true at concurrency 2: %.0f/s", r, o.runs, fe)

		m, err := l.master(ctx) // a fresh database each run
		if err != nil {
			return err
		}
		for _, c := range o.conc {
			for _, target := range []struct{ name, url string }{{"minimal", minURL}, {"submit", m.api + "/tasks"}} {
				ld := load{client: hc, url: target.url, body: body, want: 202, conc: c, count: c * 20}
				if _, err := ld.run(ctx); err != nil { // warm-up: connections, caches
					m.stop()
					return err
				}
				ld.count, ld.dur = 0, o.dur
				res, err := ld.run(ctx)
				if err != nil {
					m.stop()
					return err
				}
				lat := ms(res.lat)
				col.put(fmt.Sprintf("%s_rate_c%d", target.name, c), "req/s", res.rate())
				col.put(fmt.Sprintf("%s_p50_ms_c%d", target.name, c), "ms", percentile(lat, 50))
				col.put(fmt.Sprintf("%s_p99_ms_c%d", target.name, c), "ms", percentile(lat, 99))
				o.logf("run %d/%d: %s at concurrency %d: %.0f/s, p50 %.2f ms, p99 %.2f ms",
					r, o.runs, target.name, c, res.rate(), percentile(lat, 50), percentile(lat, 99))
			}
		}
		hc.CloseIdleConnections()
		m.stop()
	}
	col.notes["submit_rate_c1"] = "accepted tasks/s, every one committed to SQLite (synchronous=FULL) before the 202"
	return nil
}

// endToEnd runs tasks through a master and its workers: throughput under
// load, latency on an idle cluster, and recovery from a killed worker.
func endToEnd(ctx context.Context, o options, l launcher, col *collector) error {
	m, err := l.master(ctx)
	if err != nil {
		return err
	}
	defer m.stop()
	ws, err := startWorkers(ctx, l, m, o.workers)
	defer func() {
		for _, w := range ws {
			w.stop()
		}
	}()
	if err != nil {
		return err
	}
	cl := client.New(m.api)
	hc, hc64 := newHTTPClient(16), newHTTPClient(64)
	for r := 1; r <= o.runs; r++ {
		before, err := clusterCPU(m, ws)
		if err != nil {
			return err
		}
		tp, err := throughput(ctx, cl, hc, m.api, o.tasks)
		if err != nil {
			return err
		}
		after, err := clusterCPU(m, ws)
		if err != nil {
			return err
		}
		perTask := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(o.tasks) }
		col.put("cpu_master_ms_per_task", "ms", perTask(after.master-before.master))
		col.put("cpu_workers_ms_per_task", "ms", perTask(after.workers-before.workers))
		col.put("cpu_commands_ms_per_task", "ms", perTask(after.commands-before.commands))
		col.put("completed_rate", "tasks/s", tp.rate)
		col.put("queued_to_started_p50_ms", "ms", tp.q2s50)
		col.put("queued_to_started_p99_ms", "ms", tp.q2s99)
		col.put("submitted_to_finished_p50_ms", "ms", tp.s2f50)
		col.put("submitted_to_finished_p99_ms", "ms", tp.s2f99)
		o.logf("run %d/%d: %d x true on %d workers: %.0f tasks/s; queued->started p50 %.2f ms p99 %.2f ms; submitted->finished p50 %.2f ms p99 %.2f ms",
			r, o.runs, o.tasks, o.workers, tp.rate, tp.q2s50, tp.q2s99, tp.s2f50, tp.s2f99)

		acc, err := acceptedRate(ctx, load{client: hc64, url: m.api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 64}, o.dur)
		if err != nil {
			return err
		}
		col.put("submit_rate_c64_workers", "req/s", acc)
		o.logf("run %d/%d: %d workers running the tasks, at concurrency 64: %.0f/s accepted", r, o.runs, o.workers, acc)
		// The backlog must be run before the idle figure is measured.
		if err := drain(ctx, cl); err != nil {
			return err
		}

		idle, err := idleLatency(ctx, cl, o.idleTasks)
		if err != nil {
			return err
		}
		col.put("idle_queued_to_started_p50_ms", "ms", idle)
		o.logf("run %d/%d: idle cluster, one task at a time: queued->started p50 %.2f ms", r, o.runs, idle)

		rerun, err := deadWorker(ctx, l, m, cl, ws)
		if err != nil {
			return err
		}
		col.put("dead_worker_rerun_s", "s", rerun.Seconds())
		o.logf("run %d/%d: worker SIGKILLed; its task started elsewhere %s later", r, o.runs, rerun.Round(time.Millisecond))
	}
	col.notes["completed_rate"] = fmt.Sprintf("%d tasks of {\"cmd\":\"true\"} per run, %d workers with 1 slot, submitted at concurrency 16: tasks / (last finished_at - first created_at)", o.tasks, o.workers)
	col.notes["submit_rate_c64_workers"] = fmt.Sprintf("accepted tasks/s of POST /tasks {\"cmd\":\"true\"} at concurrency 64 while %d workers run them (the old system's first figure)", o.workers)
	col.notes["cpu_master_ms_per_task"] = "CPU time of the master process during the throughput run (submissions included), per task"
	col.notes["cpu_workers_ms_per_task"] = "CPU time of the worker processes themselves during the throughput run, per task"
	col.notes["cpu_commands_ms_per_task"] = "CPU time of the commands (sh -c true) the workers ran, per task"
	col.notes["idle_queued_to_started_p50_ms"] = fmt.Sprintf("%d tasks one after another (POST ?wait=): started_at - created_at", o.idleTasks)
	return nil
}

// cpuShare is the CPU time a cluster has used: the master's, the worker
// processes' own, and the commands they ran.
type cpuShare struct{ master, workers, commands time.Duration }

func clusterCPU(m *node, ws map[string]*node) (cpuShare, error) {
	var c cpuShare
	mt, err := readCPU(m.pid)
	if err != nil {
		return c, err
	}
	c.master = mt.self
	for _, w := range ws {
		wt, err := readCPU(w.pid)
		if err != nil {
			return c, err
		}
		c.workers += wt.self
		c.commands += wt.children
	}
	return c, nil
}

type throughputResult struct{ rate, q2s50, q2s99, s2f50, s2f99 float64 }

// throughput submits n tasks of `true` at concurrency 16 while the workers
// run them, waits for all to finish and computes the figures from the
// tasks' own timestamps.
func throughput(ctx context.Context, cl *client.Client, hc *http.Client, api string, n int) (throughputResult, error) {
	var mu sync.Mutex // protects ids
	ids := make(map[string]bool, n)
	ld := load{client: hc, url: api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 16, count: n,
		onBody: func(b []byte) {
			var t struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(b, &t) == nil {
				mu.Lock()
				ids[t.ID] = true
				mu.Unlock()
			}
		}}
	if _, err := ld.run(ctx); err != nil {
		return throughputResult{}, err
	}
	// Newest first: this run's tasks are the first pages once all are final.
	var done []client.Task
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	err := client.Poll(wctx, 50*time.Millisecond, func() (bool, error) {
		done = done[:0]
		live := url.Values{"status": {"queued,running"}, "limit": {"1"}}
		if page, _, err := cl.List(wctx, live); err != nil || len(page) > 0 {
			return false, err
		}
		// Stop at the last of this run's tasks: older runs' pages would
		// only add to the master's CPU time measured around this run.
		for page, err := range cl.Pages(wctx, url.Values{"limit": {"1000"}}) {
			if err != nil {
				return false, err
			}
			for _, t := range page {
				if ids[t.ID] {
					done = append(done, t)
				}
			}
			if len(done) >= len(ids) {
				break
			}
		}
		return true, nil
	})
	if err != nil {
		return throughputResult{}, fmt.Errorf("waiting for %d tasks to finish: %w", n, err)
	}
	if len(done) != len(ids) {
		return throughputResult{}, fmt.Errorf("found %d of %d tasks", len(done), len(ids))
	}
	var q2s, s2f []time.Duration
	first, last := done[0].CreatedAt, *done[0].FinishedAt
	for _, t := range done {
		if t.Status != "succeeded" || t.StartedAt == nil || t.FinishedAt == nil {
			return throughputResult{}, fmt.Errorf("task %s of `true` ended %s (error %v)", t.ID, t.Status, deref(t.Error))
		}
		q2s = append(q2s, t.StartedAt.Sub(t.CreatedAt))
		s2f = append(s2f, t.FinishedAt.Sub(t.CreatedAt))
		if t.CreatedAt.Before(first) {
			first = t.CreatedAt
		}
		if t.FinishedAt.After(last) {
			last = *t.FinishedAt
		}
	}
	a, b := ms(q2s), ms(s2f)
	return throughputResult{
		rate:  float64(len(done)) / last.Sub(first).Seconds(),
		q2s50: percentile(a, 50), q2s99: percentile(a, 99),
		s2f50: percentile(b, 50), s2f99: percentile(b, 99),
	}, nil
}

// drain waits until no task is queued or running.
func drain(ctx context.Context, cl *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	live := url.Values{"status": {"queued,running"}, "limit": {"1"}}
	err := client.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		page, _, err := cl.List(ctx, live)
		return err == nil && len(page) == 0, err
	})
	if err != nil {
		return fmt.Errorf("waiting for the backlog to run: %w", err)
	}
	return nil
}

// idleLatency sends n tasks one after another, each answered when final,
// and returns the median time from queued to started.
func idleLatency(ctx context.Context, cl *client.Client, n int) (float64, error) {
	var lat []time.Duration
	for range n {
		t, _, err := cl.SubmitWith(ctx, client.Submit{Cmd: "true", Wait: 10 * time.Second})
		if err != nil {
			return 0, err
		}
		if t.StartedAt == nil || !t.Final() {
			return 0, fmt.Errorf("task %s not done after 10s: %s", t.ID, t.Status)
		}
		lat = append(lat, t.StartedAt.Sub(t.CreatedAt))
	}
	return percentile(ms(lat), 50), nil
}

// deadWorker starts a long task, SIGKILLs the worker running it and
// returns the time until the task's next attempt started elsewhere. It
// then cancels the task and replaces the dead worker.
func deadWorker(ctx context.Context, l launcher, m *node, cl *client.Client, ws map[string]*node) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t, _, err := cl.SubmitWith(ctx, client.Submit{Cmd: "sleep 30"})
	if err != nil {
		return 0, err
	}
	err = client.Poll(ctx, 5*time.Millisecond, func() (bool, error) {
		t, err = cl.Get(ctx, t.ID)
		return err == nil && t.Status == "running", err
	})
	if err != nil {
		return 0, fmt.Errorf("long task never ran: %w", err)
	}
	victim := t.Worker()
	w := ws[victim]
	if w == nil {
		return 0, fmt.Errorf("task ran on unknown worker %q", victim)
	}
	killed := time.Now()
	if err := w.kill(); err != nil {
		return 0, err
	}
	err = client.Poll(ctx, 2*time.Millisecond, func() (bool, error) {
		t, err = cl.Get(ctx, t.ID)
		return err == nil && t.Attempts >= 2 && t.Status == "running" && t.StartedAt != nil, err
	})
	if err != nil {
		return 0, fmt.Errorf("task not re-run after its worker died (status %s, attempts %d): %w", t.Status, t.Attempts, err)
	}
	if t.Worker() == victim {
		return 0, fmt.Errorf("task re-ran on the dead worker %s", victim)
	}
	rerun := t.StartedAt.Sub(killed)
	if _, _, err := cl.Cancel(ctx, t.ID); err != nil {
		return 0, err
	}
	_ = w.stop()
	nw, err := l.worker(ctx, m, victim)
	if err != nil {
		return 0, err
	}
	ws[victim] = nw
	_, err = cl.WaitWorkers(ctx, len(ws))
	return rerun, err
}

// memory fills a master with no workers up to each step of queued tasks
// and reads its RSS. One run only: filling a million takes minutes.
func memory(ctx context.Context, o options, l launcher, col *collector) error {
	if len(o.rssSteps) == 0 {
		return nil
	}
	m, err := l.master(ctx)
	if err != nil {
		return err
	}
	defer m.stop()
	hc := newHTTPClient(64)
	sent := 0
	for _, step := range o.rssSteps {
		o.logf("filling the master's queue to %d tasks", step)
		ld := load{client: hc, url: m.api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 64, count: step - sent}
		res, err := ld.run(ctx)
		if err != nil {
			return err
		}
		sent = step
		rss, err := rssMiB(m.pid)
		if err != nil {
			return err
		}
		name := "master_rss_mib_" + countName(step)
		col.put(name, "MiB", rss)
		col.notes[name] = fmt.Sprintf("VmRSS with %d queued tasks, no workers; one run (filled at %.0f tasks/s)", step, res.rate())
		o.logf("%d queued: master RSS %.0f MiB (filled at %.0f/s)", step, rss, res.rate())
	}
	return nil
}

// countName writes 100000 as 100k and 1000000 as 1m, for metric names.
func countName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "m"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

func machine(o options) Machine {
	mode := "processes"
	if o.containers {
		mode = "containers"
	}
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--", "master", "worker", "proto").Output(); err == nil && len(st) > 0 {
			commit += "-dirty"
		}
	}
	return Machine{
		Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Date: time.Now().UTC().Format(time.RFC3339), Commit: commit, Mode: mode, Runs: o.runs,
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func slicesMax(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
