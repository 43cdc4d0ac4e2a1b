// Package crm keeps CRMs in step with wallet.status: one engine consumes the
// status topic, coalesces each customer's versions, waits out flaps, and
// delivers the newest version through a small adapter per CRM (a signed
// webhook, Actito, HubSpot), retrying until the CRM acknowledged it or the
// item is dead-lettered, and only then commits the offsets.
package crm

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/time/rate"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/backoff"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// Group is the consumer group of one destination's sink: each destination
// keeps its own offsets, so a slow CRM holds back no other.
func Group(destination string) string { return kafka.GroupCRM(destination) }

// Item is one customer's status on its way to a CRM.
type Item struct {
	Status walletsync.Status
	// Key is the idempotency key, customerId:version: the same for every
	// attempt, different for every version.
	Key string

	part      int32
	offset    int64
	produced  time.Time // when the status record was written: the delay's start
	arrived   time.Time // when the first version not yet delivered arrived: the settle window's start
	firstTry  time.Time
	attempts  int
	lastErr   error
	recordVal []byte
}

// Destination is one CRM API.
type Destination interface {
	// Name labels metrics and DLQ records and names the consumer group.
	Name() string
	// MaxBatch is how many items one Deliver may carry (1: no batch API).
	MaxBatch() int
	// Deliver writes the items. nil: all acknowledged. A *BatchError:
	// those it lists failed, the others were acknowledged. Any other
	// error: none was.
	Deliver(ctx context.Context, items []*Item) error
}

// HTTPError is a CRM's refusal.
type HTTPError struct {
	Status     int
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
	Body       string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, truncate(e.Body, 300))
}

// Permanent reports a refusal that no retry can change: the request itself
// is wrong. Credentials (401, 403) are not: an operator may fix them while
// the items wait.
func (e *HTTPError) Permanent() bool {
	switch e.Status {
	case 400, 404, 405, 409, 410, 413, 415, 422:
		return true
	}
	return false
}

// BatchError lists the items of a batch that failed; the rest succeeded.
type BatchError struct{ Failed map[int]error }

func (e *BatchError) Error() string {
	for _, err := range e.Failed {
		return fmt.Sprintf("%d items of the batch failed, e.g.: %v", len(e.Failed), err)
	}
	return "batch failed"
}

func permanent(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && he.Permanent()
}

func retryAfter(err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.RetryAfter
	}
	return 0
}

// Config configures an Engine.
// The defaults of Config's zero values (also the command line's).
// DefaultSettle is the command line's only: a zero Settle sends at once.
const (
	DefaultConcurrency = 4
	DefaultRate        = 20 // requests per second per destination
	DefaultMaxAttempts = 10
	DefaultMaxAge      = time.Hour
	DefaultSettle      = 30 * time.Second
)

type Config struct {
	Brokers []string
	Topics  kafka.Topics // Status is read, CRMDLQ written
	Group   string       // default Group(destination)
	// Settle: how long a new version waits for a newer one before it is
	// sent, so that an uninstall followed by a reinstall within the window
	// costs one write, or none. 0 sends at once.
	Settle time.Duration
	// Concurrency: requests in flight at once for first attempts (default
	// 4), and as many again for retries and for requests slower than
	// SlowAfter (default 2 s), so that a customer whose requests hang or
	// fail never holds the others back. Rate: requests per second
	// (default 20), Burst (default Concurrency).
	Concurrency int
	SlowAfter   time.Duration
	Rate        float64
	Burst       int
	// Retry budget: an item is dead-lettered after MaxAttempts failed
	// deliveries (default 10) or once MaxAge has passed since its first
	// (default 1 h). Backoff doubles from BaseBackoff (default 500 ms) up
	// to MaxBackoff (default 1 min), with jitter; a Retry-After header
	// takes precedence.
	MaxAttempts int
	MaxAge      time.Duration
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// RequestTimeout bounds one attempt (default 10 s).
	RequestTimeout time.Duration
	// MaxPending: polling pauses while this many customers wait (default
	// 100,000), so a CRM that is down holds memory bounded.
	MaxPending     int
	CommitInterval time.Duration // default 1 s
	Logger         *slog.Logger
	Metrics        *Metrics
}

