// Package metrics is the master's Prometheus instrumentation, on a registry
// of its own: counters and histograms follow the dispatcher's events
// synchronously (so they are exact, unlike a lossy stream reader), gauges
// read the dispatcher's counts when scraped.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Metrics holds the master's collectors.
type Metrics struct {
	reg       *prometheus.Registry
	submitted prometheus.Counter
	finished  *prometheus.CounterVec
	requeues  *prometheus.CounterVec
	timeouts  prometheus.Counter
	latency   prometheus.Histogram
	runTime   prometheus.Histogram
}

// Stats reads the live counts behind the gauges.
type Stats func() dispatch.Stats

// New registers the master's metrics, the Go runtime's and the process's on
// a fresh registry. stats is called once on every scrape.
func New(stats Stats) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roundhouse_tasks_submitted_total", Help: "Tasks accepted by the master.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roundhouse_tasks_finished_total",
			Help: "Tasks that reached a final status, by status and by the worker that ran them last (empty if none did, or for a task canceled while it was not running).",
		}, []string{"status", "worker"}),
		requeues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roundhouse_task_requeues_total",
			Help: "Tasks taken back from a worker and queued again, by reason (worker_timed_out, worker_drained, worker_replaced, not_reclaimed: its worker went away and did not claim it in time or came back without it, no_result: no result within the task's timeout plus grace, killed: its worker reported the kill of a delivery the master had given up).",
		}, []string{"reason"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roundhouse_worker_timeouts_total", Help: "Workers dropped for sending no heartbeat within MASTER_WORKER_TIMEOUT.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roundhouse_dispatch_latency_seconds",
			Help:    "Time from a task being queued (or re-queued) to its assignment to a worker.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		runTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roundhouse_task_run_seconds",
			Help:    "Time a task ran on its worker, for tasks a worker reported a result for.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
	}
	m.reg.MustRegister(
		m.submitted, m.finished, m.requeues, m.timeouts, m.latency, m.runTime,
		&gauges{stats: stats},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// gauges reads the dispatcher's counts once per scrape, so the gauges of
// one scrape agree: the depths by priority add up to the queue depth.
type gauges struct {
	stats Stats
}

var (
	queueDepth = prometheus.NewDesc("roundhouse_queue_depth", "Tasks waiting for a worker.", nil, nil)
	byPriority = prometheus.NewDesc("roundhouse_queue_depth_by_priority",
		"Tasks waiting for a worker, by priority (1 most urgent, to 5); a free worker takes the most urgent it can run.", []string{"priority"}, nil)
	scheduled = prometheus.NewDesc("roundhouse_tasks_scheduled", "Tasks waiting for their run time: delayed, or backing off before a retry.", nil, nil)
	inflight  = prometheus.NewDesc("roundhouse_tasks_inflight", "Tasks assigned to a worker and not finished.", nil, nil)
	connected = prometheus.NewDesc("roundhouse_workers_connected", "Workers in the rotation.", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueDepth, byPriority, scheduled, inflight, connected} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	s := g.stats()
	gauge := func(d *prometheus.Desc, n int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n), labels...)
	}
	gauge(queueDepth, s.Queued)
	for i, n := range s.ByPriority {
		gauge(byPriority, n, strconv.Itoa(i+task.MinPriority))
	}
	gauge(scheduled, s.Scheduled)
	gauge(inflight, s.Running)
	gauge(connected, s.Workers)
}

// Observe updates the counters and histograms for one event. It is quick
// and never blocks, as events.Hub.Observe requires.
func (m *Metrics) Observe(e events.Event) {
	switch e.Type {
	case events.TaskQueued, events.TaskScheduled:
		// Counted once, when submitted: a scheduled task queued when due,
		// a retry waiting out its backoff and a task retried by hand carry
		// a reason other than these.
		if e.Reason == "" || e.Reason == "delayed" {
			m.submitted.Inc()
		}
	case events.TaskAssigned:
		if e.WaitSeconds != nil { // a reclaimed task was not waiting in the queue
			m.latency.Observe(*e.WaitSeconds)
		}
	case events.TaskFinished, events.TaskCanceled:
		m.finished.WithLabelValues(e.Status, e.WorkerID).Inc()
		if e.RunSeconds != nil {
			m.runTime.Observe(*e.RunSeconds)
		}
	case events.TaskRequeued:
		m.requeues.WithLabelValues(e.Reason).Inc()
	case events.WorkerTimedOut:
		m.timeouts.Inc()
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry behind Handler, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// LiveOutput registers roundhouse_live_output_bytes_total, read from
// received (the live buffers' count) when scraped, so that Append pays
// for no metric of its own. Call it once, before serving.
func (m *Metrics) LiveOutput(received func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "roundhouse_live_output_bytes_total",
		Help: "Bytes of live task output taken from workers (StreamOutput chunks of current deliveries).",
	}, func() float64 { return float64(received()) }))
}

// Store registers roundhouse_store_commits_total and
// roundhouse_store_writes_total, read from counts when scraped: their
// ratio is the size of the store's group commits. Call it once, before
// serving.
func (m *Metrics) Store(counts func() store.Counts) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roundhouse_store_commits_total",
			Help: "Transactions the store's writer committed to disk (each one fsync).",
		}, func() float64 { return float64(counts().Commits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roundhouse_store_writes_total",
			Help: "Task and attempt changes those transactions committed; divided by the commits, the size of a group commit.",
		}, func() float64 { return float64(counts().Writes) }),
	)
}
