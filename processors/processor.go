// Package processors turns wallet.events into wallet.events.clean and
// wallet.status: a Kafka consumer group whose members dedupe and fold the
// partitions they own, and write every output together with the consumed
// offsets in one transaction (exactly once).
package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
)

// Header names on records the processors write.
const (
	// HeaderIDKey carries walletsync.KeyOf(eventId) on clean records, so
	// that dedupe state is rebuilt without parsing the events.
	HeaderIDKey = "walletsync-idkey"
	// DLQ headers: why, and where the original bytes came from.
	HeaderError     = "walletsync-error"
	HeaderTopic     = "walletsync-topic"
	HeaderPartition = "walletsync-partition"
	HeaderOffset    = "walletsync-offset"
)

// stableWait bounds the wait for another member's open transaction before a
// load; past the brokers' default transaction timeout (60 s) the load fails,
// the poll's transaction aborts, and the next poll tries again.
const stableWait = 90 * time.Second

// DefaultGroup is the processors' consumer group.
const DefaultGroup = "walletsync-process"

// Config configures a Processor.
type Config struct {
	Brokers []string
	Topics  kafka.Topics
	Group   string
	// TransactionalID must be unique per running member and stable across
	// its restarts: a restarted member with the same id fences its dead
	// predecessor at once instead of waiting for its transaction to time out.
	TransactionalID string
	DedupeWindow    time.Duration
	// SessionTimeout is how long a silent member keeps its partitions
	// (default 10s); RebalanceTimeout how long a rebalance waits for
	// members to rejoin (default 30s).
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	Logger           *slog.Logger
	Metrics          *Metrics
}

// DefaultTransactionalID is stable per host, which suits one member a host.
func DefaultTransactionalID() string {
	h, err := os.Hostname()
	if err != nil {
		h = "localhost"
	}
	return "walletsync-process-" + h
}

// Processor is one member of the processing group.
type Processor struct {
	cfg Config
	log *slog.Logger
	m   *Metrics

	mu    sync.Mutex // guards parts against the group's revoke callbacks
	parts map[int32]*partState

	// baseValues are the kafka.HeaderBaseChange values for -1, 0 and 1, shared
	// by every record (the client only reads them).
	baseValues [3][]byte
}

type partState struct {
	fold       *walletsync.Fold
	dedupe     *walletsync.Deduper
	dec        walletsync.Decoder
	maxTS      int64 // newest input timestamp seen, the dedupe clock
	lastExpire int64
}

// New checks the configuration and returns a Processor.
func New(cfg Config) (*Processor, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("processors: no brokers")
	}
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = DefaultTransactionalID()
	}
	if cfg.DedupeWindow <= 0 {
		cfg.DedupeWindow = walletsync.DefaultDedupeWindow
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Processor{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, parts: map[int32]*partState{},
		baseValues: [3][]byte{[]byte("-1"), []byte("0"), []byte("1")}}, nil
}

// dropParts forgets partitions this member no longer owns.
func (p *Processor) dropParts(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, parts := range lost {
		for _, part := range parts {
			delete(p.parts, part)
		}
	}
}

