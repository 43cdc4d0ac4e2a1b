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

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// DefaultExpiry is how long an event waits for its pass's customer before
// it goes to the DLQ (SPEC §6: 30 days).
const DefaultExpiry = 30 * 24 * time.Hour

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	Brokers []string
	Topics  kafka.Topics
	Group   string // default kafka.GroupResolve
	// TransactionalID: unique per running member, stable across its
	// restarts, as the processors' (default DefaultResolverID).
	TransactionalID string
	// Expiry is how long an event may wait for its pass's customer
	// (default DefaultExpiry); then it goes to wallet.events.dlq with the
	// reason.
	Expiry           time.Duration
	SessionTimeout   time.Duration // default 10s
	RebalanceTimeout time.Duration // default 30s
	Now              func() time.Time
	Logger           *slog.Logger
	Metrics          *ResolverMetrics
}

// DefaultResolverID is stable per host, which suits one member a host.
func DefaultResolverID() string {
	h, err := os.Hostname()
	if err != nil {
		h = "localhost"
	}
	return "walletsync-resolve-" + h
}

// Resolver is one member of the resolve group. It owns partitions of
// wallet.passes, which hold, per pass, its holder (the customer an event or
// the Pass API named for it) and the events that named the pass but no
// customer. When a pass's holder is known, its waiting events are written
// to wallet.events with the customer filled in, in one transaction with
// the consumed offsets, and their wallet.passes records are deleted
// (tombstones) in the next transaction, once that one has committed. A
// crash between the two leaves the events waiting: they are written again
// after the restart, and the processors drop the copies by eventId. So a
// crash between learning the customer and folding the events loses none
// and doubles none, even where a transaction over several partitions can
// come back half committed: the embedded broker (kfake) recovers each
// partition on its own after a crash of its process, and a tombstone
// committed beside an aborted event would lose the event. The processors
// fold the events like any other, with their own eventId and occurredAt.
//
// Its state is the topic itself: compacted, the live records of a
// partition are exactly its holders and its waiting events, so a member
// that takes a partition over reads it from the start, and no changelog of
// its own is needed.
type Resolver struct {
	cfg ResolverConfig
	log *slog.Logger
	m   *ResolverMetrics

	mu       sync.Mutex // guards the maps against the group's callbacks
	parts    map[int32]*passes
	assigned map[int32]bool
}

// passes is one partition's state.
type passes struct {
	holders map[string]holder
	waiting map[string][]waitingEvent // by passId, in arrival order
	n       int                       // waiting events
	// loadedEnd is the offset the load read up to: fetched records below
	// it are in the state already.
	loadedEnd int64
	// justLoaded: the passes a crash left resolvable (a holder and
	// waiting events) are yet to be resolved.
	justLoaded bool
	// done are the waiting keys whose events (or dead letters) the open
	// transaction writes; once it commits they move to tombstones, whose
	// deletions the next transaction writes (see transact).
	done, tombstones [][]byte
	lastScan         time.Time
}

type holder struct {
	customer string
	at       int64
}

// waitingEvent is an event kept until its pass's customer is known: the
// waiting record's value, when it began to wait (the record's timestamp,
// for expiry) and where it is, for the DLQ.
type waitingEvent struct {
	id     string
	value  []byte
	keptAt int64
	offset int64
}

// NewResolver checks the configuration and returns a Resolver.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("resolver: no brokers")
	}
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = kafka.GroupResolve
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = DefaultResolverID()
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultExpiry
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewResolverMetrics(prometheus.NewRegistry())
	}
	return &Resolver{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, parts: map[int32]*passes{}, assigned: map[int32]bool{}}, nil
}

// scanEvery is how often waiting events are checked for expiry: often
// enough that an expiry is late by a small part of it at most.
func (r *Resolver) scanEvery() time.Duration { return min(time.Minute, r.cfg.Expiry/10) }

// Run resolves until ctx ends; a failed session is closed and a new one
// started, with state read again from wallet.passes.
func (r *Resolver) Run(ctx context.Context) error {
	return runSessions(ctx, r.log, "resolve", r.m.sessionRestarts, r.session, func() {
		r.mu.Lock()
		clear(r.parts)
		clear(r.assigned)
		r.mu.Unlock()
	})
}

func (r *Resolver) assign(_ context.Context, _ *kgo.Client, got map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, parts := range got {
		for _, p := range parts {
			r.assigned[p] = true
		}
	}
}

func (r *Resolver) drop(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, parts := range lost {
		for _, p := range parts {
			delete(r.parts, p)
			delete(r.assigned, p)
		}
	}
}

