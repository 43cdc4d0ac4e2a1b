package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/backoff"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// DefaultGroup is the ClickHouse sink's consumer group.
const DefaultGroup = kafka.GroupClickHouse

// SinkConfig configures a Sink.
type SinkConfig struct {
	Brokers       []string
	Topics        kafka.Topics
	Group         string
	BatchRows     int           // flush at this many records (default 50,000)
	BatchInterval time.Duration // or this long after the first (default 1 s)
	// InsertTimeout bounds one insert attempt (default 2 min); VerifySettle
	// (default 10 min, must exceed it) is how long after its dirty mark an
	// insert may still land; the verifier runs every VerifyEvery (default
	// 10 min, negative: never).
	InsertTimeout time.Duration
	VerifySettle  time.Duration
	VerifyEvery   time.Duration
	Logger        *slog.Logger
	Metrics       *SinkMetrics
}

// Sink copies wallet.events.clean and wallet.status into ClickHouse. It is
// at-least-once by construction — offsets are committed only after
// ClickHouse acknowledged the rows — and exactly-once in query results,
// because a re-inserted row has the same sorting key as its first copy
// (see the migrations), and every insert that may repeat rows first marks
// their months dirty, so that queries read those months with FINAL.
//
// Which inserts may repeat rows: a retried one, one whose announcement was
// refused, and records a previous owner of the partition announced. Before
// each insert attempt the sink announces, in the group's committed offset
// metadata, the last offset it is about to insert, committed under its
// generation; a member that lost the partition is refused (and so marks its
// months), and the next owner reads the announcement when it is assigned
// the partition.
type Sink struct {
	cfg  SinkConfig
	conn driver.Conn
	log  *slog.Logger
	m    *SinkMetrics

	mu        sync.Mutex
	announced map[topicPart]int64 // by previous owners: records up to here may be in ClickHouse
	topicIDs  map[string][16]byte // OffsetCommit v10+ names topics by ID; writer goroutine only

	retry backoff.Policy // between insert attempts

	crashAfterInsert func() bool // tests: stop as a crash would, between insert and commit
}

type topicPart struct {
	topic string
	part  int32
}

// announcePrefix starts the offset commit metadata of an announcement.
const announcePrefix = "walletsync-inserting-through:"

// The defaults of SinkConfig's zero values (also the command line's).
const (
	DefaultBatchRows     = 50_000
	DefaultBatchInterval = time.Second
	DefaultInsertTimeout = 2 * time.Minute
	DefaultVerifySettle  = 10 * time.Minute
	DefaultVerifyEvery   = 10 * time.Minute
)

// NewSink returns a sink writing through conn.
func NewSink(cfg SinkConfig, conn driver.Conn) *Sink {
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = DefaultBatchRows
	}
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = DefaultBatchInterval
	}
	if cfg.InsertTimeout <= 0 {
		cfg.InsertTimeout = DefaultInsertTimeout
	}
	if cfg.VerifySettle <= 0 {
		cfg.VerifySettle = DefaultVerifySettle
	}
	// An attempt that timed out may still land on the server a little later;
	// a shorter settle would let the verifier clear a month too early.
	cfg.VerifySettle = max(cfg.VerifySettle, cfg.InsertTimeout+time.Minute)
	if cfg.VerifyEvery == 0 {
		cfg.VerifyEvery = DefaultVerifyEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewSinkMetrics(prometheus.NewRegistry())
	}
	return &Sink{cfg: cfg, conn: conn, log: cfg.Logger, m: cfg.Metrics, announced: map[topicPart]int64{}, topicIDs: map[string][16]byte{},
		retry: backoff.Policy{Base: 100 * time.Millisecond, Max: 10 * time.Second}}
}