func (p *Processor) dropAll() {
	p.mu.Lock()
	clear(p.parts)
	p.mu.Unlock()
}

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// Run processes until ctx ends. A session that fails (fenced, broker gone for
// longer than the client retries) is closed and a new one started, with
// state reloaded from Kafka, so transient failures never lose work.
func (p *Processor) Run(ctx context.Context) error {
	for {
		err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return fe.err
		}
		p.log.Error("processing session failed; restarting it", "err", err)
		p.m.sessionRestarts.Inc()
		p.dropAll()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (p *Processor) session(ctx context.Context) error {
	t := p.cfg.Topics
	sess, err := kgo.NewGroupTransactSession(append(kafka.ClientOpts(p.cfg.Brokers, "walletsync-process"),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(t.Events),
		kgo.TransactionalID(p.cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsRevoked(p.dropParts),
		kgo.OnPartitionsLost(p.dropParts),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, p.cfg.SessionTimeout/3)),
		kgo.RebalanceTimeout(p.cfg.RebalanceTimeout),
		kgo.TransactionTimeout(30*time.Second),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		// A client that cannot be built is a configuration error: no
		// retry will fix it.
		return &fatalError{err}
	}
	defer sess.Close()
	adm := kadm.NewClient(sess.Client())

	for {
		fetches := sess.PollRecords(ctx, 20_000)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
		var ferr error
		fetches.EachError(func(t string, part int32, err error) {
			ferr = fmt.Errorf("fetching %s/%d: %w", t, part, err)
		})
		if ferr != nil {
			p.log.Warn("fetch error", "err", ferr)
			if errors.Is(ferr, context.Canceled) {
				return nil
			}
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		// Partitions seen for the first time are loaded before the
		// transaction begins: a load may wait out another member's open
		// transaction, and this member's own must not time out meanwhile.
		p.preload(ctx, adm, fetches)
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("beginning a transaction: %w", err)
		}
		var (
			prodErr  error
			prodMu   sync.Mutex
			batch    batchCounts
			touched  = map[int32]bool{}
			loadFail error
		)
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				prodMu.Lock()
				if prodErr == nil {
					prodErr = err
				}
				prodMu.Unlock()
			}
		}
		// Partitions share nothing, so each is folded on its own
		// goroutine; records of one partition stay in order.
		var (
			wg      sync.WaitGroup
			mergeMu sync.Mutex
		)
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			touched[fp.Partition] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := p.state(ctx, adm, fp.Partition)
				var mine batchCounts
				if err == nil {
					var buf []byte
					for _, r := range fp.Records {
						buf = p.process(ctx, sess, st, r, buf, &mine, promise)
					}
				}
				mergeMu.Lock()
				defer mergeMu.Unlock()
				if err != nil && loadFail == nil {
					loadFail = err
				}
				batch.add(&mine)
			}()
		})
		wg.Wait()
		// Flush before deciding, so that a record that failed is known
		// and the transaction is aborted, not committed without it.
		if err := sess.Client().Flush(ctx); err != nil && ctx.Err() != nil {
			return nil
		}
		prodMu.Lock()
		failed := prodErr
		prodMu.Unlock()
		commit := kgo.TryCommit
		if loadFail != nil || failed != nil {
			commit = kgo.TryAbort
		}
		start := time.Now()
		committed, err := sess.End(ctx, commit)
		p.m.txnSeconds.Observe(time.Since(start).Seconds())
		if failed != nil {
			p.log.Warn("producing failed; transaction aborted", "err", failed)
		}
		if loadFail != nil {
			p.log.Warn("loading partition state failed; transaction aborted", "err", loadFail)
		}
		if committed {
			p.m.commits.Inc()
			batch.report(p.m)
		} else {
			// The records will be fetched again from the committed
			// offsets; the state they changed in memory must go too, and
			// is rebuilt from what Kafka committed.
			p.m.aborts.Inc()
			p.mu.Lock()
			for part := range touched {
				delete(p.parts, part)
			}
			p.mu.Unlock()
		}
		if err != nil {
			return fmt.Errorf("ending a transaction: %w", err)
		}
	}
}

// preload loads the state of the fetched partitions this member has none
// for, in parallel. A failure is left for state to meet again inside the
// transaction, which then aborts and rewinds.
func (p *Processor) preload(ctx context.Context, adm *kadm.Client, fetches kgo.Fetches) {
	var wg sync.WaitGroup
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		p.mu.Lock()
		have := p.parts[fp.Partition] != nil
		p.mu.Unlock()
		if len(fp.Records) == 0 || have {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.state(ctx, adm, fp.Partition); err != nil {
				p.log.Warn("loading partition state failed", "partition", fp.Partition, "err", err)
			}
		}()
	})
	wg.Wait()
}