func (r *Resolver) session(ctx context.Context) error {
	t := r.cfg.Topics
	sess, err := kgo.NewGroupTransactSession(append(kafka.ClientOpts(r.cfg.Brokers, "walletsync-resolve"),
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(t.Passes),
		kgo.TransactionalID(r.cfg.TransactionalID),
		kgo.InstanceID(r.cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The processors write holders in transactions: with their markers
		// kept, the committed offsets reach the end of the topic, and the
		// lag of /v1/pipeline reaches 0.
		kgo.KeepControlRecords(),
		kgo.OnPartitionsAssigned(r.assign),
		kgo.OnPartitionsRevoked(r.drop),
		kgo.OnPartitionsLost(r.drop),
		kgo.SessionTimeout(r.cfg.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, r.cfg.SessionTimeout/3)),
		kgo.RebalanceTimeout(r.cfg.RebalanceTimeout),
		kgo.TransactionTimeout(txnTimeout),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return &fatalError{err}
	}
	defer sess.Close()
	adm := kadm.NewClient(sess.Client())
	if err := fence(ctx, sess.Client(), r.cfg.TransactionalID, txnTimeout); err != nil {
		return err
	}
	poll := min(5*time.Second, r.scanEvery())
	for {
		pctx, cancel := context.WithTimeout(ctx, poll)
		fetches := sess.PollRecords(pctx, 10_000)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		// Every assigned partition is loaded, fetched or not: a quiet
		// one's waiting events still expire.
		if err := r.loadAssigned(ctx, adm); err != nil {
			r.log.Warn("loading wallet.passes failed; trying again", "err", err)
			continue
		}
		if err := r.transact(ctx, sess, fetches); err != nil {
			return err
		}
		// What that transaction folded is deleted from wallet.passes in
		// the next one, at once rather than at the next poll.
		if r.tombstonesDue() {
			if err := r.transact(ctx, sess, kgo.Fetches{}); err != nil {
				return err
			}
		}
	}
}

// loadAssigned reads every assigned partition that has no state yet.
func (r *Resolver) loadAssigned(ctx context.Context, adm *kadm.Client) error {
	r.mu.Lock()
	var todo []int32
	for p := range r.assigned {
		if r.parts[p] == nil {
			todo = append(todo, p)
		}
	}
	r.mu.Unlock()
	for _, p := range todo {
		start := time.Now()
		ps, err := r.load(ctx, adm, p)
		if err != nil {
			return err
		}
		r.mu.Lock()
		if r.assigned[p] {
			r.parts[p] = ps
		}
		r.report()
		r.mu.Unlock()
		r.m.loads.Inc()
		r.log.Info("wallet.passes partition loaded", "partition", p, "holders", len(ps.holders), "waiting", ps.n, "took", time.Since(start).Round(time.Millisecond).String())
	}
	return nil
}

// load reads a partition from its start: what a previous owner left open is
// waited out first (as the processors' loads do), so that the read holds
// every tombstone that owner committed.
func (r *Resolver) load(ctx context.Context, adm *kadm.Client, part int32) (*passes, error) {
	topic := r.cfg.Topics.Passes
	wctx, cancel := context.WithTimeout(ctx, stableWait)
	defer cancel()
	if _, err := kafka.WaitStable(wctx, adm, topic, part); err != nil {
		return nil, fmt.Errorf("loading %s/%d: %w", topic, part, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s/%d: end offset: %w", topic, part, err)
	}
	end, _ := ends.Lookup(topic, part)
	ps := &passes{holders: map[string]holder{}, waiting: map[string][]waitingEvent{}, loadedEnd: end.Offset, justLoaded: true, lastScan: r.cfg.Now()}
	_, err = kafka.ReadPartition(ctx, r.cfg.Brokers, adm, topic, part, -1, func(rec *kgo.Record) {
		ps.apply(rec)
	})
	if err != nil {
		return nil, fmt.Errorf("loading %s/%d: %w", topic, part, err)
	}
	return ps, nil
}

// apply changes the state by one record and returns the pass it concerns
// and whether that pass now has waiting events and a holder: what the
// caller resolves.
func (ps *passes) apply(rec *kgo.Record) (pass string, due bool, changed bool) {
	pass, id, waiting := wire.SplitPassKey(rec.Key)
	switch {
	case !waiting && rec.Value == nil:
		delete(ps.holders, pass)
	case !waiting:
		h, err := wire.ParseHolder(rec.Value)
		if err != nil || h.PassID != pass {
			return pass, false, false
		}
		cur, ok := ps.holders[pass]
		if !ok || h.At >= cur.at {
			changed = ok && cur.customer != h.CustomerID
			ps.holders[pass] = holder{customer: h.CustomerID, at: h.At}
		}
	case rec.Value == nil:
		ps.remove(pass, id)
	default:
		ps.remove(pass, id) // a record written again replaces its first copy
		ps.waiting[pass] = append(ps.waiting[pass], waitingEvent{id: id, value: rec.Value, keptAt: rec.Timestamp.UnixMilli(), offset: rec.Offset})
		ps.n++
	}
	_, known := ps.holders[pass]
	return pass, known && len(ps.waiting[pass]) > 0, changed
}

func (ps *passes) remove(pass, id string) {
	w := ps.waiting[pass]
	for i := range w {
		if w[i].id == id {
			w = append(w[:i], w[i+1:]...)
			ps.n--
			break
		}
	}
	if len(w) == 0 {
		delete(ps.waiting, pass)
	} else {
		ps.waiting[pass] = w
	}
}

// resolveCounts is what one transaction did, reported once it commits.
type resolveCounts struct {
	resolved, expired, invalid, holderChanges int
	waits                                     []float64 // seconds each resolved event waited
}

// transact handles one poll in one transaction: the fetched records, the
// passes they made resolvable (for a partition just loaded, every such pass
// of it), and the expiries that are due.
func (r *Resolver) transact(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) error {
	now := r.cfg.Now()
	r.mu.Lock()
	type work struct {
		part int32
		ps   *passes
		recs []*kgo.Record
		scan bool
	}
	var todo []*work
	byPart := map[int32]*work{}
	for p, ps := range r.parts {
		w := &work{part: p, ps: ps, scan: now.Sub(ps.lastScan) >= r.scanEvery()}
		byPart[p] = w
		todo = append(todo, w)
	}
	r.mu.Unlock()
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if w := byPart[fp.Partition]; w != nil {
			w.recs = fp.Records
		}
	})
	var (
		n      resolveCounts
		prodMu sync.Mutex
		failed error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			prodMu.Lock()
			if failed == nil {
				failed = err
			}
			prodMu.Unlock()
		}
	}
	begun := false
	begin := func() error {
		if begun {
			return nil
		}
		begun = true
		return sess.Begin()
	}
	if fetches.NumRecords() > 0 {
		if err := begin(); err != nil {
			return fmt.Errorf("beginning a transaction: %w", err)
		}
	}
	for _, w := range todo {
		var due []string
		if w.ps.justLoaded {
			// What a crash left resolvable is resolved now.
			due = w.ps.resolvable()
			w.ps.justLoaded = false
		}
		for _, rec := range w.recs {
			if rec.Offset < w.ps.loadedEnd || rec.Attrs.IsControl() {
				continue
			}
			pass, ok, changed := w.ps.apply(rec)
			if changed {
				n.holderChanges++
			}
			if ok {
				due = append(due, pass)
			}
		}
		if len(due) > 0 || w.scan || len(w.ps.tombstones) > 0 {
			if err := begin(); err != nil {
				return fmt.Errorf("beginning a transaction: %w", err)
			}
		}
		// The deletions of what an earlier, committed transaction folded.
		for _, key := range w.ps.tombstones {
			sess.Produce(ctx, &kgo.Record{Topic: r.cfg.Topics.Passes, Key: key}, promise)
		}
		w.ps.tombstones = nil
		for _, pass := range due {
			r.resolve(ctx, sess, w.part, w.ps, pass, now, &n, promise)
		}
		if w.scan {
			r.expire(ctx, sess, w.part, w.ps, now, &n, promise)
			w.ps.lastScan = now
		}
	}
	if !begun {
		return nil
	}
	if err := sess.Client().Flush(ctx); err != nil && ctx.Err() != nil {
		return nil
	}
	prodMu.Lock()
	fail := failed
	prodMu.Unlock()
	commit := kgo.TryCommit
	if fail != nil {
		commit = kgo.TryAbort
	}
	committed, err := sess.End(ctx, commit)
	if fail != nil {
		r.log.Warn("producing failed; transaction aborted", "err", fail)
	}
	r.mu.Lock()
	if committed {
		for _, w := range todo {
			w.ps.tombstones, w.ps.done = w.ps.done, nil
		}
		r.m.resolved.Add(float64(n.resolved))
		r.m.expired.Add(float64(n.expired))
		r.m.invalid.Add(float64(n.invalid))
		r.m.holderChanges.Add(float64(n.holderChanges))
		for _, s := range n.waits {
			r.m.waited.Observe(s)
		}
	} else {
		// The records are fetched again from the committed offsets, and
		// the state is read again from what Kafka committed.
		r.m.aborts.Inc()
		for _, w := range todo {
			delete(r.parts, w.part)
		}
	}
	r.report()
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ending a transaction: %w", err)
	}
	return nil
}

