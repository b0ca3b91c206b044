package main

import (
	"context"
	"fmt"
	"strconv"
)

// The memory phase: the master's RSS with growing backlogs.

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
