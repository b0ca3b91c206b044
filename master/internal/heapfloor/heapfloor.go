// Package heapfloor keeps the garbage collector from running while the
// live heap is small: it lets the heap grow to a floor before a collection,
// and goes back to GOGC's own goal once the live heap outgrows that.
//
// With GOGC at 100 the heap may grow to twice what the last collection left
// live, and no less than 4 MiB. A master with an empty queue keeps 3 MiB or
// so live while it allocates about 6 KiB per submission, so at 10,000
// submissions a second it collected 28 times a second; each collection
// takes a fraction of a core and stops the world twice, and on a machine
// of two busy cores the tail of the submissions' latency grew with it
// (submit p99 at 16 senders 4.95 ms against 4.36 with GOGC=400, six
// interleaved runs; docs/performance.md). A floor of a few MiB takes that
// to a few collections a second for a few MiB more memory. A master with a
// large queue (a million tasks is about 150 MiB live) is above the floor
// and collects as GOGC says, so its memory is what it would be anyway.
//
// After each collection, a finalizer of an object made for the purpose sets
// the next goal, max(live × (1 + GOGC/100), floor), through
// debug.SetGCPercent (Percent); nothing runs between collections. The
// runtime's finalizer goroutine runs it; the chain of finalizers ends with
// Stop. GOGC=off turns it off, as does a floor of 0; a GOMEMLIMIT still
// bounds the heap, floor or not.
package heapfloor

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
)

// liveMetric is the heap the last collection found live.
const liveMetric = "/gc/heap/live:bytes"

// Floor tunes the collector. Start it once; Stop ends it.
type Floor struct {
	floor  uint64
	base   int // GOGC as the process started with it
	sample []metrics.Sample

	mu      sync.Mutex // Stop against the finalizer's tune
	percent int        // what it set last
	stopped bool
}

// Start sets the floor, in bytes, for the process's heap and returns the
// Floor that keeps it. It does nothing (and returns nil) if floor is 0 or
// the collector is off (GOGC=off).
func Start(floor uint64) *Floor {
	base := gogc()
	if floor == 0 || base < 0 {
		return nil
	}
	f := &Floor{floor: floor, base: base, percent: base, sample: []metrics.Sample{{Name: liveMetric}}}
	f.tune()
	f.arm()
	return f
}

// Stop gives the collector back its own goal. Safe on a nil Floor.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(f.base)
	}
}

// gogc is GOGC as the runtime read it at start: "off" is -1, and anything
// but a number 100.
func gogc() int {
	v := os.Getenv("GOGC")
	if v == "off" {
		return -1
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return 100
}

// sentinel is an object that only a finalizer refers to: it becomes
// garbage at once, and its finalizer runs after the collection that found
// it so. Not too small for the tiny allocator, which shares blocks among
// objects and would keep it alive with its neighbours.
type sentinel struct{ _ [64]byte }

// arm makes the sentinel whose finalizer, after the next collection, sets
// the goal for the one after and arms the next sentinel. The finalizer
// goroutine runs it; the chain ends with Stop.
func (f *Floor) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		if f.tune() {
			f.arm()
		}
	})
}

// tune sets GOGC so that the next goal is max(live × (1 + base/100),
// floor), and reports whether to go on (not stopped). Only the finalizer
// goroutine calls it after Start.
func (f *Floor) tune() bool {
	metrics.Read(f.sample)
	if f.sample[0].Value.Kind() != metrics.KindUint64 {
		return false // not in this runtime: leave GOGC as it is
	}
	p := Percent(f.sample[0].Value.Uint64(), f.floor, f.base)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	if p != f.percent {
		f.percent = p
		debug.SetGCPercent(p)
	}
	return true
}

// heapMinimum is the runtime's least goal at GOGC=100 (4 MiB), which it
// scales with GOGC: at GOGC=p the goal is max(live × (1 + p/100),
// heapMinimum × p/100).
const heapMinimum = 4 << 20

// Percent is the GOGC that makes the goal of a heap with live bytes live
// max(live × (1 + base/100), floor). Both of the runtime's terms must stay
// within the floor: with little live, GOGC is bounded by the scaled
// minimum's (a 16 MiB floor by 400), else that alone would put the goal
// far above the floor.
func Percent(live, floor uint64, base int) int {
	if live == 0 {
		live = 1
	}
	if float64(live)*(1+float64(base)/100) >= float64(floor) {
		return base
	}
	p := min(math.Ceil(float64(floor)/float64(live)*100)-100, math.Floor(float64(floor)*100/heapMinimum))
	return max(base, int(min(p, math.MaxInt32)))
}
