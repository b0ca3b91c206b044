package dispatch

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// TestSoak's knobs, for running it longer or again by hand:
//
//	go test -race -run TestSoak ./internal/dispatch/ -soak.duration=1m -soak.seed=42
//
// SOAK_DURATION and SOAK_SEED do the same where flags cannot be passed
// (go test ./... hands every flag to every package).
var (
	soakDuration = flag.Duration("soak.duration", 0, "how long TestSoak runs (default 3s, 1s with -short; or SOAK_DURATION)")
	soakSeed     = flag.Uint64("soak.seed", 0, "TestSoak's seed; 0 picks one (or SOAK_SEED)")
)

const (
	soakWorkers     = 5    // simulated worker IDs, 1-3 slots each
	soakSubmitters  = 3    // goroutines submitting tasks
	soakMaxTasks    = 3000 // submissions stop here, so that the settling stays short
	soakKeys        = 40   // idempotency keys the submitters share
	soakMaxBreaches = 20   // breaches reported in full; the rest are counted
	soakTick        = 2 * time.Millisecond
	// stepMargin is how much monotonic time may pass between the look
	// before a wall-clock step and the Sweep after it for the step check to
	// hold: every clock reading, by any goroutine, moves it by 1ms.
	stepMargin = time.Second
)

// TestSoak drives the dispatcher from many goroutines at once (submitters,
// a canceller, workers that report, retry, reconnect, fall silent and come
// back as new processes, a sweeper moving the clock) for a bounded time,
// then lets it settle and checks what must hold whatever the interleaving:
// no task lost or stuck, no worker sent more than its slots, no delivery
// sent twice, every task's history consistent with what was sent.
//
// The seed fixes each goroutine's choices, not the interleaving: a seed
// that failed once makes the same choices again, and usually the failure.
func TestSoak(t *testing.T) {
	duration, seed := soakSettings(t)
	t.Logf("seed %d, running %s (reproduce with -soak.seed=%d or SOAK_SEED=%d)", seed, duration, seed, seed)

	d, clk := newTest(t)
	k := &soak{t: t, d: d, clk: clk, seed: seed, keys: make(map[string]string), sent: make(map[Delivery]string), pace: newPacer()}
	hub := events.NewHub(1, 1)
	hub.Observe(k.observe)
	d.p.Events = hub // before any goroutine uses d

	stop := make(chan struct{})
	var wg sync.WaitGroup
	goroutine := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	stream := uint64(0)
	rng := func() *rand.Rand { stream++; return rand.New(rand.NewPCG(seed, stream)) }

	workers := make([]*simWorker, soakWorkers)
	for i := range workers {
		r := rng()
		w := &simWorker{k: k, r: r, id: fmt.Sprintf("w%d", i+1), slots: 1 + r.IntN(3), held: make(map[string]*holding)}
		if i%2 == 1 {
			w.labels = map[string]string{"pool": "gpu"}
		}
		w.register(false)
		workers[i] = w
		goroutine(func() { w.run(stop) })
	}
	cancels := make(chan struct{}, 16)
	for range soakSubmitters {
		r := rng()
		goroutine(func() { k.submitter(r, stop, cancels) })
	}
	{
		r := rng()
		goroutine(func() { k.canceller(r, stop, cancels) })
	}
	{
		r := rng()
		goroutine(func() { k.sweeper(r, stop) })
	}

	start := time.Now()
	<-time.After(duration) // the run's length, not a wait for anything
	close(stop)
	wg.Wait()
	t.Logf("ran %s: %s", time.Since(start).Round(time.Millisecond), k.summary())

	k.settle(workers)
	k.check()
	if k.breaches > soakMaxBreaches {
		t.Errorf("seed %d: %d more breaches not shown", seed, k.breaches-soakMaxBreaches)
	}
}

func soakSettings(t *testing.T) (time.Duration, uint64) {
	duration, seed := *soakDuration, *soakSeed
	if v := os.Getenv("SOAK_DURATION"); v != "" && duration == 0 {
		var err error
		if duration, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
	}
	if v := os.Getenv("SOAK_SEED"); v != "" && seed == 0 {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED: %v", err)
		}
	}
	switch {
	case duration > 0:
	case testing.Short():
		duration = time.Second
	default:
		duration = 3 * time.Second
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	return duration, seed
}

