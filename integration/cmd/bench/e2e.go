package main

// The e2e phase: throughput, latency, CPU per task and a dead worker on a live cluster.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

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
	// The floor master runs beside the master, twice: with workers of the
	// same binary, and with os/exec workers. A container's run has neither
	// (its workers are images).
	var floor, osexec *floorCluster
	if p, ok := l.(*processes); ok {
		if floor, err = startFloor(ctx, p.bin.Worker, o.workers); err != nil {
			return err
		}
		defer floor.stop()
		if osexec, err = startFloor(ctx, "", o.workers); err != nil {
			return err
		}
		defer osexec.stop()
	}
	var peerDir string // with the peer phase: the old system's runs with workers are made here
	if peerInE2E(o) {
		if peerDir, err = os.MkdirTemp("", "roundhouse-bench-peer-"); err != nil {
			return err
		}
		defer os.RemoveAll(peerDir)
	}
	cl := client.New(m.api)
	hc, hc64 := newHTTPClient(16), newHTTPClient(64)
	for r := 1; r <= o.runs; r++ {
		// The machine's rate of running tasks, measured right before the
		// throughput runs it is the ratio's denominator of: how fast this
		// machine forks drifts by a third or more within the hour some days, and
		// a figure taken minutes earlier (it was, in the submit phase)
		// moved completed_vs_forkexec with it. The clusters wait idle.
		if err := forkExec(ctx, o, r, col); err != nil {
			return err
		}
		before, err := readUsage(ctx, hc, m, ws)
		if err != nil {
			return err
		}
		var after usage
		tp, err := throughput(ctx, cl, hc, m.api, o.tasks, func() (err error) {
			after, err = readUsage(ctx, hc, m, ws)
			return err
		})
		if err != nil {
			return err
		}
		commits := after.commits - before.commits
		col.put("store_writes_per_commit", "writes", (after.writes-before.writes)/max(commits, 1))
		col.put("store_commits_per_task", "commits", commits/float64(o.tasks))
		perTask := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(o.tasks) }
		spent := after.cpu.minus(before.cpu)
		col.put("cpu_master_ms_per_task", "ms", perTask(spent.master))
		col.put("cpu_workers_ms_per_task", "ms", perTask(spent.workers))
		col.put("cpu_commands_ms_per_task", "ms", perTask(spent.commands))
		col.put("completed_rate", "tasks/s", tp.rate)
		col.put("queued_to_started_p50_ms", "ms", tp.q2s50)
		col.put("queued_to_started_p99_ms", "ms", tp.q2s99)
		col.put("submitted_to_finished_p50_ms", "ms", tp.s2f50)
		col.put("submitted_to_finished_p99_ms", "ms", tp.s2f99)
		o.logf("run %d/%d: %d x true on %d workers: %.0f tasks/s; queued->started p50 %.2f ms p99 %.2f ms; submitted->finished p50 %.2f ms p99 %.2f ms",
			r, o.runs, o.tasks, o.workers, tp.rate, tp.q2s50, tp.q2s99, tp.s2f50, tp.s2f99)

		for _, f := range []struct {
			c    *floorCluster
			name string // the metrics' infix
			what string
		}{{floor, "floor", "the floor master"}, {osexec, "floor_osexec", "the floor master with os/exec workers"}} {
			if f.c == nil {
				continue
			}
			rate, used, err := f.c.throughput(ctx, o.tasks)
			if err != nil {
				return err
			}
			col.put(f.name+"_completed_rate", "tasks/s", rate)
			col.put("cpu_"+f.name+"_master_ms_per_task", "ms", perTask(used.master))
			col.put("cpu_"+f.name+"_workers_ms_per_task", "ms", perTask(used.workers))
			o.logf("run %d/%d: %s, %d x true on %d workers: %.0f tasks/s, CPU per task: master %.3f ms, workers %.3f ms",
				r, o.runs, f.what, o.tasks, o.workers, rate, perTask(used.master), perTask(used.workers))
		}

		// The old system with the same load, right after the floor masters
		// and before the accepted/s beside it (the clusters above wait idle),
		// so that each ratio to it pairs figures taken within seconds, not
		// minutes, of each other. Its workers die with their backlog.
		if peerDir != "" {
			if err := peerWithWorkers(ctx, o, r, peerDir, col); err != nil {
				return err
			}
		}

		acc, err := acceptedRate(ctx, load{client: hc64, url: m.api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 64}, o.dur)
		if err != nil {
			return err
		}
		col.put("submit_rate_c64_workers", "req/s", acc)
		o.logf("run %d/%d: %d workers running the tasks, at concurrency 64: %.0f/s accepted", r, o.runs, o.workers, acc)
		// The backlog must be run before the idle figure is measured, and
		// before the floor master's figure beside its workers.
		if err := drain(ctx, cl); err != nil {
			return err
		}
		// The bound of the figure above: what a master that keeps the
		// promise accepts while the same workers run its tasks. Taken once
		// Roundhouse's workers are idle again, the drain's time after the
		// old system's.
		if floor != nil {
			facc, err := floor.acceptedBeside(ctx, hc64, o.dur)
			if err != nil {
				return err
			}
			col.put("floor_accepted_rate_c64_workers", "req/s", facc)
			o.logf("run %d/%d: the floor master, %d workers running the tasks, at concurrency 64: %.0f/s accepted", r, o.runs, o.workers, facc)
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
	col.notes["forkexec_cpu_ms_per_run_c2"] = "CPU time of one `sh -c true` of forkexec_rate_c2: the shell's (wait4) and the forking bench process's"
	col.notes["forkexec_bare_cpu_ms_per_run_c2"] = "CPU time of the forking bench process alone per `sh -c true` started with syscall.ForkExec from 2 goroutines, its stdout and stderr each a pipe read to the end, reaped with wait4: what starting a process per task costs the process that starts it, the bound of the worker's CPU per task"
	col.notes["completed_rate"] = fmt.Sprintf("%d tasks of {\"cmd\":\"true\"} per run, %d workers with 1 slot, submitted at concurrency 16: tasks / (last finished_at - first created_at)", o.tasks, o.workers)
	col.notes["floor_completed_rate"] = fmt.Sprintf("the completed_rate run against the floor master (floor.go: two durable writes per task and nothing else) with %d workers of the same binary: tasks / (last committed result's finished_at - first submission's arrival)", o.workers)
	col.notes["cpu_floor_master_ms_per_task"] = "CPU time of the floor master process during its throughput run (submissions included), per task"
	col.notes["cpu_floor_workers_ms_per_task"] = "CPU time of the floor master's worker processes themselves during its throughput run, per task"
	col.notes["floor_osexec_completed_rate"] = fmt.Sprintf("the same against the floor master with %d os/exec workers (floor.go: os/exec, a Report stream, nothing else)", o.workers)
	col.notes["cpu_floor_osexec_master_ms_per_task"] = "CPU time of the floor master process during its run with os/exec workers, per task"
	col.notes["cpu_floor_osexec_workers_ms_per_task"] = "CPU time of the os/exec workers themselves during that run, per task"
	col.notes["submit_rate_c64_workers"] = fmt.Sprintf("accepted tasks/s of POST /tasks {\"cmd\":\"true\"} at concurrency 64 while %d workers run them (the old system's first figure)", o.workers)
	col.notes["floor_accepted_rate_c64_workers"] = fmt.Sprintf("the same against the floor master while its %d workers run them, once Roundhouse's workers have run their backlog", o.workers)
	col.notes["cpu_master_ms_per_task"] = "CPU time of the master process during the throughput run (submissions included), per task"
	col.notes["cpu_workers_ms_per_task"] = "CPU time of the worker processes themselves during the throughput run, per task"
	col.notes["cpu_commands_ms_per_task"] = "CPU time of the commands (sh -c true) the workers ran, per task"
	col.notes["store_writes_per_commit"] = "changes (a task row, an attempt row or both) per store transaction during the throughput run, from the master's roundhouse_store_* counters"
	col.notes["store_commits_per_task"] = "store transactions (each one fsync) per task during the throughput run"
	col.notes["idle_queued_to_started_p50_ms"] = fmt.Sprintf("%d tasks one after another (POST ?wait=): started_at - created_at", o.idleTasks)
	return nil
}

