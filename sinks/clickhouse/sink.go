package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
)

// DefaultGroup is the ClickHouse sink's consumer group.
const DefaultGroup = "walletsync-clickhouse"

// SinkConfig configures a Sink.
type SinkConfig struct {
	Brokers       []string
	Topics        kafka.Topics
	Group         string
	BatchRows     int           // flush at this many records (default 50,000)
	BatchInterval time.Duration // or this long after the first (default 1 s)
	Logger        *slog.Logger
	Metrics       *SinkMetrics
}

// Sink copies wallet.events.clean and wallet.status into ClickHouse. It is
// at-least-once by construction — offsets are committed only after
// ClickHouse acknowledged the rows — and exactly-once in query results,
// because a re-inserted row has the same sorting key as its first copy
// (see the migrations) and queries read one row per key.
type Sink struct {
	cfg  SinkConfig
	conn driver.Conn
	log  *slog.Logger
	m    *SinkMetrics
}

// NewSink returns a sink writing through conn.
func NewSink(cfg SinkConfig, conn driver.Conn) *Sink {
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 50_000
	}
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewSinkMetrics(prometheus.NewRegistry())
	}
	return &Sink{cfg: cfg, conn: conn, log: cfg.Logger, m: cfg.Metrics}
}

// Run consumes until ctx ends.
func (s *Sink) Run(ctx context.Context) error {
	if _, err := Migrate(ctx, s.conn); err != nil {
		return fmt.Errorf("clickhouse sink: %w", err)
	}
	t := s.cfg.Topics
	cl, err := kgo.NewClient(append(kafka.ClientOpts(s.cfg.Brokers, "walletsync-clickhouse"),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(t.Clean, t.Status),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		// Transaction markers are kept and committed past, so that the
		// group's offsets reach the end of the topics and its lag in
		// /v1/pipeline can be zero; add skips them.
		kgo.KeepControlRecords(),
		// A rebalance waits until the batch in hand is written and its
		// offsets committed, so no other member writes it again.
		kgo.BlockRebalanceOnPoll(),
	)...)
	if err != nil {
		return fmt.Errorf("clickhouse sink: %w", err)
	}
	defer cl.Close()
	// Runs before Close: leaving the group needs the rebalance that a
	// poll left blocked.
	defer cl.AllowRebalance()

	// Batches are inserted by a writer while the next one is polled; at
	// most one waits behind the one being written, so memory is bounded
	// and a slow ClickHouse still holds the poller back. Each batch's
	// offsets are committed after its insert, in order.
	type job struct {
		b    *batch
		offs map[string]map[int32]kgo.EpochOffset
	}
	jobs := make(chan job, 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for j := range jobs {
			if err := s.flush(ctx, j.b); err != nil {
				return // ctx ended while retrying
			}
			cl.CommitOffsetsSync(ctx, j.offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					// The rows are in ClickHouse; if the commit is lost
					// they are written again later and collapse.
					s.log.Warn("clickhouse sink offset commit failed", "err", err)
				}
			})
		}
	}()
	defer func() {
		close(jobs)
		<-writerDone
	}()

	b := &batch{}
	first := time.Time{}
	for {
		pollCtx := ctx
		var cancel context.CancelFunc = func() {}
		if !first.IsZero() {
			pollCtx, cancel = context.WithDeadline(ctx, first.Add(s.cfg.BatchInterval))
		}
		fs := cl.PollRecords(pollCtx, s.cfg.BatchRows-b.len())
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.log.Warn("clickhouse sink fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if first.IsZero() {
				first = time.Now()
			}
			b.add(r, t, s.m)
		})
		// A batch of only markers is committed too, so the lag reaches 0.
		if !first.IsZero() && (b.len() >= s.cfg.BatchRows || time.Since(first) >= s.cfg.BatchInterval) {
			select {
			case jobs <- job{b: b, offs: cl.UncommittedOffsets()}:
			case <-ctx.Done():
				return nil
			case <-writerDone:
				return nil
			}
			b = &batch{}
			first = time.Time{}
		}
		cl.AllowRebalance()
	}
}

// flush writes the batch, retrying with backoff until ClickHouse takes it or
// ctx ends. While it retries nothing more is polled: that is the backpressure.
func (s *Sink) flush(ctx context.Context, b *batch) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := s.write(ctx, b)
		if err == nil {
			s.m.rows.WithLabelValues("wallet_events").Add(float64(len(b.events)))
			s.m.rows.WithLabelValues("wallet_status_versions").Add(float64(len(b.statuses)))
			s.m.insertSeconds.Observe(time.Since(start).Seconds())
			return nil
		}
		s.m.retries.Inc()
		s.log.Warn("clickhouse insert failed; retrying", "attempt", attempt, "backoff", backoff.String(), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Sink) write(ctx context.Context, b *batch) error {
	if err := InsertEvents(ctx, s.conn, b.events); err != nil {
		return err
	}
	return InsertStatuses(ctx, s.conn, b.statuses)
}