// soak is what the soak's goroutines share: the dispatcher, and the record
// of what it answered, to check at the end.
type soak struct {
	t    *testing.T
	d    *Dispatcher
	clk  *fakeClock
	seed uint64
	pace *pacer

	// Taken inside d.mu by observe, so never held while calling d.
	mu       sync.Mutex          // protects every field below
	ids      []string            // every ID Submit returned, created or replayed
	keys     map[string]string   // idempotency key -> the task its submissions returned
	sent     map[Delivery]string // every delivery a session queued -> the worker it was queued for
	sessions []*Session          // every session registered, to read what is left in their outboxes
	timedOut []string            // worker IDs, as Sweep timed them out
	gaveUp   []string            // "worker/task" of each delivery Sweep gave up for want of a result
	breaches int
	counts   map[string]int // what happened, for the log
}

// breach reports a broken invariant, with the seed that found it.
func (k *soak) breach(format string, args ...any) {
	k.mu.Lock()
	k.breaches++
	n := k.breaches
	k.mu.Unlock()
	if n <= soakMaxBreaches {
		k.t.Errorf("seed %d: "+format, append([]any{k.seed}, args...)...)
	}
}

func (k *soak) count(what string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.counts == nil {
		k.counts = make(map[string]int)
	}
	k.counts[what]++
}

func (k *soak) summary() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var parts []string
	for _, what := range slices.Sorted(maps.Keys(k.counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", what, k.counts[what]))
	}
	return fmt.Sprintf("%d tasks, %d deliveries, %d worker timeouts, %d deliveries given up; %s",
		len(k.ids), len(k.sent), len(k.timedOut), len(k.gaveUp), strings.Join(parts, " "))
}

// observe sees every event as it is published, under d.mu: the state it
// reads is the state the event tells of.
func (k *soak) observe(e events.Event) {
	switch e.Type {
	case events.TaskAssigned:
		if e.Reason == "reclaimed" { // a claim at Register holds a slot however many the worker lists
			return
		}
		// Invariant 3, at the moment it could break: an assignment takes a
		// free slot, so the worker holds at most Slots deliveries after it.
		s := k.d.sessionLocked(e.WorkerID)
		switch {
		case s == nil:
			k.breach("task %s attempt %d assigned to %s, which is not connected", e.TaskID, e.Attempt, e.WorkerID)
		case s.draining:
			k.breach("task %s attempt %d assigned to %s, which is draining", e.TaskID, e.Attempt, e.WorkerID)
		case len(s.inflight) > s.Slots:
			k.breach("task %s attempt %d assigned to %s (%s): %d deliveries held on %d slots",
				e.TaskID, e.Attempt, e.WorkerID, s.InstanceID, len(s.inflight), s.Slots)
		}
	case events.WorkerTimedOut:
		k.mu.Lock()
		k.timedOut = append(k.timedOut, e.WorkerID)
		k.mu.Unlock()
	case events.TaskRequeued, events.TaskFinished:
		if e.Reason == "no_result" || (e.Reason == "out_of_attempts" && strings.Contains(e.Detail, "sent no result")) {
			k.mu.Lock()
			k.gaveUp = append(k.gaveUp, e.WorkerID+"/"+e.TaskID)
			k.mu.Unlock()
		}
	}
}

// recordSent notes a delivery queued for a worker; invariant 5: never twice.
func (k *soak) recordSent(a *task.Assignment, workerID string) {
	dl := Delivery{TaskID: a.ID, Attempt: a.Attempt}
	k.mu.Lock()
	prev, twice := k.sent[dl]
	if !twice {
		k.sent[dl] = workerID
	}
	k.mu.Unlock()
	if twice {
		k.breach("delivery %d of task %s sent twice: to %s and to %s", dl.Attempt, dl.TaskID, prev, workerID)
	}
}

// pacer lets the sweeper set the pace: every tick (a move of the clock and
// a Sweep) wakes the workers and submitters once, so that workers heartbeat
// as often as the clock moves, as real ones do, and the load stays even.
type pacer struct {
	mu sync.Mutex // protects ch
	ch chan struct{}
}

func newPacer() *pacer { return &pacer{ch: make(chan struct{})} }

// next returns a channel closed at the next tick.
func (p *pacer) next() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ch
}

func (p *pacer) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.ch)
	p.ch = make(chan struct{})
}

