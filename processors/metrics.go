package processors

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the processors' Prometheus metrics. Event counts are added
// only once their transaction commits, so they never count work that was
// rolled back and redone.
type Metrics struct {
	events, duplicates, statuses prometheus.Counter
	rejected, drift              *prometheus.CounterVec
	deviceRemovals               *prometheus.CounterVec
	commits, aborts              prometheus.Counter
	checkpoints, stateRecords    prometheus.Counter
	holders                      prometheus.Counter
	replayed                     prometheus.Counter
	sessionRestarts, loads       prometheus.Counter
	txnSeconds, loadSeconds      prometheus.Histogram
}

// NewMetrics registers the processors' metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	c := func(name, help string) prometheus.Counter {
		m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "process", Name: name, Help: help})
		reg.MustRegister(m)
		return m
	}
	m := &Metrics{
		events:          c("events_total", "Deduplicated valid events folded and written to the clean topic."),
		duplicates:      c("duplicates_total", "Events dropped as duplicates of an earlier eventId."),
		statuses:        c("statuses_total", "Status records emitted (a customer's status changed)."),
		commits:         c("transactions_committed_total", "Transactions committed."),
		checkpoints:     c("checkpoints_total", "Partition checkpoints committed to wallet.state."),
		stateRecords:    c("state_records_total", "Customer state records committed to wallet.state at checkpoints."),
		holders:         c("holders_taught_total", "Holder records written to wallet.passes: the first event of a pass for a customer (SPEC §6 identity repair)."),
		replayed:        c("replayed_events_total", "Clean events folded again while loading a partition, from its last checkpoint on."),
		aborts:          c("transactions_aborted_total", "Transactions aborted; their records are processed again."),
		sessionRestarts: c("session_restarts_total", "Group sessions restarted after a fatal error."),
		loads:           c("partition_loads_total", "Partition states rebuilt from Kafka."),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "process", Name: "rejected_total",
			Help: "Records sent to the DLQ, by the field that broke the contract."}, []string{"field"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "process", Name: "drift_repaired_total",
			Help: "Observed (backfill) events that changed a customer's status: drift between the events and the Pass API, repaired, by platform."}, []string{"platform"}),
		deviceRemovals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "process", Name: "device_removals_total",
			Help: "Uninstalls that removed the pass from one device while another still holds it: they leave the status installed (SPEC §3), by platform."}, []string{"platform"}),
		txnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "process", Name: "transaction_end_seconds",
			Help: "Time to flush and end a transaction.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		loadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "process", Name: "partition_load_seconds",
			Help: "Time to rebuild a partition's state.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	reg.MustRegister(m.rejected, m.drift, m.deviceRemovals, m.txnSeconds, m.loadSeconds)
	return m
}

// ResolverMetrics are the resolver's Prometheus metrics; counts are added
// once their transaction commits.
type ResolverMetrics struct {
	resolved, expired, invalid, holderChanges prometheus.Counter
	aborts, sessionRestarts, loads            prometheus.Counter
	waiting, holders                          prometheus.Gauge
	waited                                    prometheus.Histogram
}

// NewResolverMetrics registers the resolver's metrics with reg.
func NewResolverMetrics(reg prometheus.Registerer) *ResolverMetrics {
	c := func(name, help string) prometheus.Counter {
		m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "resolve", Name: name, Help: help})
		reg.MustRegister(m)
		return m
	}
	g := func(name, help string) prometheus.Gauge {
		m := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "walletsync", Subsystem: "resolve", Name: name, Help: help})
		reg.MustRegister(m)
		return m
	}
	m := &ResolverMetrics{
		resolved:        c("events_resolved_total", "Waiting events written to wallet.events under their pass's customer, once it became known."),
		expired:         c("events_expired_total", "Waiting events sent to wallet.events.dlq: no customer became known for their pass within the expiry."),
		invalid:         c("events_invalid_total", "Waiting events sent to wallet.events.dlq because they are no valid event even with their customer."),
		holderChanges:   c("holder_changes_total", "Passes that changed hands: a holder record named another customer than the pass's holder."),
		aborts:          c("transactions_aborted_total", "Transactions aborted; their records are processed again."),
		sessionRestarts: c("session_restarts_total", "Group sessions restarted after a fatal error."),
		loads:           c("partition_loads_total", "Partitions of wallet.passes read from the start to rebuild the state."),
		waiting:         g("events_waiting", "Events waiting for their pass's customer, in the partitions this process owns."),
		holders:         g("passes_held", "Passes whose holder is known, in the partitions this process owns."),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "resolve", Name: "wait_seconds",
			Help: "How long a resolved event waited for its pass's customer.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 14)}),
	}
	reg.MustRegister(m.waited)
	return m
}
