package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walletsync/walletsync"
)

// Metrics are the ingest's Prometheus metrics.
type Metrics struct {
	accepted        *prometheus.CounterVec // by source
	waiting         *prometheus.CounterVec // by source
	rejected        *prometheus.CounterVec // by source and field
	authFailures    *prometheus.CounterVec // by source
	ignored         prometheus.Counter
	produceFailures prometheus.Counter
	produceSeconds  prometheus.Histogram
	bodiesRefused   *prometheus.CounterVec // by source and reason
	bodyBytes       *prometheus.GaugeVec   // by budget
}

// NewMetrics registers the ingest metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "events_accepted_total",
			Help: "Events acknowledged by Kafka, by source (api, webhook, connector)."}, []string{"source"}),
		waiting: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "events_waiting_total",
			Help: "Accepted events that named their pass but no customer, kept on wallet.passes until the pass's customer is known (also counted as accepted), by source."}, []string{"source"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "events_rejected_total",
			Help: "Events rejected, by source and the field at fault."}, []string{"source", "field"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "auth_failures_total",
			Help: "Requests refused for a missing or wrong credential, by source."}, []string{"source"}),
		ignored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "webhooks_ignored_total",
			Help: "Webhook deliveries of event types other than Pass:Installed/Uninstalled."}),
		produceFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "produce_failures_total",
			Help: "Events Kafka did not acknowledge (the request got 503)."}),
		produceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "produce_seconds",
			Help: "Time from publishing a request's events to Kafka's acknowledgement.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		bodiesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "bodies_refused_total",
			Help: "Request bodies refused before they were parsed, by source and reason: busy (503, the body budget was full), timeout (408), too_large (413), encoding (415), unreadable (400)."}, []string{"source", "reason"}),
		bodyBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "walletsync", Subsystem: "ingest", Name: "body_bytes_reserved",
			Help: "Bytes of request bodies being read or handled, by budget (small, open: unauthenticated; trusted)."}, []string{"budget"}),
	}
	reg.MustRegister(m.accepted, m.waiting, m.rejected, m.authFailures, m.ignored, m.produceFailures, m.produceSeconds, m.bodiesRefused, m.bodyBytes)
	return m
}

func (m *Metrics) reject(source string, err error) {
	field := "payload"
	var ve *walletsync.ValidationError
	if errors.As(err, &ve) {
		field = ve.Field
	}
	m.rejected.WithLabelValues(source, field).Inc()
}