// Run consumes until ctx ends.
func (s *Sink) Run(ctx context.Context) error {
	// ClickHouse down at start (or going down mid-way, leaving some
	// migrations applied) is waited out like any outage; a migration the
	// server refuses is a schema problem no retry fixes.
	for attempt := 1; ; attempt++ {
		_, err := Migrate(ctx, s.conn)
		if err == nil {
			break
		}
		var ex *proto.Exception
		if errors.As(err, &ex) || ctx.Err() != nil {
			return fmt.Errorf("clickhouse sink: %w", err)
		}
		s.log.Warn("ClickHouse unavailable for the migrations; retrying", "err", err, "attempt", attempt)
		s.m.migrationWait.Inc()
		if backoff.Wait(ctx, s.retry.Delay(attempt)) != nil {
			return nil
		}
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
		kgo.OnPartitionsAssigned(s.readAnnouncements),
	)...)
	if err != nil {
		return fmt.Errorf("clickhouse sink: %w", err)
	}
	defer cl.Close()
	// crashAfterInsert stops the loop through this.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if s.cfg.VerifyEvery > 0 {
		go s.verifyLoop(ctx)
	}
	// Batches are inserted by a writer while the next one is polled; at
	// most one waits behind the one being written, so memory is bounded
	// and a slow ClickHouse still holds the poller back. Each batch's
	// offsets are committed after its insert, in order.
	return kafka.ConsumeBatches(ctx, cl, &batcher{s: s, cl: cl, stop: stop, b: &batch{}}, kafka.ConsumeConfig{
		Commit: func(ctx context.Context, offs kafka.Offsets) {
			cl.CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					// The rows are in ClickHouse; if the commit is lost
					// they are written again later and collapse.
					s.log.Warn("clickhouse sink offset commit failed", "err", err)
				}
			})
		},
		Retry:         s.retry,
		Pipeline:      true,
		Logger:        s.log,
		FetchErrorMsg: "clickhouse sink fetch error",
	})
}

// batcher is the sink's side of kafka.ConsumeBatches: batches of BatchRows
// rows, or what came in BatchInterval after the first record.
type batcher struct {
	s     *Sink
	cl    *kgo.Client
	stop  context.CancelFunc
	b     *batch
	first time.Time // when the batch in hand got its first record; zero: none yet
}

func (bt *batcher) Add(r *kgo.Record) {
	if bt.first.IsZero() {
		bt.first = time.Now()
	}
	bt.b.add(r, bt.s.cfg.Topics, bt.s.m)
}

func (bt *batcher) Room() int { return bt.s.cfg.BatchRows - bt.b.len() }

// Due: a batch of only markers is committed too, so the lag reaches 0.
func (bt *batcher) Due(now time.Time) bool {
	return !bt.first.IsZero() && (bt.b.len() >= bt.s.cfg.BatchRows || now.Sub(bt.first) >= bt.s.cfg.BatchInterval)
}

func (bt *batcher) Deadline() time.Time {
	if bt.first.IsZero() {
		return time.Time{}
	}
	return bt.first.Add(bt.s.cfg.BatchInterval)
}

func (bt *batcher) Take() *batch {
	b := bt.b
	b.offs = bt.cl.UncommittedOffsets()
	bt.b, bt.first = &batch{}, time.Time{}
	return b
}

// Flush makes one attempt at writing the batch; kafka.ConsumeBatches
// retries it with backoff until ClickHouse takes it or ctx ends. While it
// retries nothing more is polled: that is the backpressure.
func (bt *batcher) Flush(ctx context.Context, b *batch, attempt int) (kafka.Offsets, error) {
	s := bt.s
	start := time.Now()
	if err := s.attempt(ctx, bt.cl, b, attempt > 1); err != nil {
		s.m.retries.Inc()
		s.log.Warn("clickhouse insert failed; retrying", "attempt", attempt, "backoff", s.retry.Delay(attempt).String(), "err", err)
		return nil, err
	}
	s.m.rows.WithLabelValues("wallet_events").Add(float64(len(b.events)))
	s.m.rows.WithLabelValues("wallet_status_versions").Add(float64(len(b.statuses)))
	s.m.insertSeconds.Observe(time.Since(start).Seconds())
	if s.crashAfterInsert != nil && s.crashAfterInsert() {
		bt.stop()
		return nil, errors.New("clickhouse sink: stopped after an insert, before its commit (test)")
	}
	// Forgotten here, before the commit: the next batch's attempt, which
	// reads the announcements, comes after that commit all the same.
	s.forgetAnnouncements(b)
	return b.offs, nil
}

