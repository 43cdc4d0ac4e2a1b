package passapi

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the backfill's.
type Metrics struct {
	passes, skipped      prometheus.Counter
	issued               prometheus.Counter
	observations, runs   *prometheus.CounterVec
	lastRun, lastSuccess prometheus.Gauge
}

// NewMetrics registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "walletsync", Subsystem: "backfill", Name: name, Help: help}
	}
	m := &Metrics{
		passes:       prometheus.NewCounter(prometheus.CounterOpts(opts("passes_scanned_total", "Passes read from the Pass API."))),
		skipped:      prometheus.NewCounter(prometheus.CounterOpts(opts("passes_skipped_total", "Passes that name no customer (by --customer-key) or do not make valid events."))),
		observations: prometheus.NewCounterVec(prometheus.CounterOpts(opts("observations_total", "Observed events written, by platform and installed.")), []string{"platform", "installed"}),
		issued:       prometheus.NewCounter(prometheus.CounterOpts(opts("issued_total", "Issued events written: passes whose listing gives a creation date."))),
		runs:         prometheus.NewCounterVec(prometheus.CounterOpts(opts("runs_total", "Backfill runs by outcome.")), []string{"outcome"}),
		lastRun:      prometheus.NewGauge(prometheus.GaugeOpts(opts("last_run_seconds", "Duration of the last run."))),
		lastSuccess:  prometheus.NewGauge(prometheus.GaugeOpts(opts("last_success_timestamp_seconds", "When the last successful run ended."))),
	}
	reg.MustRegister(m.passes, m.skipped, m.issued, m.observations, m.runs, m.lastRun, m.lastSuccess)
	return m
}