// submitter submits a task on about every other tick: plain ones, keyed
// ones (keys repeat across submitters), and now and then a known key with
// another command, which must be refused. It asks the canceller to cancel
// something once in a while.
func (k *soak) submitter(r *rand.Rand, stop <-chan struct{}, cancels chan<- struct{}) {
	for {
		tick := k.pace.next()
		select {
		case <-stop:
			return
		case <-tick:
		}
		k.mu.Lock()
		full := len(k.ids) >= soakMaxTasks
		k.mu.Unlock()
		if full || r.IntN(2) == 0 {
			continue
		}
		sub := soakSubmission(r)
		key := ""
		switch n := r.IntN(100); {
		case n < 5:
			k.submitConflict(r)
			continue
		case n < 35:
			// A key stands for one request, which every submission of it
			// repeats whole: drawn from the key's own source, not r.
			i := r.IntN(soakKeys)
			sub = soakSubmission(rand.New(rand.NewPCG(k.seed, uint64(i))))
			key = fmt.Sprintf("key-%d", i)
			sub.Cmd, sub.IdempotencyKey = "echo "+key, key
		}
		tk, created, err := k.d.Submit(ctx, sub)
		if err != nil {
			k.breach("submit %+v: %v", sub, err)
			continue
		}
		k.count(map[bool]string{true: "submit_created", false: "submit_replayed"}[created])
		k.mu.Lock()
		k.ids = append(k.ids, tk.ID)
		prev, seen := k.keys[key]
		if key != "" && !seen {
			k.keys[key] = tk.ID
		}
		k.mu.Unlock()
		if key != "" && seen && prev != tk.ID {
			k.breach("idempotency key %s returned task %s, and %s before", key, tk.ID, prev)
		}
		if !created && key == "" {
			k.breach("a submission without a key replayed task %s", tk.ID)
		}
		if r.IntN(8) == 0 {
			select {
			case cancels <- struct{}{}:
			default:
			}
		}
	}
}

// soakSubmission draws a submission from r.
func soakSubmission(r *rand.Rand) Submission {
	sub := Submission{Cmd: fmt.Sprintf("echo %d", r.IntN(1000)), MaxAttempts: r.IntN(5), Priority: r.IntN(6)} // 0: the defaults, 3 and 3
	if r.IntN(2) == 0 {
		sub.Timeout = time.Duration(5+r.IntN(60)) * time.Second // else the default, 1h
	}
	// Scheduling: some tasks run later, retry failures, or need a
	// worker of the "gpu" pool (every other worker).
	if r.IntN(8) == 0 {
		sub.Delay = time.Duration(r.IntN(30)) * time.Second
	}
	if r.IntN(4) == 0 {
		sub.RetryOn, sub.Backoff = []task.Outcome{task.OutcomeFailed}, time.Duration(1+r.IntN(5))*time.Second
	}
	if r.IntN(5) == 0 {
		sub.Requires = map[string]string{"pool": "gpu"}
	}
	return sub
}

// submitConflict submits a used key with another command: ErrConflict, and
// nothing created.
func (k *soak) submitConflict(r *rand.Rand) {
	k.mu.Lock()
	key := fmt.Sprintf("key-%d", r.IntN(soakKeys))
	_, used := k.keys[key]
	k.mu.Unlock()
	if !used {
		return
	}
	tk, _, err := k.d.Submit(ctx, Submission{Cmd: "echo not " + key, IdempotencyKey: key})
	if !errors.Is(err, task.ErrConflict) {
		k.breach("key %s reused for another command: task %q, err %v; want ErrConflict", key, tk.ID, err)
	}
	k.count("submit_conflict")
}

// canceller cancels a random known task when a submitter asks.
func (k *soak) canceller(r *rand.Rand, stop <-chan struct{}, cancels <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-cancels:
		}
		k.mu.Lock()
		// Mostly a recent one, so that live tasks are canceled too, not
		// only final ones. A submitter asks after it added one.
		n := len(k.ids)
		id := k.ids[n-1-r.IntN(min(n, 10))]
		if r.IntN(4) == 0 {
			id = k.ids[r.IntN(n)]
		}
		k.mu.Unlock()
		tk, err := k.d.Cancel(ctx, id)
		switch {
		case err == nil:
			k.count("cancel")
			if tk.Status != task.StatusCanceled {
				k.breach("cancel %s answered status %s", id, tk.Status)
			}
		case errors.Is(err, task.ErrConflict):
			k.count("cancel_final")
			if !tk.Status.Final() {
				k.breach("cancel %s refused as final, but it is %s", id, tk.Status)
			}
		default:
			k.breach("cancel %s: %v", id, err)
		}
	}
}

