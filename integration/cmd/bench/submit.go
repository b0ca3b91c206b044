package main

import (
	"context"
	"fmt"
	"slices"
)

// The submit phase: POST /tasks against the minimal handler, and fork/exec.

// submitAndLimits measures POST /tasks against the master (no workers) and
// against the minimal handler at each concurrency, and the fork/exec rate,
// interleaved run by run so that each run's ratio compares like with like.
func submitAndLimits(ctx context.Context, o options, l launcher, col *collector) error {
	minURL, minCmd, err := startMinimal()
	if err != nil {
		return err
	}
	defer func() { _ = minCmd.Process.Kill(); _ = minCmd.Wait() }()
	hc := newHTTPClient(max(64, slices.Max(o.conc)))
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