// Engine delivers wallet.status to one destination.
type Engine struct {
	cfg  Config
	dest Destination
	log  *slog.Logger
	m    *destMetrics
	lim  *rate.Limiter
}

// New returns an engine for dest.
func New(cfg Config, dest Destination) (*Engine, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("crm: no brokers")
	}
	if cfg.Settle < 0 {
		return nil, errors.New("crm: the settle window cannot be negative")
	}
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = Group(dest.Name())
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = cfg.Concurrency
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.SlowAfter <= 0 {
		cfg.SlowAfter = 2 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100_000
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Engine{
		cfg: cfg, dest: dest, log: cfg.Logger.With("destination", dest.Name()),
		m:   cfg.Metrics.forDestination(dest.Name()),
		lim: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
	}, nil
}

// Group is the engine's consumer group, for /v1/pipeline.
func (e *Engine) Group() string { return e.cfg.Group }

// customer is what the engine holds for one customer: at most one version
// waiting and one in flight, never two in flight, so a CRM never sees an
// older version after a newer one.
type customer struct {
	id       string
	waiting  *Item
	inflight *Item
	dueAt    time.Time
	heapIdx  int  // -1 when not scheduled
	inRetry  bool // scheduled in retryDue
}

// delivered is the last version a CRM acknowledged for a customer.
type delivered struct {
	version uint64
	fields  walletsync.Fields
	part    int32
}

// flight is one request in flight.
type flight struct {
	start time.Time
	slow  bool // counted in the slow lane
}

type result struct {
	f     *flight
	items []*Item
	err   error // per item: errs[i]
	errs  []error
	dead  []bool
}

type revokeReq struct {
	parts map[int32]bool
	lost  bool
	done  chan map[int32]int64 // the offsets to commit for them
}

// Run delivers until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	s := &state{
		e: e, customers: map[string]*customer{}, last: map[string]delivered{}, parts: map[int32]*partTrack{},
		results: make(chan result, 2*e.cfg.Concurrency), revokes: make(chan revokeReq), stopped: make(chan struct{}),
		draining: map[int32]bool{}, flights: map[*flight]bool{},
	}
	cl, err := kgo.NewClient(append(kafka.ClientOpts(e.cfg.Brokers, "walletsync-crm-"+e.dest.Name()),
		kgo.ConsumerGroup(e.cfg.Group),
		kgo.ConsumeTopics(e.cfg.Topics.Status),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		// Transaction markers are committed past, so the group's lag in
		// /v1/pipeline reaches 0.
		kgo.KeepControlRecords(),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) { s.revoke(ctx, cl, m, false) }),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) { s.revoke(ctx, cl, m, true) }),
	)...)
	if err != nil {
		return fmt.Errorf("crm sink: %w", err)
	}
	s.cl = cl
	defer cl.Close()
	// Runs before the client closes, even if the loop panics: leaving the
	// group revokes the partitions, and the callback must not wait for a
	// loop that has ended.
	defer close(s.stopped)
	return s.loop(ctx)
}

type state struct {
	e         *Engine
	cl        *kgo.Client
	customers map[string]*customer
	last      map[string]delivered
	// due holds the customers whose waiting item is a first attempt,
	// retryDue those whose item failed before: one heap per lane, so a
	// full lane never makes the other's items wait behind it.
	due, retryDue dueHeap
	parts         map[int32]*partTrack
	draining      map[int32]bool
	// Requests in flight, in two lanes of Concurrency each: fresh for
	// first attempts, slow for retries and for fresh requests that have
	// run past SlowAfter (moved there by the loop).
	flights map[*flight]bool
	fresh   int
	slow    int
	results chan result
	revokes chan revokeReq
	stopped chan struct{}
	pending atomic.Int64
}