// sweeper moves the clock (mostly a little, sometimes past every worker's
// lease), calls Sweep, and now and then steps the wall clock by an hour
// either way, checking that the step ends no lease early.
func (k *soak) sweeper(r *rand.Rand, stop <-chan struct{}) {
	ticker := time.NewTicker(soakTick) // the pace of the run, not a wait for anything
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		switch n := r.IntN(1000); {
		case n < 3:
			k.clk.Advance(workerTimeout + time.Duration(r.IntN(10_000))*time.Millisecond)
			k.count("clock_past_timeout")
		case n < 40:
			k.clk.Advance(time.Duration(1+r.IntN(4)) * time.Second)
		default:
			k.clk.Advance(time.Duration(r.IntN(300)) * time.Millisecond)
		}
		if r.IntN(40) == 0 {
			k.stepAndSweep(r)
		} else {
			k.d.Sweep()
		}
		k.pace.tick()
	}
}

// stepAndSweep steps the wall clock and sweeps, and checks that the sweep
// timed out no worker and gave up no delivery that the monotonic clock did
// not say was due: a wall-clock step moves timestamps and nothing else.
func (k *soak) stepAndSweep(r *rand.Rand) {
	d := k.d
	d.mu.Lock()
	mono := d.p.Mono()
	expiry := d.p.WorkerTimeout - d.SweepInterval()
	stale := make(map[string]bool) // workers whose lease may end within stepMargin
	due := make(map[string]bool)   // "worker/task": deliveries that may be given up within it
	for _, s := range d.rotation {
		if mono+stepMargin-s.seenMono > expiry {
			stale[s.WorkerID] = true
		}
		for id, h := range s.inflight {
			if mono+stepMargin >= h.deadline {
				due[s.WorkerID+"/"+id] = true
			}
		}
	}
	d.mu.Unlock()
	k.mu.Lock()
	timedOut, gaveUp := len(k.timedOut), len(k.gaveUp)
	k.mu.Unlock()

	step := time.Hour
	if r.IntN(2) == 0 {
		step = -step
	}
	k.clk.Step(step)
	d.Sweep()
	k.count("wall_step")
	if k.clk.Mono()-mono >= stepMargin {
		return // the others' clock readings moved time too far to tell
	}
	k.mu.Lock()
	lateWorkers, lateDeliveries := k.timedOut[timedOut:], k.gaveUp[gaveUp:]
	k.mu.Unlock()
	for _, w := range lateWorkers {
		if !stale[w] {
			k.breach("worker %s timed out by a sweep after a wall-clock step of %s, its lease not due", w, step)
		}
	}
	for _, g := range lateDeliveries {
		if !due[g] {
			k.breach("delivery %s given up by a sweep after a wall-clock step of %s, its deadline not due", g, step)
		}
	}
}

// simWorker is a worker process, as the master sees it through its
// session; one goroutine runs it.
type simWorker struct {
	k      *soak
	r      *rand.Rand
	id     string
	slots  int
	labels map[string]string

	gen      int // the process: its instance ID is id-gen
	s        *Session
	held     map[string]*holding // task ID -> the delivery this process runs, or holds the result of
	silent   bool                // paused or cut off: no heartbeats, no reports, until its lease ends
	draining bool
}

type holding struct {
	attempt  int
	on       *Session // where it was taken
	canceled bool     // the master told it to kill the run
	hung     bool     // never ends by itself: only a cancel ends it
	res      *task.Result
}

func (w *simWorker) instance() string { return fmt.Sprintf("%s-%d", w.id, w.gen) }