// tombstonesDue reports whether a committed transaction left deletions to
// write.
func (r *Resolver) tombstonesDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ps := range r.parts {
		if len(ps.tombstones) > 0 {
			return true
		}
	}
	return false
}

// resolvable lists the passes with a holder and waiting events.
func (ps *passes) resolvable() []string {
	var out []string
	for pass := range ps.waiting {
		if _, ok := ps.holders[pass]; ok {
			out = append(out, pass)
		}
	}
	return out
}

// resolve writes a pass's waiting events to wallet.events under its holder;
// their keys go to ps.done, deleted once the transaction commits.
func (r *Resolver) resolve(ctx context.Context, sess *kgo.GroupTransactSession, part int32, ps *passes, pass string, now time.Time, n *resolveCounts, promise func(*kgo.Record, error)) {
	h, ok := ps.holders[pass]
	if !ok {
		return
	}
	t := r.cfg.Topics
	for _, w := range ps.waiting[pass] {
		ev, err := wire.ParseWaiting(w.value)
		if err == nil {
			ev.CustomerID = h.customer
			err = ev.Validate()
		}
		if err != nil {
			n.invalid++
			r.deadLetter(ctx, sess, part, ps, pass, w, "waiting event does not become a valid event under customer "+strconv.Quote(h.customer)+": "+err.Error(), promise)
			continue
		}
		sess.Produce(ctx, &kgo.Record{Topic: t.Events, Key: []byte(ev.CustomerID), Value: wire.AppendEvent(nil, &ev), Timestamp: now}, promise)
		ps.done = append(ps.done, wire.WaitingKey(pass, w.id))
		n.resolved++
		n.waits = append(n.waits, max(0, float64(now.UnixMilli()-w.keptAt)/1000))
	}
	ps.n -= len(ps.waiting[pass])
	delete(ps.waiting, pass)
}