// revoke runs on the client's goroutine inside a poll: it hands the
// partitions to the loop, which waits for their deliveries in flight (so
// that the next owner cannot overtake them with a newer version) and
// returns their offsets, committed here unless the partitions were lost.
func (s *state) revoke(ctx context.Context, cl *kgo.Client, m map[string][]int32, lost bool) {
	req := revokeReq{parts: map[int32]bool{}, lost: lost, done: make(chan map[int32]int64, 1)}
	for _, ps := range m {
		for _, p := range ps {
			req.parts[p] = true
		}
	}
	select {
	case s.revokes <- req:
	case <-s.stopped:
		return
	}
	var offs map[int32]int64
	select {
	case offs = <-req.done:
	case <-s.stopped:
		return
	}
	if lost || len(offs) == 0 {
		return
	}
	commit := map[string]map[int32]kgo.EpochOffset{s.e.cfg.Topics.Status: {}}
	for p, o := range offs {
		commit[s.e.cfg.Topics.Status][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	cl.CommitOffsetsSync(ctx, commit, nil)
}

func (s *state) loop(ctx context.Context) error {
	e := s.e
	fetches := make(chan kgo.Fetches)
	resume := make(chan struct{}, 1)
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go func() {
		defer close(fetches)
		for {
			for s.pending.Load() >= int64(e.cfg.MaxPending) {
				select {
				case <-resume:
				case <-pollCtx.Done():
					return
				}
			}
			fs := s.cl.PollFetches(pollCtx)
			if pollCtx.Err() != nil || fs.IsClientClosed() {
				return
			}
			select {
			case fetches <- fs:
			case <-pollCtx.Done():
				return
			}
		}
	}()
	commitTick := time.NewTicker(e.cfg.CommitInterval)
	defer commitTick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var revoking []revokeReq
	for {
		s.slowDown(time.Now())
		// Wake for the next item that becomes due in a lane with room (a
		// result wakes the loop when a full lane frees a slot), and for
		// the next request that turns slow.
		wait := time.Hour
		if next := s.dispatch(ctx); !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		if next, ok := s.nextSlow(); ok {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			// What was acknowledged is committed; the rest is read again
			// by whoever runs next.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.commit(cctx)
			cancel()
			return nil
		case fs, ok := <-fetches:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("crm sink: the Kafka client closed")
			}
			kafka.LogFetchErrors(fs, e.log, "fetch error")
			fs.EachRecord(s.add)
		case r := <-s.results:
			if r.f.slow {
				s.slow--
			} else {
				s.fresh--
			}
			delete(s.flights, r.f)
			s.finish(r)
			select {
			case resume <- struct{}{}:
			default:
			}
		case req := <-s.revokes:
			for p := range req.parts {
				s.draining[p] = true
			}
			s.dropWaiting(req.parts)
			// What this member delivered may be overtaken by the next
			// owner; a stale memory of it must not suppress a write later.
			for id, d := range s.last {
				if req.parts[d.part] {
					delete(s.last, id)
				}
			}
			revoking = append(revoking, req)
		case <-commitTick.C:
			s.commit(ctx)
		case <-timer.C:
		}
		// A revocation completes once nothing of its partitions is in
		// flight any more.
		kept := revoking[:0]
		for _, req := range revoking {
			if s.inflightIn(req.parts) {
				kept = append(kept, req)
				continue
			}
			offs := map[int32]int64{}
			for p := range req.parts {
				if t := s.parts[p]; t != nil {
					offs[p] = t.commitPoint()
				}
				delete(s.parts, p)
				delete(s.draining, p)
			}
			req.done <- offs
		}
		revoking = kept
		e.m.pending.Set(float64(len(s.customers)))
	}
}

// add takes one record of wallet.status.
func (s *state) add(r *kgo.Record) {
	e := s.e
	t := s.parts[r.Partition]
	if t == nil {
		t = &partTrack{next: r.Offset, committed: -1}
		s.parts[r.Partition] = t
	}
	t.seen(r.Offset)
	if r.Attrs.IsControl() || r.Value == nil || s.draining[r.Partition] {
		t.done(r.Offset)
		return
	}
	status, err := wire.ParseStatus(r.Value)
	if err != nil {
		it := &Item{Status: walletsync.Status{CustomerID: string(r.Key)}, Key: string(r.Key), part: r.Partition, offset: r.Offset, recordVal: r.Value, lastErr: fmt.Errorf("unreadable status record: %w", err)}
		s.deadLetterNow(it)
		t.done(r.Offset)
		return
	}
	now := time.Now()
	id, version := status.CustomerID, status.Version
	it := &Item{
		Status: status,
		Key:    id + ":" + strconv.FormatUint(version, 10),
		part:   r.Partition, offset: r.Offset, produced: r.Timestamp, arrived: now, recordVal: r.Value,
	}
	c := s.customers[id]
	newest := s.last[id].version
	if c != nil {
		if c.waiting != nil {
			newest = max(newest, c.waiting.Status.Version)
		}
		if c.inflight != nil {
			newest = max(newest, c.inflight.Status.Version)
		}
	}
	if version <= newest {
		// Read again after a restart or rebalance: a newer version is
		// known, so this one would only go backwards.
		t.done(r.Offset)
		return
	}
	if c == nil {
		c = &customer{id: id, heapIdx: -1}
		s.customers[id] = c
		s.pending.Add(1)
	}
	if c.waiting != nil {
		// Coalesced: the newer version replaces the waiting one, whose
		// write is saved. The settle window runs from the first.
		e.m.coalesced.Inc()
		it.arrived = c.waiting.arrived
		s.parts[c.waiting.part].done(c.waiting.offset)
	}
	c.waiting = it
	s.schedule(c, later(it.arrived.Add(e.cfg.Settle), c.dueAt))
}

func (s *state) schedule(c *customer, at time.Time) {
	c.dueAt = at
	if c.inflight != nil {
		return // scheduled when the delivery in flight ends
	}
	retry := c.waiting.attempts > 0
	if c.heapIdx >= 0 && c.inRetry == retry {
		heap.Fix(s.heap(retry), c.heapIdx)
		return
	}
	s.unschedule(c)
	c.inRetry = retry
	heap.Push(s.heap(retry), c)
}

func (s *state) heap(retry bool) *dueHeap {
	if retry {
		return &s.retryDue
	}
	return &s.due
}

// unschedule takes c out of its heap, if it is in one.
func (s *state) unschedule(c *customer) {
	if c.heapIdx >= 0 {
		heap.Remove(s.heap(c.inRetry), c.heapIdx)
	}
}

// dispatch starts deliveries of due items while their lane has room: first
// attempts in the fresh lane, retries in the slow one, so that items that
// keep failing or hanging cannot take every slot. It returns when the next
// item of a lane with room becomes due (zero: none).
func (s *state) dispatch(ctx context.Context) (next time.Time) {
	now := time.Now()
	for lane := range 2 {
		h := s.heap(lane == 1)
		for s.room(lane) && len(*h) > 0 && !(*h)[0].dueAt.After(now) {
			var batch []*Item
			for len(batch) < s.e.dest.MaxBatch() && len(*h) > 0 && !(*h)[0].dueAt.After(now) {
				if it := s.take(heap.Pop(h).(*customer)); it != nil {
					batch = append(batch, it)
				}
			}
			s.launch(ctx, lane, batch)
		}
		if s.room(lane) && len(*h) > 0 && (next.IsZero() || (*h)[0].dueAt.Before(next)) {
			next = (*h)[0].dueAt
		}
	}
	return next
}

func (s *state) room(lane int) bool {
	if lane == 1 {
		return s.slow < s.e.cfg.Concurrency
	}
	return s.fresh < s.e.cfg.Concurrency
}

// take makes c's waiting item the one in flight and returns it; nil when
// there is nothing to write (a flap that settled back where the CRM is).
func (s *state) take(c *customer) *Item {
	it := c.waiting
	c.waiting = nil
	if d, ok := s.last[c.id]; ok && d.fields == it.Status.Fields {
		s.e.m.coalesced.Inc()
		s.parts[it.part].done(it.offset)
		s.forget(c)
		return nil
	}
	c.inflight = it
	return it
}

// launch starts one request for batch in lane.
func (s *state) launch(ctx context.Context, lane int, batch []*Item) {
	if len(batch) == 0 {
		return
	}
	f := &flight{start: time.Now(), slow: lane == 1}
	if f.slow {
		s.slow++
	} else {
		s.fresh++
	}
	s.flights[f] = true
	go s.deliver(ctx, f, batch)
}

// slowDown moves fresh requests that have run past SlowAfter to the slow
// lane while it has room, freeing their fresh slots for other customers.
func (s *state) slowDown(now time.Time) {
	for f := range s.flights {
		if !f.slow && now.Sub(f.start) >= s.e.cfg.SlowAfter && s.slow < s.e.cfg.Concurrency {
			f.slow = true
			s.fresh--
			s.slow++
			s.e.m.slowRequests.Inc()
		}
	}
}

// nextSlow is when the next fresh request turns slow.
func (s *state) nextSlow() (time.Time, bool) {
	var next time.Time
	found := false
	for f := range s.flights {
		if f.slow {
			continue
		}
		if at := f.start.Add(s.e.cfg.SlowAfter); !found || at.Before(next) {
			next, found = at, true
		}
	}
	return next, found
}

// deliver runs one request on its own goroutine and reports to the loop.
// Items out of retries are dead-lettered here, before the loop hears of
// them, so their offsets are committed only once the DLQ holds them.
func (s *state) deliver(ctx context.Context, f *flight, batch []*Item) {
	e := s.e
	r := result{f: f, items: batch, errs: make([]error, len(batch)), dead: make([]bool, len(batch))}
	defer func() {
		select {
		case s.results <- r:
		case <-s.stopped:
		}
	}()
	if err := e.lim.Wait(ctx); err != nil {
		for i := range r.errs {
			r.errs[i] = err
		}
		return
	}
	start := time.Now()
	for _, it := range batch {
		if it.firstTry.IsZero() {
			it.firstTry = start
		}
		it.attempts++
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	err := e.dest.Deliver(rctx, batch)
	cancel()
	e.m.requestSeconds.Observe(time.Since(start).Seconds())
	if ctx.Err() != nil {
		for i := range r.errs {
			r.errs[i] = ctx.Err()
		}
		return
	}
	var be *BatchError
	switch {
	case err == nil:
		e.m.requests.WithLabelValues("ok").Inc()
	case errors.As(err, &be):
		e.m.requests.WithLabelValues("partial").Inc()
		for i, ierr := range be.Failed {
			if i >= 0 && i < len(r.errs) {
				r.errs[i] = ierr
			}
		}
	default:
		if permanent(err) {
			e.m.requests.WithLabelValues("refused").Inc()
		} else {
			e.m.requests.WithLabelValues("failed").Inc()
		}
		for i := range r.errs {
			r.errs[i] = err
		}
	}
	for i, it := range batch {
		if r.errs[i] == nil {
			continue
		}
		it.lastErr = r.errs[i]
		if permanent(it.lastErr) || it.attempts >= e.cfg.MaxAttempts || time.Since(it.firstTry) >= e.cfg.MaxAge {
			if s.deadLetter(ctx, it) == nil {
				r.dead[i] = true
			}
		}
	}
}

func (s *state) finish(r result) {
	e := s.e
	now := time.Now()
	for i, it := range r.items {
		c := s.customers[it.Status.CustomerID]
		if c == nil || c.inflight != it {
			continue
		}
		c.inflight = nil
		t := s.parts[it.part]
		switch {
		case r.errs[i] == nil:
			e.m.delivered.Inc()
			if !it.produced.IsZero() {
				e.m.delay.Observe(now.Sub(it.produced).Seconds())
			}
			s.last[c.id] = delivered{version: it.Status.Version, fields: it.Status.Fields, part: it.part}
			if t != nil {
				t.done(it.offset)
			}
		case r.dead[i]:
			if t != nil {
				t.done(it.offset)
			}
		case s.draining[it.part] || t == nil:
			// The partition went to another member, which reads the item
			// again from the last commit.
		case c.waiting != nil:
			// A newer version arrived meanwhile: it replaces the failed
			// one, which is never retried.
			e.m.coalesced.Inc()
			t.done(it.offset)
		default:
			e.m.retries.Inc()
			c.waiting = it
			s.schedule(c, now.Add(s.backoff(it)))
			continue
		}
		if c.waiting != nil && !s.draining[c.waiting.part] {
			s.schedule(c, later(c.dueAt, now))
		} else {
			s.forget(c)
		}
	}
}

func (s *state) forget(c *customer) {
	if c.waiting == nil && c.inflight == nil {
		s.unschedule(c)
		delete(s.customers, c.id)
		s.pending.Add(-1)
	}
}

// backoff: Retry-After when the CRM sent one, else exponential with jitter.
func (s *state) backoff(it *Item) time.Duration {
	if ra := retryAfter(it.lastErr); ra > 0 {
		return ra
	}
	// attempts is 0 when the request never went out (the rate limiter's
	// wait was cut short).
	return backoff.Policy{Base: s.e.cfg.BaseBackoff, Max: s.e.cfg.MaxBackoff, Jitter: true}.Delay(it.attempts)
}

func (s *state) dropWaiting(parts map[int32]bool) {
	for _, c := range s.customers {
		if c.waiting != nil && parts[c.waiting.part] {
			c.waiting = nil
			s.unschedule(c)
			s.forget(c)
		}
	}
}

func (s *state) inflightIn(parts map[int32]bool) bool {
	for _, c := range s.customers {
		if c.inflight != nil && parts[c.inflight.part] {
			return true
		}
	}
	return false
}

// commit commits, per partition, the offset below which every record was
// delivered, dead-lettered or superseded.
func (s *state) commit(ctx context.Context) {
	offs := map[int32]kgo.EpochOffset{}
	for p, t := range s.parts {
		if s.draining[p] {
			continue
		}
		if o := t.commitPoint(); o > t.committed {
			offs[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
		}
	}
	if len(offs) == 0 {
		return
	}
	s.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{s.e.cfg.Topics.Status: offs}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.e.log.Warn("offset commit failed", "err", err)
			return
		}
		for p, o := range offs {
			if t := s.parts[p]; t != nil {
				t.committed = o.Offset
			}
		}
	})
}