// state returns a partition's state, rebuilding it from wallet.status and
// wallet.events.clean the first time the partition is seen.
func (p *Processor) state(ctx context.Context, adm *kadm.Client, part int32) (*partState, error) {
	p.mu.Lock()
	st := p.parts[part]
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	start := time.Now()
	st, customers, ids, err := load(ctx, p.log, p.cfg.Brokers, adm, p.cfg.Topics, part, p.cfg.DedupeWindow)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.parts[part] = st
	p.mu.Unlock()
	p.m.loads.Inc()
	p.m.loadSeconds.Observe(time.Since(start).Seconds())
	p.log.Info("partition state loaded", "partition", part, "customers", customers, "dedupeIds", ids, "took", time.Since(start).Round(time.Millisecond).String())
	return st, nil
}

// load rebuilds one partition's state: the fold from the state records
// (registers and version), the dedupe memory from the clean records of the
// last window (their id-key headers). wallet.status cannot serve: it gets a
// record only when the six fields change, and registers change more often.
func load(ctx context.Context, log *slog.Logger, brokers []string, adm *kadm.Client, t kafka.Topics, part int32, window time.Duration) (*partState, int, int, error) {
	st := &partState{fold: walletsync.NewFold(), dedupe: walletsync.NewDeduper(window)}
	// This member writes to the partition's outputs only after loading, so
	// a transaction open there belongs to a previous owner: expelled but
	// still running, or dead under a transactional id nobody reuses. Read
	// now, the view would stop where that transaction began and miss what
	// later owners committed after it. It is waited out: it commits only if
	// its offsets were accepted before this member's generation (then the
	// group's offsets wait for it too), else it aborts, at the latest when
	// the broker's transaction timeout fires.
	wctx, cancel := context.WithTimeout(ctx, stableWait)
	defer cancel()
	for _, topic := range []string{t.State, t.Clean} {
		waited, err := kafka.WaitStable(wctx, adm, topic, part)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("loading partition %d: %w", part, err)
		}
		if waited > time.Second {
			log.Warn("waited for another member's open transaction before loading", "topic", topic, "partition", part, "waited", waited.Round(time.Millisecond).String())
		}
	}
	var (
		wg           sync.WaitGroup
		errS, errC   error
		badRecords   int
		cleanRecords int
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, errS = kafka.ReadPartition(ctx, brokers, adm, t.State, part, -1, func(r *kgo.Record) {
			if r.Value == nil { // a tombstone forgets the customer
				st.fold.Restore(string(r.Key), 0, nil)
				return
			}
			id, version, regs, err := walletsync.ParseStatusRecord(r.Value)
			if err != nil {
				badRecords++
				return
			}
			st.fold.Restore(id, version, regs)
		})
	}()
	go func() {
		defer wg.Done()
		since := time.Now().Add(-window).UnixMilli()
		offs, err := adm.ListOffsetsAfterMilli(ctx, since, t.Clean)
		if err != nil {
			errC = err
			return
		}
		from := int64(-1)
		if o, ok := offs.Lookup(t.Clean, part); ok && o.Err == nil {
			from = o.Offset
		}
		cleanRecords, errC = kafka.ReadPartition(ctx, brokers, adm, t.Clean, part, from, func(r *kgo.Record) {
			ts := r.Timestamp.UnixMilli()
			for _, h := range r.Headers {
				if h.Key == HeaderIDKey && len(h.Value) == len(walletsync.IDKey{}) {
					st.dedupe.Remember(walletsync.IDKey(h.Value), ts)
				}
			}
			st.maxTS = max(st.maxTS, ts)
		})
	}()
	wg.Wait()
	if err := errors.Join(errS, errC); err != nil {
		return nil, 0, 0, fmt.Errorf("loading partition %d: %w", part, err)
	}
	if badRecords > 0 {
		log.Warn("unreadable state records skipped while loading", "partition", part, "records", badRecords)
	}
	st.lastExpire = st.maxTS
	return st, st.fold.Len(), cleanRecords, nil
}

type batchCounts struct {
	events, duplicates, statuses int
	rejected                     map[string]int
	drift                        [3]int // by Platform
}

func (b *batchCounts) add(o *batchCounts) {
	b.events += o.events
	b.duplicates += o.duplicates
	b.statuses += o.statuses
	for i := range b.drift {
		b.drift[i] += o.drift[i]
	}
	for k, v := range o.rejected {
		if b.rejected == nil {
			b.rejected = map[string]int{}
		}
		b.rejected[k] += v
	}
}