// expire sends the events that waited longer than the expiry to the DLQ.
func (r *Resolver) expire(ctx context.Context, sess *kgo.GroupTransactSession, part int32, ps *passes, now time.Time, n *resolveCounts, promise func(*kgo.Record, error)) {
	limit := now.Add(-r.cfg.Expiry).UnixMilli()
	for pass, ws := range ps.waiting {
		kept := ws[:0]
		for _, w := range ws {
			if w.keptAt > limit {
				kept = append(kept, w)
				continue
			}
			n.expired++
			ps.n--
			r.deadLetter(ctx, sess, part, ps, pass, w, fmt.Sprintf("no customer for pass %q within %s: no event of the pass named one and the Pass API did not list it with the --customer-key identifier", pass, r.cfg.Expiry), promise)
		}
		if len(kept) == 0 {
			delete(ps.waiting, pass)
		} else {
			ps.waiting[pass] = kept
		}
	}
}

// deadLetter writes a waiting event to the DLQ with the reason; its key
// goes to ps.done like a resolved one's.
func (r *Resolver) deadLetter(ctx context.Context, sess *kgo.GroupTransactSession, part int32, ps *passes, pass string, w waitingEvent, reason string, promise func(*kgo.Record, error)) {
	t := r.cfg.Topics
	key := wire.WaitingKey(pass, w.id)
	ps.done = append(ps.done, key)
	sess.Produce(ctx, &kgo.Record{Topic: t.DLQ, Key: key, Value: w.value, Timestamp: time.UnixMilli(w.keptAt),
		Headers: []kgo.RecordHeader{
			{Key: kafka.HeaderError, Value: []byte(reason)},
			{Key: kafka.HeaderTopic, Value: []byte(t.Passes)},
			{Key: kafka.HeaderPartition, Value: strconv.AppendInt(nil, int64(part), 10)},
			{Key: kafka.HeaderOffset, Value: strconv.AppendInt(nil, w.offset, 10)},
		}}, promise)
}

// report sets the gauges. r.mu is held, and only the session's goroutine,
// which alone changes a partition's state, calls it.
func (r *Resolver) report() {
	waiting, holders := 0, 0
	for _, ps := range r.parts {
		waiting += ps.n
		holders += len(ps.holders)
	}
	r.m.waiting.Set(float64(waiting))
	r.m.holders.Set(float64(holders))
}
