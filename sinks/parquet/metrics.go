package parquet

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the archiver's.
type Metrics struct {
	files, rows *prometheus.CounterVec
	skipped     prometheus.Counter
	rollSeconds prometheus.Histogram
	// rollFailures counts failed roll attempts; writeFailing is 1 while
	// the archive cannot write (a full disk).
	rollFailures prometheus.Counter
	writeFailing prometheus.Gauge
}

// NewMetrics registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		files: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "archive", Name: "files_total",
			Help: "Parquet files written, by dataset."}, []string{"dataset"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "archive", Name: "rows_total",
			Help: "Rows written, by dataset."}, []string{"dataset"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "archive", Name: "records_skipped_total",
			Help: "Records on the archived topics that could not be read."}),
		rollSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "archive", Name: "roll_seconds",
			Help: "Time to write one roll's files."}),
		rollFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "archive", Name: "roll_failures_total",
			Help: "Roll attempts that failed (a full disk); each is retried."}),
		writeFailing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "walletsync", Subsystem: "archive", Name: "write_failing",
			Help: "1 while the archive cannot write its files and retries its roll."}),
	}
	reg.MustRegister(m.files, m.rows, m.skipped, m.rollSeconds, m.rollFailures, m.writeFailing)
	return m
}