func (b *batchCounts) report(m *Metrics) {
	m.events.Add(float64(b.events))
	m.duplicates.Add(float64(b.duplicates))
	m.statuses.Add(float64(b.statuses))
	for field, n := range b.rejected {
		m.rejected.WithLabelValues(field).Add(float64(n))
	}
	for p, n := range b.drift {
		if n > 0 {
			m.drift.WithLabelValues(walletsync.Platform(p).String()).Add(float64(n))
		}
	}
}

// process handles one input record inside the open transaction.
func (p *Processor) process(ctx context.Context, sess *kgo.GroupTransactSession, st *partState, r *kgo.Record, buf []byte,
	batch *batchCounts, promise func(*kgo.Record, error)) []byte {
	t := p.cfg.Topics
	ev, err := st.dec.Parse(r.Value)
	if err == nil && string(r.Key) != ev.CustomerID {
		// The fold of a customer lives in one partition; a record keyed
		// otherwise may sit in another customer's partition.
		err = &walletsync.ValidationError{Field: "key", Reason: "record key " + strconv.Quote(string(r.Key)) + " is not the event's customerId"}
	}
	if err != nil {
		field := "unknown"
		var ve *walletsync.ValidationError
		if errors.As(err, &ve) {
			field = ve.Field
		}
		if batch.rejected == nil {
			batch.rejected = map[string]int{}
		}
		batch.rejected[field]++
		sess.Produce(ctx, &kgo.Record{
			Topic: t.DLQ, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp,
			Headers: []kgo.RecordHeader{
				{Key: HeaderError, Value: []byte(err.Error())},
				{Key: HeaderTopic, Value: []byte(r.Topic)},
				{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
				{Key: HeaderOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
			},
		}, promise)
		return buf
	}
	ts := r.Timestamp.UnixMilli()
	st.maxTS = max(st.maxTS, ts)
	key := walletsync.KeyOf(ev.ID)
	if st.dedupe.SeenKey(key, ts) {
		batch.duplicates++
		return buf
	}
	batch.events++
	status, regsChanged, changed, base := st.fold.ApplyBase(&ev)
	// Sized from the input, which is about as long as its canonical form,
	// so that encoding allocates once instead of growing the slice.
	clean := ev.AppendJSON(make([]byte, 0, len(r.Value)+64))
	headers := make([]kgo.RecordHeader, 1, 3)
	headers[0] = kgo.RecordHeader{Key: HeaderIDKey, Value: key[:]}
	if base.Known {
		headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderBaseChange, Value: p.baseValues[base.Delta+1]})
		if len(base.Retention) > 0 {
			headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderRetention, Value: walletsync.AppendRetentionChanges(nil, base.Retention)})
		}
	}
	sess.Produce(ctx, &kgo.Record{
		Topic: t.Clean, Partition: r.Partition, Key: r.Key, Value: clean, Timestamp: r.Timestamp,
		Headers: headers,
	}, promise)
	if regsChanged {
		buf = walletsync.AppendStatusRecord(buf[:0], &status, st.fold.Registers(status.CustomerID))
		rec := append([]byte(nil), buf...)
		sess.Produce(ctx, &kgo.Record{Topic: t.State, Partition: r.Partition, Key: r.Key, Value: rec}, promise)
		if changed {
			batch.statuses++
			if ev.Type == walletsync.TypeObserved {
				batch.drift[ev.Platform]++
			}
			sess.Produce(ctx, &kgo.Record{Topic: t.Status, Partition: r.Partition, Key: r.Key, Value: rec}, promise)
		}
	}
	// Forget ids past the window now and then; the rebuild costs a pass
	// over the table, so not on every record.
	if w := p.cfg.DedupeWindow.Milliseconds(); st.maxTS-st.lastExpire > w/50 {
		st.dedupe.Expire(st.maxTS)
		st.lastExpire = st.maxTS
	}
	return buf
}
