package parquet

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the archiver's.
type Metrics struct {
	files, rows *prometheus.CounterVec
	skipped     prometheus.Counter
	rollSeconds prometheus.Histogram
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
	}
	reg.MustRegister(m.files, m.rows, m.skipped, m.rollSeconds)
	return m
}