// InsertEvents writes events to wallet_events in one batch.
func InsertEvents(ctx context.Context, conn driver.Conn, events []walletsync.Event) error {
	if len(events) == 0 {
		return nil
	}
	ins, err := conn.PrepareBatch(ctx, insertEvents)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range events {
		e := &events[i]
		var medium, origin, ua string
		var tags []string
		if r := e.Registration; r != nil {
			medium, origin, ua, tags = r.Medium, r.Origin, r.UserAgent, r.Tags
		}
		if tags == nil {
			tags = []string{}
		}
		installed := uint8(0)
		if e.Installed {
			installed = 1
		}
		if err := ins.Append(e.ID, e.Type.String(), e.Platform.String(), e.CustomerID, e.PassID, e.PassType,
			time.UnixMilli(e.OccurredAt).UTC(), e.OccurredAt, installed, e.InstalledAt,
			e.Source, medium, origin, ua, tags, now); err != nil {
			return err
		}
	}
	return ins.Send()
}

// InsertStatuses writes status records to wallet_status_versions and
// wallet_status_current, one batch each.
func InsertStatuses(ctx context.Context, conn driver.Conn, statuses []walletsync.Status) error {
	if len(statuses) == 0 {
		return nil
	}
	for _, q := range []string{insertVersions, insertCurrent} {
		ins, err := conn.PrepareBatch(ctx, q)
		if err != nil {
			return err
		}
		for i := range statuses {
			st := &statuses[i]
			args := []any{st.CustomerID, st.Version, st.Wallet.String(), st.AppleInstalledAt, st.GoogleInstalledAt, st.LastChangedAt, lastEvent(st.LastEvent)}
			if q == insertVersions {
				args = append(args, time.UnixMilli(st.LastChangedAt).UTC())
			}
			if err := ins.Append(args...); err != nil {
				return err
			}
		}
		if err := ins.Send(); err != nil {
			return err
		}
	}
	return nil
}

func lastEvent(l walletsync.LastEvent) string {
	if l == walletsync.LastUninstalled {
		return "uninstalled"
	}
	return "installed"
}

// Explicit column lists: ClickHouse 18.16 needs them for batches.
const (
	insertEvents = `INSERT INTO wallet_events (event_id, type, platform, customer_id, pass_id, pass_type,
	occurred_at, occurred_ms, installed, installed_at_ms, source, medium, origin, user_agent, tags, ingested_at)`
	insertVersions = `INSERT INTO wallet_status_versions (customer_id, version, wallet_status,
	apple_installed_at_ms, google_installed_at_ms, last_changed_at_ms, last_event, last_changed_at)`
	insertCurrent = `INSERT INTO wallet_status_current (customer_id, version, wallet_status,
	apple_installed_at_ms, google_installed_at_ms, last_changed_at_ms, last_event)`
)

type batch struct {
	events   []walletsync.Event
	statuses []walletsync.Status
	dec      walletsync.Decoder
}

func (b *batch) len() int { return len(b.events) + len(b.statuses) }

// add turns a record into a row. Records that do not parse cannot come from
// the processors; they are counted and skipped rather than blocking the sink
// forever (the processors' DLQ is where bad input goes).
func (b *batch) add(r *kgo.Record, t kafka.Topics, m *SinkMetrics) {
	if r.Attrs.IsControl() {
		return
	}
	switch r.Topic {
	case t.Clean:
		e, err := b.dec.Parse(r.Value)
		if err != nil {
			m.skipped.Inc()
			return
		}
		b.events = append(b.events, e)
	case t.Status:
		if r.Value == nil {
			return
		}
		id, v, regs, err := walletsync.ParseStatusRecord(r.Value)
		if err != nil {
			m.skipped.Inc()
			return
		}
		b.statuses = append(b.statuses, walletsync.Status{CustomerID: id, Fields: walletsync.FieldsOf(regs), Version: v})
	}
}

// SinkMetrics are the ClickHouse sink's Prometheus metrics.
type SinkMetrics struct {
	rows          *prometheus.CounterVec
	retries       prometheus.Counter
	skipped       prometheus.Counter
	insertSeconds prometheus.Histogram
}

// NewSinkMetrics registers the sink's metrics with reg.
func NewSinkMetrics(reg prometheus.Registerer) *SinkMetrics {
	m := &SinkMetrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "rows_total",
			Help: "Rows inserted into ClickHouse, by table."}, []string{"table"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "insert_retries_total",
			Help: "Failed batch inserts, each retried with backoff."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "records_skipped_total",
			Help: "Records that did not parse and were skipped."}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "insert_seconds",
			Help: "Time to insert one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	reg.MustRegister(m.rows, m.retries, m.skipped, m.insertSeconds)
	return m
}
