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
// (alone in the peer phase; with workers in each e2e run, beside
// Roundhouse's throughput runs) and its column of the closing table filled
// in; it needs
// its fixed ports, 9092 and 50051, free. Nothing else needs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
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
	playRole()
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
