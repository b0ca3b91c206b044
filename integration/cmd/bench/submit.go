package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// The submit phase: POST /tasks against the minimal handler.

// submitAndLimits measures POST /tasks against the master (no workers) and
// against the minimal handler at each concurrency (the row handler too at
// 16 and at the highest, the durable handler at the highest), interleaved
// run by run so that each run's ratio compares like with like.
func submitAndLimits(ctx context.Context, o options, l launcher, col *collector) error {
	minURL, minCmd, err := startHandler("minimal-handler")
	if err != nil {
		return err
	}
	defer func() { _ = minCmd.Process.Kill(); _ = minCmd.Wait() }()
	dir, err := os.MkdirTemp("", "roundhouse-bench-durable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hc := newHTTPClient(max(64, slices.Max(o.conc)))
	defer hc.CloseIdleConnections()
	for r := 1; r <= o.runs; r++ {
		if err := submitRun(ctx, o, l, r, hc, filepath.Join(dir, fmt.Sprint(r)), minURL, minCmd.Process.Pid, col); err != nil {
			return err
		}
		hc.CloseIdleConnections()
	}
	col.notes["minimal_cpu_ms_per_request_c64"] = "CPU time of the minimal handler's process per request at concurrency 64: the HTTP floor of a submission on this machine"
	col.notes["submit_cpu_ms_per_request_c64"] = "CPU time of the master per accepted task at concurrency 64, no worker connected (HTTP, dispatcher, the insert and its share of a group commit)"
	col.notes["durable_rate_c64"] = "the minimal handler answering only once the request's body is committed to SQLite (WAL, synchronous=FULL, group commit), a table with no index: the ceiling of any submission on disk before its 202 on this machine"
	col.notes["durable_cpu_ms_per_request_c64"] = "CPU time of the durable handler's process per request at concurrency 64"
	col.notes["durable_row_rate_c64"] = "the durable handler writing the master's task row instead (a UUIDv7 text ID, the master's schema and indexes, in a database the master made) and doing nothing else: the ceiling of a submission that keeps what the master keeps"
	col.notes["durable_row_cpu_ms_per_request_c64"] = "CPU time of the row handler's process per request at concurrency 64"
	col.notes["submit_rate_c1"] = "accepted tasks/s, every one committed to SQLite (synchronous=FULL) before the 202"
	return nil
}

// submitRun is run r of the submit phase: each target at each
// concurrency, the master and the handlers that write a database each on a
// fresh one in dir, so that no run finds the tables of the one before.
func submitRun(ctx context.Context, o options, l launcher, r int, hc *http.Client, dir, minURL string, minPid int, col *collector) error {
	d, err := startDurables(ctx, l, dir)
	if err != nil {
		return err
	}
	defer d.stop()
	m, err := l.master(ctx)
	if err != nil {
		return err
	}
	defer m.stop()
	body := []byte(`{"cmd":"true"}`)
	for _, c := range o.conc {
		type target struct {
			name, url string
			pid       int
		}
		targets := []target{{"minimal", minURL, minPid}, {"submit", m.api + "/tasks", m.pid}}
		// The row handler at 64 (the highest but in tests) bounds the
		// rate, at 16 the p99 of the targets; the others would only add
		// time.
		if d.rowCmd != nil && (c == slices.Max(o.conc) || c == 16) {
			targets = slices.Insert(targets, 1, target{"durable_row", d.rowURL, d.rowCmd.Process.Pid})
		}
		if c == slices.Max(o.conc) {
			targets = slices.Insert(targets, 1, target{"durable", d.durURL, d.durCmd.Process.Pid})
		}
		for _, target := range targets {
			ld := load{client: hc, url: target.url, body: body, want: 202, conc: c, count: c * 20}
			if _, err := ld.run(ctx); err != nil { // warm-up: connections, caches
				return err
			}
			ld.count, ld.dur = 0, o.dur
			before, err := readCPU(target.pid)
			if err != nil {
				return err
			}
			res, err := ld.run(ctx)
			if err != nil {
				return err
			}
			after, err := readCPU(target.pid)
			if err != nil {
				return err
			}
			if c == 64 {
				// The server's own CPU per request: what the minimal
				// handler's is, no submission can cost less.
				col.put(fmt.Sprintf("%s_cpu_ms_per_request_c%d", target.name, c), "ms",
					float64(after.self-before.self)/float64(time.Millisecond)/float64(res.n))
			}
			lat := ms(res.lat)
			col.put(fmt.Sprintf("%s_rate_c%d", target.name, c), "req/s", res.rate())
			col.put(fmt.Sprintf("%s_p50_ms_c%d", target.name, c), "ms", percentile(lat, 50))
			col.put(fmt.Sprintf("%s_p99_ms_c%d", target.name, c), "ms", percentile(lat, 99))
			o.logf("run %d/%d: %s at concurrency %d: %.0f/s, p50 %.2f ms, p99 %.2f ms",
				r, o.runs, target.name, c, res.rate(), percentile(lat, 50), percentile(lat, 99))
		}
	}
	return nil
}

// durables are the durable and row handlers of one run, each on a fresh
// database (the row handler's made by the master, its schema and no task).
// A container's run has no row handler: its database is out of reach.
type durables struct {
	durURL, rowURL string
	durCmd, rowCmd *exec.Cmd // rowCmd nil without a row handler
}

// startDurables starts the durable and row handlers on databases in dir.
func startDurables(ctx context.Context, l launcher, dir string) (d durables, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return d, err
	}
	if d.durURL, d.durCmd, err = startHandler("durable-handler", durableDBEnv+"="+filepath.Join(dir, "durable.db")); err != nil {
		return d, err
	}
	if p, ok := l.(*processes); ok {
		rowDB := filepath.Join(dir, "row.db")
		if err = p.emptyDatabase(ctx, rowDB); err == nil {
			d.rowURL, d.rowCmd, err = startHandler("row-handler", durableDBEnv+"="+rowDB)
		}
		if err != nil {
			d.stop()
			return durables{}, err
		}
	}
	return d, nil
}

// stop kills the handlers.
func (d durables) stop() {
	for _, c := range []*exec.Cmd{d.durCmd, d.rowCmd} {
		if c != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}
