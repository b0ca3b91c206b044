// Package metrics is the worker's Prometheus instrumentation, on a registry
// of its own, served on WORKER_METRICS_ADDR. It implements agent.Observer.
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the worker's collectors.
type Metrics struct {
	reg        *prometheus.Registry
	tasks      *prometheus.CounterVec
	runTime    prometheus.Histogram
	reconnects prometheus.Counter
	registered atomic.Bool // a first registration happened: the next ones are reconnects
}

// New registers the worker's metrics, the Go runtime's and the process's.
// connected is read on every scrape.
func New(connected func() bool) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roundhouse_worker_tasks_total",
			Help: "Task runs this worker finished, by outcome (succeeded, failed, timed_out, canceled).",
		}, []string{"outcome"}),
		runTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roundhouse_worker_task_run_seconds",
			Help:    "How long task runs on this worker took.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roundhouse_worker_reconnects_total",
			Help: "Registrations with the master after the first one.",
		}),
	}
	for _, o := range []string{"succeeded", "failed", "timed_out", "canceled"} {
		m.tasks.WithLabelValues(o) // shown as 0 before the first run, so rates start right
	}
	m.reg.MustRegister(m.tasks, m.runTime, m.reconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roundhouse_worker_connected", Help: "1 while the master has accepted this worker's registration, else 0.",
		}, func() float64 {
			if connected() {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registered counts a registration; every one after the first is a reconnect.
func (m *Metrics) Registered() {
	if m.registered.Swap(true) {
		m.reconnects.Inc()
	}
}

// TaskDone counts a finished run.
func (m *Metrics) TaskDone(outcome string, ran time.Duration) {
	m.tasks.WithLabelValues(outcome).Inc()
	m.runTime.Observe(ran.Seconds())
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