// register connects again: the same process listing what it holds, or
// (claim false) a new one, which holds nothing.
func (w *simWorker) register(claim bool) {
	if !claim {
		w.gen++
		clear(w.held)
	}
	var running []Delivery
	for id, h := range w.held {
		running = append(running, Delivery{TaskID: id, Attempt: h.attempt})
	}
	slices.SortFunc(running, func(a, b Delivery) int { return strings.Compare(a.TaskID, b.TaskID) })
	s, _, err := w.k.d.Register(ctx, Registration{WorkerID: w.id, InstanceID: w.instance(), Slots: w.slots, Running: running, Labels: w.labels})
	if err != nil {
		w.k.breach("register %s (%d claims): %v", w.instance(), len(running), err)
		return // keeps the ended session: the next step tries again
	}
	w.k.mu.Lock()
	w.k.sessions = append(w.k.sessions, s)
	w.k.mu.Unlock()
	w.s, w.silent, w.draining = s, false, false
	w.k.count(map[bool]string{true: "reconnect", false: "new_instance"}[claim])
}

func (w *simWorker) ended() bool {
	select {
	case <-w.s.Done():
		return true
	default:
		return false
	}
}

func (w *simWorker) run(stop <-chan struct{}) {
	for {
		tick := w.k.pace.next()
		w.step()
		select {
		case <-stop:
			return
		case <-tick:
		case <-w.s.Wake():
		}
	}
}

func (w *simWorker) step() {
	d := w.d()
	if w.ended() {
		// Timed out (or cut off): a paused process comes back restarted; a
		// live one reconnects with what it holds, or was restarted too.
		w.register(!w.silent && w.r.IntN(2) == 0)
		return
	}
	if w.silent {
		return
	}
	w.take()
	d.Heartbeat(w.id, w.instance(), nil) // false: the session ended, which the next step sees
	w.report(false)
	switch n := w.r.IntN(1000); {
	case n < 15: // the stream broke; the handler may notice before the worker reconnects, or after
		if w.r.IntN(2) == 0 {
			d.Unregister(w.s)
		}
		w.register(true)
	case n < 20:
		w.silent = true
		w.k.count("silent")
	case n < 23 && !w.draining:
		if _, err := d.Drain(w.id, w.instance()); err != nil && !errors.Is(err, task.ErrNotFound) { // not found: it just timed out
			w.k.breach("drain %s: %v", w.instance(), err)
		}
		w.draining = true
		w.k.count("drain")
	}
	if w.draining && (len(w.held) == 0 || w.r.IntN(20) == 0) {
		d.Unregister(w.s)
		w.register(w.r.IntN(2) == 0)
	}
}

func (w *simWorker) d() *Dispatcher { return w.k.d }

// take receives what the master queued for the worker. A second delivery
// of a task it runs already is ignored, as the agent does.
func (w *simWorker) take() {
	for _, m := range w.s.Take() {
		if m.Task == nil {
			if h := w.held[m.Cancel]; h != nil {
				h.canceled = true
			}
			continue
		}
		if err := m.Ready(ctx, nil); err != nil {
			w.k.breach("delivery %d of %s to %s: not stored: %v", m.Task.Attempt, m.Task.ID, w.id, err)
			continue
		}
		w.k.recordSent(m.Task, w.id)
		w.d().Sent(w.s, *m.Task) // as the stream handler does: the delivery's deadline runs
		if _, runs := w.held[m.Task.ID]; runs {
			w.k.count("second_delivery_ignored")
			continue
		}
		w.held[m.Task.ID] = &holding{attempt: m.Task.Attempt, on: w.s, hung: w.r.IntN(50) == 0}
	}
	// Invariant 3, as the worker sees it: what this session was sent and
	// not told to kill fits its slots. (A kill the master asked for may keep
	// its slot, so this may undercount; it never overcounts.)
	n := 0
	for _, h := range w.held {
		if h.on == w.s && !h.canceled && h.res == nil { // a reported one frees its slot, acknowledged or not
			n++
		}
	}
	if n > w.slots {
		w.k.breach("%s holds %d deliveries from its session on %d slots", w.instance(), n, w.slots)
	}
}

