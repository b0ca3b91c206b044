package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// assignPkg holds BenchmarkAssignStep. Named by import path, as the
// binaries are built, so that go test finds it from anywhere in the
// workspace: the repository root under make bench, this package's
// directory under its tests.
const assignPkg = "github.com/roundhouse-lab/roundhouse/master/internal/dispatch"

// assignSizes are the queue lengths of BenchmarkAssignStep's sub-benchmarks
// (queued=N), each reported as assign_step_us_queued_<countName(N)>.
var assignSizes = []int{1_000, 1_000_000}

// assignStep runs BenchmarkAssignStep -runs times: one assign step of the
// dispatcher with 1,000 and with 1,000,000 queued tasks over 5 priorities
// and 100 requirement sets. It needs no cluster: the benchmark drives the
// dispatcher in its own process. One go test per run rather than -count,
// so that both sizes of a run are measured close together, as a ratio's
// two sides should be. Each run queues the million again (about 5 s on 2
// cores); -assign-steps bounds the timed part.
func assignStep(ctx context.Context, o options, _ launcher, col *collector) error {
	for r := 1; r <= o.runs; r++ {
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkAssignStep$",
			"-benchtime", fmt.Sprintf("%dx", o.assignSteps), "-count", "1", assignPkg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("go test -bench AssignStep: %v\n%s", err, out)
		}
		us, err := assignRuns(parseBench(string(out)), 1)
		if err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		for _, n := range assignSizes {
			col.put("assign_step_us_queued_"+countName(n), "us", us[n][0])
		}
		o.logf("run %d/%d: assign step, %d steps per size: %.1f us with 1,000 queued, %.1f us with 1,000,000",
			r, o.runs, o.assignSteps, us[1_000][0], us[1_000_000][0])
	}
	for _, n := range assignSizes {
		col.notes["assign_step_us_queued_"+countName(n)] = fmt.Sprintf("BenchmarkAssignStep/queued=%d (master/internal/dispatch), "+
			"-benchtime %dx: one assign step, its write-through included, with %d tasks queued in 500 classes", n, o.assignSteps, n)
	}
	return nil
}

// benchResult is one result line of go test -bench.
type benchResult struct {
	name    string // without the -GOMAXPROCS suffix: BenchmarkAssignStep/queued=1000
	n       int    // iterations
	nsPerOp float64
}

// parseBench returns the result lines of go test -bench output, in order,
// and skips every other line (goos:, PASS, logs).
func parseBench(out string) []benchResult {
	var rs []benchResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		// The value before each unit: "2000 35599 ns/op 120 B/op".
		for i := 3; i < len(f); i++ {
			if f[i] != "ns/op" {
				continue
			}
			if ns, err := strconv.ParseFloat(f[i-1], 64); err == nil {
				rs = append(rs, benchResult{name: trimProcs(f[0]), n: n, nsPerOp: ns})
			}
			break
		}
	}
	return rs
}

// trimProcs drops the -GOMAXPROCS suffix go test adds to a benchmark's
// name when GOMAXPROCS is not 1.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

// assignRuns picks BenchmarkAssignStep's results out of rs: for each of
// assignSizes, the time per step of each run in microseconds, in run
// order. It fails unless every size has exactly runs results.
func assignRuns(rs []benchResult, runs int) (map[int][]float64, error) {
	got := map[int][]float64{}
	for _, r := range rs {
		sub, ok := strings.CutPrefix(r.name, "BenchmarkAssignStep/queued=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(sub)
		if err != nil {
			return nil, fmt.Errorf("BenchmarkAssignStep: sub-benchmark %q", r.name)
		}
		got[n] = append(got[n], r.nsPerOp/1000)
	}
	for _, n := range assignSizes {
		if len(got[n]) != runs {
			return nil, fmt.Errorf("BenchmarkAssignStep/queued=%d: %d result(s), want %d", n, len(got[n]), runs)
		}
	}
	return got, nil
}