// attempt announces the batch, marks the months whose rows it may repeat,
// and inserts it. A retry may repeat any row of the batch: the attempt
// before it may have landed, in part or entirely.
func (s *Sink) attempt(ctx context.Context, cl *kgo.Client, b *batch, retry bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	defer cancel()
	var months []uint32
	if s.announce(ctx, cl, b) && !retry {
		months = s.repeatedMonths(b)
	} else {
		months = EventMonths(b.events)
	}
	if err := MarkDirty(ctx, s.conn, months); err != nil {
		return fmt.Errorf("marking months dirty: %w", err)
	}
	s.m.dirtyMarks.Add(float64(len(months)))
	if err := InsertEvents(ctx, s.conn, b.events, b.base); err != nil {
		return err
	}
	return InsertStatuses(ctx, s.conn, b.statuses)
}

// announce commits, for each partition of wallet.events.clean in the batch,
// its first offset (where the group's offset already is) with the last one
// as metadata, under this member's generation. False when it was refused or
// failed: the batch must then be treated as a repeat.
func (s *Sink) announce(ctx context.Context, cl *kgo.Client, b *batch) bool {
	if len(b.spans) == 0 {
		return true
	}
	member, gen := cl.GroupMetadata()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation, req.MemberID = s.cfg.Group, gen, member
	topics := map[string]int{}
	for tp, sp := range b.spans {
		i, ok := topics[tp.topic]
		if !ok {
			id, err := s.topicID(ctx, cl, tp.topic)
			if err != nil {
				s.log.Warn("clickhouse sink could not announce its insert; marking its months dirty", "err", err)
				return false
			}
			i = len(req.Topics)
			topics[tp.topic] = i
			t := kmsg.NewOffsetCommitRequestTopic()
			t.Topic, t.TopicID = tp.topic, id
			req.Topics = append(req.Topics, t)
		}
		p := kmsg.NewOffsetCommitRequestTopicPartition()
		p.Partition, p.Offset, p.LeaderEpoch = tp.part, sp[0], -1
		meta := announcePrefix + strconv.FormatInt(sp[1], 10)
		p.Metadata = &meta
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, p)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		s.log.Warn("clickhouse sink could not announce its insert; marking its months dirty", "err", err)
		return false
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				s.log.Warn("clickhouse sink insert announcement refused; marking its months dirty", "topic", t.Topic, "partition", p.Partition, "err", err)
				return false
			}
		}
	}
	return true
}

func (s *Sink) topicID(ctx context.Context, cl *kgo.Client, topic string) ([16]byte, error) {
	if id, ok := s.topicIDs[topic]; ok {
		return id, nil
	}
	ts, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return [16]byte{}, err
	}
	d, ok := ts[topic]
	if !ok || d.Err != nil {
		return [16]byte{}, fmt.Errorf("topic %s: %v", topic, d.Err)
	}
	s.topicIDs[topic] = d.ID
	return d.ID, nil
}

// readAnnouncements learns, for newly assigned partitions, what their
// previous owner announced it was inserting.
func (s *Sink) readAnnouncements(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	var offs kadm.OffsetResponses
	retry := backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		var err error
		if offs, err = kadm.NewClient(cl).FetchOffsets(ctx, s.cfg.Group); err == nil {
			break
		}
		s.log.Warn("clickhouse sink could not read insert announcements; retrying", "err", err)
		if backoff.Wait(ctx, retry.Delay(attempt)) != nil {
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range assigned {
		for _, p := range parts {
			o, ok := offs.Lookup(topic, p)
			if !ok || o.Err != nil {
				continue
			}
			if last, ok := strings.CutPrefix(o.Metadata, announcePrefix); ok {
				if n, err := strconv.ParseInt(last, 10, 64); err == nil {
					s.announced[topicPart{topic, p}] = n
				}
			}
		}
	}
}

// repeatedMonths lists the months of the events a previous owner announced.
func (s *Sink) repeatedMonths(b *batch) []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.announced) == 0 {
		return nil
	}
	var ms []uint32
	for i, at := range b.at {
		if last, ok := s.announced[at.tp]; ok && at.offset <= last {
			ms = append(ms, Month(b.events[i].OccurredAt))
		}
	}
	slices.Sort(ms)
	return slices.Compact(ms)
}