// report sends results: each delivery ends on a tick with some chance (a
// hung one only when killed), everything when all is true. A report is
// sometimes retried at once, and sometimes its acknowledgement is lost, so
// the worker keeps the result and reports it again later.
func (w *simWorker) report(all bool) {
	for _, id := range slices.Sorted(maps.Keys(w.held)) {
		h := w.held[id]
		if !all && (w.r.IntN(100) >= 35 || (h.hung && !h.canceled)) {
			continue
		}
		if h.res == nil {
			res := task.Result{TaskID: id, WorkerID: w.id, InstanceID: w.instance(), Attempt: h.attempt}
			switch n := w.r.IntN(100); {
			case h.canceled:
				res.Canceled, res.ExitCode, res.Error = true, -1, "killed"
			case n < 75:
			case n < 90:
				res.ExitCode = 1
			default:
				res.TimedOut, res.ExitCode, res.Error = true, -1, "timed out"
			}
			h.res = &res
		}
		h.res.InstanceID = w.instance()
		dup, err := w.d().Report(ctx, *h.res)
		if err != nil {
			w.k.breach("report of delivery %d of %s by %s: %v", h.attempt, id, w.instance(), err)
			delete(w.held, id)
			continue
		}
		w.k.count("report")
		if dup {
			w.k.count("report_duplicate")
		}
		if w.r.IntN(10) == 0 {
			again, err := w.d().Report(ctx, *h.res)
			if err != nil || again != dup {
				w.k.breach("retried report of delivery %d of %s: duplicate %v, err %v; first said duplicate %v", h.attempt, id, again, err, dup)
			}
			w.k.count("report_retried")
		}
		if !all && w.r.IntN(20) == 0 {
			w.k.count("report_ack_lost")
			continue
		}
		delete(w.held, id)
	}
}

// settle ends the run deterministically: the workers take what is queued
// for them and report everything they hold, then leave; healthy workers
// drain the queue while the clock passes every claim window and deadline.
func (k *soak) settle(workers []*simWorker) {
	d := k.d
	for _, w := range workers {
		if !w.ended() {
			// Draining first, so that the slots their reports free take
			// no new tasks.
			if _, err := d.Drain(w.id, w.instance()); err != nil {
				k.t.Fatalf("seed %d: drain %s: %v", k.seed, w.instance(), err)
			}
			w.take()
		}
	}
	for _, w := range workers {
		w.report(true)
		d.Unregister(w.s)
	}
	// What is left in an ended session's outbox never reached its worker,
	// but it was queued for it.
	k.mu.Lock()
	sessions := slices.Clone(k.sessions)
	k.mu.Unlock()
	for _, s := range sessions {
		for _, m := range s.Take() {
			if m.Task != nil {
				k.recordSent(m.Task, s.WorkerID)
			}
		}
	}

	var final []*Session
	for i := range 3 {
		id := fmt.Sprintf("final%d", i+1)
		s, _, err := d.Register(ctx, Registration{WorkerID: id, InstanceID: id, Slots: 4, Labels: map[string]string{"pool": "gpu"}})
		if err != nil {
			k.t.Fatalf("seed %d: register %s: %v", k.seed, id, err)
		}
		final = append(final, s)
	}
	const rounds = 200
	for round := 0; ; round++ {
		for _, s := range final {
			for msgs := s.Take(); len(msgs) > 0; msgs = s.Take() {
				for _, m := range msgs {
					if m.Task == nil {
						continue // it holds nothing: it reports every task as it gets it
					}
					if err := m.Ready(ctx, nil); err != nil {
						k.t.Fatalf("seed %d: delivery of %s not stored: %v", k.seed, m.Task.ID, err)
					}
					k.recordSent(m.Task, s.WorkerID)
					res := task.Result{TaskID: m.Task.ID, WorkerID: s.WorkerID, InstanceID: s.InstanceID, Attempt: m.Task.Attempt}
					if _, err := d.Report(ctx, res); err != nil {
						k.breach("settling: report of delivery %d of %s by %s: %v", m.Task.Attempt, m.Task.ID, s.WorkerID, err)
					}
				}
			}
		}
		st := d.Stats()
		if st.Queued == 0 && st.Running == 0 && st.Scheduled == 0 {
			k.t.Logf("settled in %d rounds", round)
			break
		}
		if round == rounds {
			// Invariant 2: nothing stuck.
			k.breach("not settled after %d rounds of %s each: %+v", rounds, workerTimeout, st)
			break
		}
		k.clk.Advance(workerTimeout)
		for _, s := range final {
			d.Heartbeat(s.WorkerID, s.InstanceID, nil)
		}
		d.Sweep()
	}
	d.Sweep() // forgets the final tasks whose writes are in
	if err := d.p.Store.Flush(ctx); err != nil {
		k.t.Fatalf("seed %d: flush: %v", k.seed, err)
	}
}

