package main

import (
	"reflect"
	"strings"
	"testing"
)

// assignOutput is go test -bench AssignStep -count 2 as it prints it, with
// a log line of the kind a benchmark's b.Log adds.
const assignOutput = `goos: linux
goarch: amd64
pkg: github.com/roundhouse-lab/roundhouse/master/internal/dispatch
cpu: Oxide Virtual Turin-like Processor
BenchmarkAssignStep/queued=1000-2         	    2000	     35599 ns/op
BenchmarkAssignStep/queued=1000-2         	    2000	     41000 ns/op
BenchmarkAssignStep/queued=1000000-2      	    2000	     31341.5 ns/op
--- BENCH: BenchmarkAssignStep/queued=1000000-2
    bench_test.go:170: 2000 steps
BenchmarkAssignStep/queued=1000000-2      	    2000	     82000 ns/op
PASS
ok  	github.com/roundhouse-lab/roundhouse/master/internal/dispatch	14.188s
`

func TestParseBench(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []benchResult
	}{
		{"go test output", assignOutput, []benchResult{
			{"BenchmarkAssignStep/queued=1000", 2000, 35599},
			{"BenchmarkAssignStep/queued=1000", 2000, 41000},
			{"BenchmarkAssignStep/queued=1000000", 2000, 31341.5},
			{"BenchmarkAssignStep/queued=1000000", 2000, 82000},
		}},
		{"GOMAXPROCS=1: no suffix", "BenchmarkAssignStep/queued=1000 \t 10 \t 500 ns/op\n",
			[]benchResult{{"BenchmarkAssignStep/queued=1000", 10, 500}}},
		{"other units after ns/op", "BenchmarkQueuedMemory-8 1 2563000000 ns/op 185.5 B/queued-task 12 B/op\n",
			[]benchResult{{"BenchmarkQueuedMemory", 1, 2.563e9}}},
		{"a dash that is no GOMAXPROCS", "BenchmarkX/a-b 3 7 ns/op\n", []benchResult{{"BenchmarkX/a-b", 3, 7}}},
		{"a failed run prints no result", "--- FAIL: BenchmarkAssignStep/queued=1000\n    bench_test.go:180: queue of 3\nFAIL\n", nil},
		{"a name alone (go test -v)", "BenchmarkAssignStep\nBenchmarkAssignStep/queued=1000\n", nil},
		{"no ns/op", "BenchmarkX-2 3 7 B/op\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseBench(tt.out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseBench = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAssignRuns(t *testing.T) {
	got, err := assignRuns(parseBench(assignOutput), 2)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int][]float64{1000: {35.599, 41}, 1_000_000: {31.3415, 82}}
	for n, w := range want {
		if len(got[n]) != len(w) {
			t.Fatalf("queued=%d: %v, want %v", n, got[n], w)
		}
		for i := range w {
			if !near(got[n][i], w[i]) {
				t.Errorf("queued=%d run %d: %v us, want %v", n, i+1, got[n][i], w[i])
			}
		}
	}

	tests := []struct {
		name string
		rs   []benchResult
		runs int
		want string // in the error
	}{
		{"fewer runs than asked", parseBench(assignOutput), 3, "queued=1000: 2 result(s), want 3"},
		{"a size missing", []benchResult{{"BenchmarkAssignStep/queued=1000", 1, 5}}, 1, "queued=1000000: 0 result(s)"},
		{"no result at all", nil, 1, "queued=1000: 0 result(s)"},
		{"other benchmarks do not count", []benchResult{{"BenchmarkAssign", 1, 5}, {"BenchmarkAssignStep/queued=1000", 1, 5}}, 1, "queued=1000000: 0"},
		{"an unknown sub-benchmark", []benchResult{{"BenchmarkAssignStep/queued=many", 1, 5}}, 1, `"BenchmarkAssignStep/queued=many"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := assignRuns(tt.rs, tt.runs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("assignRuns: err = %v, want one with %q", err, tt.want)
			}
		})
	}
}