// forgetAnnouncements drops those the batch has gone past.
func (s *Sink) forgetAnnouncements(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tp, sp := range b.spans {
		if last, ok := s.announced[tp]; ok && sp[1] >= last {
			delete(s.announced, tp)
		}
	}
}

// verifyLoop clears dirty months (see Verify) every VerifyEvery.
func (s *Sink) verifyLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.VerifyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cleared, err := Verify(ctx, s.conn, s.cfg.VerifySettle)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("clickhouse verify failed", "err", err)
		}
		if len(cleared) > 0 {
			s.log.Info("clickhouse months verified: one row per event", "months", cleared)
		}
	}
}

// baseChange reads a clean record's kafka.HeaderBaseChange and
// kafka.HeaderRetention; anything malformed is unknown, which is always
// safe (the slow way).
func baseChange(hs []kgo.RecordHeader) walletsync.BaseChange {
	var bc walletsync.BaseChange
	for _, h := range hs {
		switch h.Key {
		case kafka.HeaderBaseChange:
			switch string(h.Value) {
			case "1":
				bc.Delta, bc.Known = 1, true
			case "0":
				bc.Delta, bc.Known = 0, true
			case "-1":
				bc.Delta, bc.Known = -1, true
			default:
				return walletsync.BaseChange{}
			}
		case kafka.HeaderRetention:
			rc, err := wire.ParseRetentionChanges(h.Value)
			if err != nil {
				return walletsync.BaseChange{}
			}
			bc.Retention = rc
		}
	}
	if !bc.Known {
		return walletsync.BaseChange{}
	}
	return bc
}

// InsertEvents writes events to wallet_events in one batch, with base[i]
// as events[i]'s BaseChange (nil: all unknown).
func InsertEvents(ctx context.Context, conn driver.Conn, events []walletsync.Event, base []walletsync.BaseChange) error {
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
		installed := b2u8(e.Installed)
		var bc walletsync.BaseChange
		if base != nil {
			bc = base[i]
		}
		if err := ins.Append(e.ID, e.Type.String(), platform(e.Platform), e.CustomerID, e.PassID, e.PassType,
			time.UnixMilli(e.OccurredAt).UTC(), e.OccurredAt, installed, e.InstalledAt,
			e.Source, medium, origin, ua, tags, now, bc.Delta, b2u8(bc.Known), b2u8(e.DeviceRemoval())); err != nil {
			return err
		}
	}
	if err := ins.Send(); err != nil {
		return err
	}
	return insertRetention(ctx, conn, events, base)
}