func (s *state) deadLetterNow(it *Item) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.deadLetter(ctx, it); err != nil {
		s.e.log.Error("dead-lettering failed", "err", err)
	}
}

// deadLetter writes the item to the DLQ and waits for Kafka's
// acknowledgement, retrying while ctx lasts.
func (s *state) deadLetter(ctx context.Context, it *Item) error {
	e := s.e
	msg := "no error"
	if it.lastErr != nil {
		msg = it.lastErr.Error()
	}
	rec := &kgo.Record{
		Topic: e.cfg.Topics.CRMDLQ, Key: []byte(it.Status.CustomerID), Value: it.recordVal,
		Headers: []kgo.RecordHeader{
			{Key: kafka.HeaderDestination, Value: []byte(e.dest.Name())},
			{Key: kafka.HeaderError, Value: []byte(msg)},
			{Key: kafka.HeaderAttempts, Value: strconv.AppendInt(nil, int64(it.attempts), 10)},
			{Key: kafka.HeaderPartition, Value: strconv.AppendInt(nil, int64(it.part), 10)},
			{Key: kafka.HeaderOffset, Value: strconv.AppendInt(nil, it.offset, 10)},
		},
	}
	for {
		err := s.cl.ProduceSync(ctx, rec).FirstErr()
		if err == nil {
			e.m.deadLettered.Inc()
			e.log.Warn("item dead-lettered", "customerId", it.Status.CustomerID, "version", it.Status.Version, "attempts", it.attempts, "err", msg)
			return nil
		}
		e.log.Warn("writing to the CRM DLQ failed; retrying", "err", err)
		if err := backoff.Wait(ctx, time.Second); err != nil {
			return err
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// partTrack follows one partition's offsets: those read and not yet done
// hold the commit point back.
type partTrack struct {
	queue     []int64 // offsets in order; done ones are removed from the front lazily
	open      map[int64]bool
	next      int64 // one past the last offset read
	committed int64
}

func (t *partTrack) seen(off int64) {
	if t.open == nil {
		t.open = map[int64]bool{}
	}
	t.queue = append(t.queue, off)
	t.open[off] = true
	t.next = off + 1
}

func (t *partTrack) done(off int64) { delete(t.open, off) }

func (t *partTrack) commitPoint() int64 {
	for len(t.queue) > 0 && !t.open[t.queue[0]] {
		t.queue = t.queue[1:]
	}
	if len(t.queue) > 0 {
		return t.queue[0]
	}
	return t.next
}

// dueHeap orders waiting customers by when they may be sent.
type dueHeap []*customer

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].dueAt.Before(h[j].dueAt) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *dueHeap) Push(x any) {
	c := x.(*customer)
	c.heapIdx = len(*h)
	*h = append(*h, c)
}
func (h *dueHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	c.heapIdx = -1
	return c
}