// cpuShare is the CPU time a cluster has used: the master's, the worker
// processes' own, and the commands they ran.
type cpuShare struct{ master, workers, commands time.Duration }

// minus is what was used between an earlier reading, d, and c.
func (c cpuShare) minus(d cpuShare) cpuShare {
	return cpuShare{master: c.master - d.master, workers: c.workers - d.workers, commands: c.commands - d.commands}
}

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
// run them, waits for all to finish, calls ended and computes the figures
// from the tasks' own timestamps. ended comes before the tasks are read
// back, so that the CPU it measures is that of running them, as the floor
// master's is: reading thousands of tasks back through the API is the
// bench's work, not theirs.
func throughput(ctx context.Context, cl *client.Client, hc *http.Client, api string, n int, ended func() error) (throughputResult, error) {
	// The answers are kept as they are and parsed after ended: parsing
	// them is the bench's work, which the floor master's run, whose
	// answers nobody parses, does not have in its window.
	var mu sync.Mutex // protects bodies
	bodies := make([][]byte, 0, n)
	ld := load{client: hc, url: api + "/tasks", body: []byte(`{"cmd":"true"}`), want: 202, conc: 16, count: n,
		onBody: func(b []byte) {
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
		}}
	if _, err := ld.run(ctx); err != nil {
		return throughputResult{}, err
	}
	if err := drain(ctx, cl); err != nil {
		return throughputResult{}, err
	}
	if err := ended(); err != nil {
		return throughputResult{}, err
	}
	ids := make(map[string]bool, n)
	for _, b := range bodies {
		var t struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &t); err != nil || t.ID == "" {
			return throughputResult{}, fmt.Errorf("POST /tasks answered %q: no task ID (%v)", b, err)
		}
		ids[t.ID] = true
	}
	// Newest first: this run's tasks are the first pages. Stop at the
	// last of them: older runs' pages would be read for nothing.
	var done []client.Task
	for page, err := range cl.Pages(ctx, url.Values{"limit": {"1000"}}) {
		if err != nil {
			return throughputResult{}, err
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
	if len(done) != len(ids) {
		return throughputResult{}, fmt.Errorf("found %d of %d tasks", len(done), len(ids))
	}
	return throughputOf(done)
}

// throughputOf is the throughput run's figures from its tasks, read back
// once all had ended: each must have succeeded.
func throughputOf(done []client.Task) (throughputResult, error) {
	if len(done) == 0 {
		return throughputResult{}, fmt.Errorf("no task to measure")
	}
	var q2s, s2f []time.Duration
	var first, last time.Time
	for i, t := range done {
		if t.Status != "succeeded" || t.StartedAt == nil || t.FinishedAt == nil {
			return throughputResult{}, fmt.Errorf("task %s of `true` ended %s (error %v)", t.ID, t.Status, deref(t.Error))
		}
		q2s = append(q2s, t.StartedAt.Sub(t.CreatedAt))
		s2f = append(s2f, t.FinishedAt.Sub(t.CreatedAt))
		if i == 0 || t.CreatedAt.Before(first) {
			first = t.CreatedAt
		}
		if i == 0 || t.FinishedAt.After(last) {
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
		return fmt.Errorf("waiting for the queued and running tasks to end: %w", err)
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

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// usage is what a cluster has used so far: CPU, and the master's store
// transactions and the writes in them.
type usage struct {
	cpu             cpuShare
	commits, writes float64
}

func readUsage(ctx context.Context, hc *http.Client, m *node, ws map[string]*node) (usage, error) {
	var u usage
	var err error
	if u.cpu, err = clusterCPU(m, ws); err != nil {
		return u, err
	}
	u.commits, u.writes, err = storeCounts(ctx, hc, m.api)
	return u, err
}

// storeCounts reads the master's store counters from its /metrics.
func storeCounts(ctx context.Context, hc *http.Client, api string) (commits, writes float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	found := 0
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "roundhouse_store_commits_total":
			dst = &commits
		case "roundhouse_store_writes_total":
			dst = &writes
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(value, 64); err != nil {
			return 0, 0, fmt.Errorf("/metrics: %s: %w", name, err)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("/metrics: no roundhouse_store_commits_total or roundhouse_store_writes_total")
	}
	return commits, writes, nil
}

// forkExec measures run r's fork/exec baseline: `sh -c true` with os/exec
// at concurrency 2, its CPU per run, and the bare fork's CPU per run.
func forkExec(ctx context.Context, o options, r int, col *collector) error {
	fe, feCPU, err := forkExecRate(ctx, 2, o.dur)
	if err != nil {
		return err
	}
	col.put("forkexec_rate_c2", "runs/s", fe)
	col.put("forkexec_cpu_ms_per_run_c2", "ms", feCPU)
	bare, err := bareForkCPU(ctx, 2, min(o.dur, time.Second))
	if err != nil {
		return err
	}
	col.put("forkexec_bare_cpu_ms_per_run_c2", "ms", bare)
	o.logf("run %d/%d: sh -c true at concurrency 2: %.0f/s", r, o.runs, fe)
	return nil
}
