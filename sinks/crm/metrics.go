package crm

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the CRM sinks' metrics, labelled by destination.
type Metrics struct {
	delivered, retries, deadLettered, coalesced *prometheus.CounterVec
	requests, slowRequests                      *prometheus.CounterVec
	pending                                     *prometheus.GaugeVec
	delay, requestSeconds                       *prometheus.HistogramVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "crm", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		delivered:    counter("delivered_total", "Status versions a CRM acknowledged.", "destination"),
		retries:      counter("retries_total", "Deliveries scheduled again after a failure.", "destination"),
		deadLettered: counter("dead_lettered_total", "Items written to wallet.crm.dlq (refused, or out of retries).", "destination"),
		coalesced:    counter("coalesced_total", "Writes saved: versions superseded by a newer one before delivery, or flaps that settled back to what the CRM has.", "destination"),
		requests:     counter("requests_total", "Requests to the CRM by outcome: ok, partial, failed (retryable), refused (permanent).", "destination", "outcome"),
		slowRequests: counter("slow_requests_total", "First attempts that ran past the slow threshold and moved to the retry lane, freeing their slot.", "destination"),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "walletsync", Subsystem: "crm", Name: "pending_customers",
			Help: "Customers with a version waiting or in flight."}, []string{"destination"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "crm", Name: "delivery_delay_seconds",
			Help:    "From the status record's write to the CRM's acknowledgement (settle window included).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600}}, []string{"destination"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "crm", Name: "request_seconds",
			Help: "Duration of one request to the CRM.", Buckets: prometheus.DefBuckets}, []string{"destination"}),
	}
	reg.MustRegister(m.pending, m.delay, m.requestSeconds)
	return m
}

type destMetrics struct {
	delivered, retries, deadLettered, coalesced prometheus.Counter
	slowRequests                                prometheus.Counter
	requests                                    *prometheus.CounterVec
	pending                                     prometheus.Gauge
	delay, requestSeconds                       prometheus.Observer
}

func (m *Metrics) forDestination(dest string) *destMetrics {
	l := prometheus.Labels{"destination": dest}
	return &destMetrics{
		delivered: m.delivered.With(l), retries: m.retries.With(l), deadLettered: m.deadLettered.With(l), coalesced: m.coalesced.With(l),
		slowRequests: m.slowRequests.With(l),
		requests:     m.requests.MustCurryWith(l), pending: m.pending.With(l),
		delay: m.delay.With(l), requestSeconds: m.requestSeconds.With(l),
	}
}

// Retries is the retry counter of a destination (for tests and bench).
func (m *Metrics) Retries(dest string) prometheus.Counter { return m.retries.WithLabelValues(dest) }

// Coalesced is the saved-writes counter of a destination.
func (m *Metrics) Coalesced(dest string) prometheus.Counter { return m.coalesced.WithLabelValues(dest) }

// DeadLettered is the DLQ counter of a destination.
func (m *Metrics) DeadLettered(dest string) prometheus.Counter {
	return m.deadLettered.WithLabelValues(dest)
}

// SlowRequests counts a destination's first attempts moved to the retry
// lane for running past the slow threshold.
func (m *Metrics) SlowRequests(dest string) prometheus.Counter {
	return m.slowRequests.WithLabelValues(dest)
}