// check verifies, once settled, that no task is lost or stuck and that each
// task's history agrees with the deliveries that were sent.
func (k *soak) check() {
	d := k.d
	k.mu.Lock() // the run is over: nothing else reads or writes these now
	submitted, sent := slices.Clone(k.ids), maps.Clone(k.sent)
	k.mu.Unlock()
	if st := d.Stats(); st.Queued != 0 || st.Running != 0 || st.Scheduled != 0 {
		k.t.Errorf("seed %d: stuck: %d queued, %d running, %d scheduled at the end", k.seed, st.Queued, st.Running, st.Scheduled)
	}
	ids := make(map[string]bool)
	for _, id := range submitted {
		ids[id] = true
	}
	sentOf := make(map[string][]int) // task ID -> the attempts sent
	for dl := range sent {
		sentOf[dl.TaskID] = append(sentOf[dl.TaskID], dl.Attempt)
		if !ids[dl.TaskID] {
			k.t.Errorf("seed %d: delivery %d of %s sent, a task no submission returned", k.seed, dl.Attempt, dl.TaskID)
		}
	}
	bad, running := 0, 0
	fail := func(format string, args ...any) {
		if bad++; bad <= soakMaxBreaches {
			k.t.Errorf("seed %d: "+format, append([]any{k.seed}, args...)...)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		// Invariant 1: nothing lost, everything final, the dispatcher and
		// the store agreeing.
		got, err := d.Get(ctx, id)
		if err != nil {
			fail("task %s lost: %v", id, err)
			continue
		}
		if !got.Status.Final() {
			fail("task %s is still %s", id, got.Status)
		}
		t, err := d.p.Store.Get(ctx, id)
		if err != nil {
			fail("task %s not in the store: %v", id, err)
			continue
		}
		if t.Status != got.Status {
			fail("task %s is %s, but %s in the store", id, got.Status, t.Status)
		}
		for _, msg := range historyBreaches(t, sent, sentOf[id]) {
			fail("task %s (%s, %d/%d attempts): %s; history %s", id, t.Status, t.Attempts, t.MaxAttempts, msg, showHistory(t.History))
		}
		for _, a := range t.History {
			if a.Outcome == task.OutcomeRunning {
				running++
			}
		}
	}
	if bad > soakMaxBreaches {
		k.t.Errorf("seed %d: %d more task breaches not shown", k.seed, bad-soakMaxBreaches)
	}
	// A delivery whose task became final (canceled, or finished by another
	// delivery) and whose worker then vanished without a word stays
	// "running" in the history: nobody ever learns how it ended.
	k.t.Logf("%d tasks checked; %d attempts of final tasks never heard of again", len(ids), running)
}

// historyBreaches returns what is wrong with a final task's history (its
// invariant 4), given the deliveries that were sent, and the attempt
// numbers of the task's among them.
func historyBreaches(t task.Task, sent map[Delivery]string, sentOf []int) []string {
	var out []string
	if len(t.History) != t.Attempts {
		out = append(out, fmt.Sprintf("%d attempts in the history", len(t.History)))
	}
	if t.Attempts > t.MaxAttempts {
		out = append(out, "more attempts than allowed")
	}
	var decided []task.Attempt // results that counted: neither lost, running, nor duplicate
	for i, a := range t.History {
		if a.N != i+1 {
			out = append(out, fmt.Sprintf("attempt %d numbered %d", i+1, a.N))
		}
		switch w, ok := sent[Delivery{TaskID: t.ID, Attempt: a.N}]; {
		case !ok:
			out = append(out, fmt.Sprintf("attempt %d on %s was never sent", a.N, a.WorkerID))
		case w != a.WorkerID:
			out = append(out, fmt.Sprintf("attempt %d recorded on %s but sent to %s", a.N, a.WorkerID, w))
		}
		if a.Outcome != task.OutcomeRunning && a.Outcome != task.OutcomeLost && !a.Duplicate {
			decided = append(decided, a)
		}
	}
	if len(t.RetryOn) > 0 {
		// Results of outcomes the task retries counted without deciding
		// it, all but the last of them when the task ended so.
		last := -1
		if slices.Contains(t.RetryOn, task.Outcome(t.Status)) && !strings.HasPrefix(t.Error, "gave up") {
			for i, a := range decided {
				if a.Outcome == task.Outcome(t.Status) {
					last = i
				}
			}
		}
		var deciding []task.Attempt
		for i, a := range decided {
			if !slices.Contains(t.RetryOn, a.Outcome) || i == last {
				deciding = append(deciding, a)
			}
		}
		decided = deciding
	}
	for _, n := range sentOf {
		if n < 1 || n > len(t.History) {
			out = append(out, fmt.Sprintf("delivery %d sent to %s is not in the history", n, sent[Delivery{TaskID: t.ID, Attempt: n}]))
		}
	}
	switch gaveUp := t.Status == task.StatusFailed && strings.HasPrefix(t.Error, "gave up"); {
	case !t.Status.Final():
		out = append(out, "not final")
	case t.Status == task.StatusCanceled:
		// The delivery running when it was canceled reports how it ended:
		// killed, or finished first. That one result counts, no other.
		if len(decided) > 1 {
			out = append(out, fmt.Sprintf("%d results counted", len(decided)))
		}
	case gaveUp:
		if len(decided) != 0 {
			out = append(out, fmt.Sprintf("gave up, yet %d results counted", len(decided)))
		}
		if t.Attempts != t.MaxAttempts {
			out = append(out, "gave up before its last attempt")
		}
	case len(decided) != 1:
		out = append(out, fmt.Sprintf("%d results counted, want 1", len(decided)))
	case decided[0].Outcome != task.Outcome(t.Status):
		out = append(out, fmt.Sprintf("decided by a result %s", decided[0].Outcome))
	case decided[0].WorkerID != t.WorkerID:
		out = append(out, fmt.Sprintf("decided by %s's result but shows %s", decided[0].WorkerID, t.WorkerID))
	case t.ExitCode == nil || decided[0].ExitCode == nil || *t.ExitCode != *decided[0].ExitCode:
		out = append(out, "exit code differs from its deciding result's")
	}
	if t.Status == task.StatusSucceeded && (t.ExitCode == nil || *t.ExitCode != 0) {
		out = append(out, "succeeded without exit code 0")
	}
	return out
}

func showHistory(h []task.Attempt) string {
	var parts []string
	for _, a := range h {
		s := fmt.Sprintf("#%d %s %s", a.N, a.WorkerID, a.Outcome)
		if a.Duplicate {
			s += " (duplicate)"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Found by TestSoak: a worker that comes back running a delivery the master
// has replaced (its task was re-queued and sent elsewhere) keeps running it,
// holding a slot; should it report a kill of it (one the master ordered
// when it gave the delivery up), that is no result of the task: the task
// goes on with the delivery that replaced it.
func TestKillOfAReplacedDeliveryLeavesTheTaskRunning(t *testing.T) {
	d, clk := newTest(t)
	a := register(t, d, "a", 1)
	id := submit(t, d, 1)[0]
	drain(a)
	lose(d, clk, a) // a's stream closed and it did not come back in time: re-queued
	b := register(t, d, "b", 1)
	if got := drain(b); len(got) != 1 || got[0] != id {
		t.Fatalf("b got %v, want attempt 2 of %s", got, id)
	}
	// a reconnects, still running attempt 1: it races b, in one of its slots.
	a2, _, err := d.Register(ctx, Registration{WorkerID: "a", InstanceID: a.InstanceID, Slots: 1, Running: []Delivery{{TaskID: id, Attempt: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, cancels := take(a2); len(cancels) != 0 {
		t.Fatalf("a was told to cancel %v; want its run to race b's", cancels)
	}
	if ws := d.Workers(); ws[len(ws)-1].ID != "a" || ws[len(ws)-1].Running != 1 {
		t.Fatalf("workers %+v; want a's run holding its slot", ws)
	}
	// A kill of it, had the master ordered one, is no result.
	if _, err := d.Report(ctx, task.Result{TaskID: id, WorkerID: "a", InstanceID: a.InstanceID, Attempt: 1, ExitCode: -1, Canceled: true, Error: "killed"}); err != nil {
		t.Fatal(err)
	}
	if tk, _ := d.Get(ctx, id); tk.Status != task.StatusRunning || tk.WorkerID != "b" {
		t.Errorf("task is %s on %q after the kill the master ordered; want still running on b: nobody canceled it", tk.Status, tk.WorkerID)
	}
	if _, cancels := take(b); len(cancels) != 0 {
		t.Errorf("b, running the live delivery, was told to cancel %v", cancels)
	}
}
