package passapi

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the backfill's.
type Metrics struct {
	passes, skipped      prometheus.Counter
	issued               prometheus.Counter
	observations, runs   *prometheus.CounterVec
	lastRun, lastSuccess prometheus.Gauge
	// The reconciliation: passes by drift kind, the agreeing ones, and
	// the last finished run's drift (what an alert compares with 0).
	drift     *prometheus.CounterVec
	agreeing  prometheus.Counter
	lastDrift *prometheus.GaugeVec
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
		drift:        prometheus.NewCounterVec(prometheus.CounterOpts(opts("drift_total", "Listed passes the pipeline disagreed with, by kind (missedInstall, missedUninstall, unknownPass, identityResolved, identityChanged).")), []string{"kind"}),
		agreeing:     prometheus.NewCounter(prometheus.CounterOpts(opts("agreeing_total", "Listed passes the pipeline agreed with."))),
		lastDrift:    prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("last_run_drift", "Drift of the last finished run, by kind.")), []string{"kind"}),
	}
	for _, k := range Kinds {
		// Every kind is exported from the start, at 0.
		m.drift.WithLabelValues(k)
		m.lastDrift.WithLabelValues(k)
	}
	reg.MustRegister(m.passes, m.skipped, m.issued, m.observations, m.runs, m.lastRun, m.lastSuccess, m.drift, m.agreeing, m.lastDrift)
	return m
}