// insertRetention writes the events' retention changes to wallet_retention.
func insertRetention(ctx context.Context, conn driver.Conn, events []walletsync.Event, base []walletsync.BaseChange) error {
	n := 0
	for i := range base {
		n += len(base[i].Retention)
	}
	if n == 0 {
		return nil
	}
	ins, err := conn.PrepareBatch(ctx, insertRetentionRows)
	if err != nil {
		return err
	}
	for i := range base {
		e := &events[i]
		for seq, rc := range base[i].Retention {
			if err := ins.Append(e.ID, uint16(seq), time.UnixMilli(e.OccurredAt).UTC(), e.OccurredAt, e.CustomerID, e.PassID,
				e.Platform.String(), rc.InstallAt, b2u8(rc.Initial), rc.Delta[0], rc.Delta[1], rc.Delta[2]); err != nil {
				return err
			}
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
			args := []any{st.CustomerID, st.Version, st.Wallet.String(), st.AppleInstalledAt, st.GoogleInstalledAt, st.LastChangedAt, lastEvent(st.LastEvent),
				st.FirstInstalledAt, st.PassIssuedAt}
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

// platform is the platform column's value; an issued event may have none.
func platform(p walletsync.Platform) string {
	if p == 0 {
		return "none"
	}
	return p.String()
}

func lastEvent(l walletsync.LastEvent) string {
	switch l {
	case walletsync.LastUninstalled:
		return "uninstalled"
	case walletsync.LastInstalled:
		return "installed"
	}
	return "none"
}

// Explicit column lists: ClickHouse 18.16 needs them for batches.
const (
	insertEvents = `INSERT INTO wallet_events (event_id, type, platform, customer_id, pass_id, pass_type,
	occurred_at, occurred_ms, installed, installed_at_ms, source, medium, origin, user_agent, tags, ingested_at,
	base_change, base_known, device_removal)`
	insertRetentionRows = `INSERT INTO wallet_retention (event_id, seq, occurred_at, occurred_ms, customer_id, pass_id,
	platform, install_ms, initial, d1, d7, d30)`
	insertVersions = `INSERT INTO wallet_status_versions (customer_id, version, wallet_status,
	apple_installed_at_ms, google_installed_at_ms, last_changed_at_ms, last_event, first_installed_at_ms, pass_issued_at_ms,
	last_changed_at)`
	insertCurrent = `INSERT INTO wallet_status_current (customer_id, version, wallet_status,
	apple_installed_at_ms, google_installed_at_ms, last_changed_at_ms, last_event, first_installed_at_ms, pass_issued_at_ms)`
)

type batch struct {
	events   []walletsync.Event
	base     []walletsync.BaseChange // each event's, from its record's header
	at       []recordAt              // where each event came from
	statuses []walletsync.Status
	spans    map[topicPart][2]int64 // first and last offset read from each wallet.events.clean partition
	dec      wire.Decoder
	offs     kafka.Offsets // committed once the batch is in ClickHouse
}

type recordAt struct {
	tp     topicPart
	offset int64
}

func (b *batch) len() int { return len(b.events) + len(b.statuses) }

// add turns a record into a row. Records that do not parse cannot come from
// the processors; they are counted and skipped rather than blocking the sink
// forever (the processors' DLQ is where bad input goes).
func (b *batch) add(r *kgo.Record, t kafka.Topics, m *SinkMetrics) {
	tp := topicPart{r.Topic, r.Partition}
	if r.Topic == t.Clean {
		if b.spans == nil {
			b.spans = map[topicPart][2]int64{}
		}
		sp, ok := b.spans[tp]
		if !ok {
			sp[0] = r.Offset
		}
		sp[1] = r.Offset
		b.spans[tp] = sp
	}
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
		b.base = append(b.base, baseChange(r.Headers))
		b.at = append(b.at, recordAt{tp, r.Offset})
	case t.Status:
		if r.Value == nil {
			return
		}
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			m.skipped.Inc()
			return
		}
		b.statuses = append(b.statuses, st)
	}
}

// SinkMetrics are the ClickHouse sink's Prometheus metrics.
type SinkMetrics struct {
	rows          *prometheus.CounterVec
	retries       prometheus.Counter
	migrationWait prometheus.Counter
	dirtyMarks    prometheus.Counter
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
		migrationWait: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "migration_retries_total",
			Help: "Start-up migrations that failed for an unavailable server, each retried with backoff."}),
		dirtyMarks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "dirty_months_marked_total",
			Help: "Months marked as possibly holding an event twice (read with FINAL until verified)."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "records_skipped_total",
			Help: "Records that did not parse and were skipped."}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "walletsync", Subsystem: "clickhouse", Name: "insert_seconds",
			Help: "Time to insert one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	reg.MustRegister(m.rows, m.retries, m.migrationWait, m.dirtyMarks, m.skipped, m.insertSeconds)
	return m
}

func b2u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
