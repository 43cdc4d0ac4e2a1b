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
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// stableWait bounds the wait for another member's open transaction before a
// load; past the brokers' default transaction timeout (60 s) the load fails,
// the poll's transaction aborts, and the next poll tries again.
const stableWait = 90 * time.Second

// DefaultGroup is the processors' consumer group.
const DefaultGroup = kafka.GroupProcess

// The defaults of Config's checkpoint settings, for its zero values and the
// command line's help.
const (
	DefaultCheckpointEvery  = 5 * time.Second
	DefaultCheckpointEvents = 50_000
)

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
	// AllUninstalls turns the device-removal rule off (walletsync's
	// Fold.AllUninstalls): every uninstall counts, whatever its device
	// counts say. Every member of a group must agree on it.
	AllUninstalls bool
	// SessionTimeout is how long a silent member keeps its partitions
	// (default 10s); RebalanceTimeout how long a rebalance waits for
	// members to rejoin (default 30s).
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	// A partition's changed customers are written to wallet.state at a
	// checkpoint, at most CheckpointEvery after they changed (default 5s)
	// and at least every CheckpointEvents events (default 50,000); a
	// member taking the partition over folds the clean events after the
	// last checkpoint again. Longer means fewer writes, a longer replay.
	CheckpointEvery  time.Duration
	CheckpointEvents int
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

	phase phase
}

type partState struct {
	fold       *walletsync.Fold
	dedupe     *walletsync.Deduper
	dec        wire.Decoder
	maxTS      int64 // newest input timestamp seen, the dedupe clock
	lastExpire int64

	// Checkpointing. The fold knows the customers changed since the last
	// checkpoint, whose state wallet.state does not have yet; since counts
	// the events folded since then (each is replayed after a takeover).
	since  int
	ckptAt time.Time
	// marked: wallet.state holds a checkpoint marker for the partition.
	// Without one, a loader would not know to replay, so the first
	// transaction writes one before any event it folds.
	marked bool
	// cleanNext is the clean partition's offset just past the last record
	// this state reflects: where a replay from a checkpoint written now
	// would start. Set by the clean records' promises, in offset order.
	cleanNext atomic.Int64
}

// due reports whether the partition's checkpoint should be written in this
// transaction: always before the first folded event when no marker exists,
// and when enough events or time have passed since the last one.
func (st *partState) due(cfg *Config, now time.Time) bool {
	if !st.marked || st.since >= cfg.CheckpointEvents {
		return true
	}
	return (st.fold.Changed() > 0 || st.since > 0) && now.Sub(st.ckptAt) >= cfg.CheckpointEvery
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
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointEvents <= 0 {
		cfg.CheckpointEvents = DefaultCheckpointEvents
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

// phase says what the processor is doing now, for readiness and the log
// line of a stall: its current step, and what each partition it loads is
// waiting for.
type phase struct {
	mu    sync.Mutex
	step  string
	since time.Time
	parts map[int32]string
}

func (ph *phase) set(step string) {
	ph.mu.Lock()
	ph.step, ph.since = step, time.Now()
	ph.mu.Unlock()
}

// part notes what loading partition part does; "" ends its note.
func (ph *phase) part(part int32, what string) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if what == "" {
		delete(ph.parts, part)
		return
	}
	if ph.parts == nil {
		ph.parts = map[int32]string{}
	}
	ph.parts[part] = what
}

func (ph *phase) String() string {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	var b strings.Builder
	if ph.step != "" {
		fmt.Fprintf(&b, "%s (for %s)", ph.step, time.Since(ph.since).Round(time.Millisecond))
	}
	for _, k := range slices.Sorted(maps.Keys(ph.parts)) {
		fmt.Fprintf(&b, "; partition %d: %s", k, ph.parts[k])
	}
	return b.String()
}

// Doing says what the processor is doing now, e.g. "loading partitions
// (for 40s); partition 2: waiting for wallet.events.clean/2 to be stable".
func (p *Processor) Doing() string { return p.phase.String() }

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// Run processes until ctx ends. A session that fails (fenced, broker gone for
// longer than the client retries) is closed and a new one started, with
// state reloaded from Kafka, so transient failures never lose work.
func (p *Processor) Run(ctx context.Context) error {
	return runSessions(ctx, p.log, "processing", p.m.sessionRestarts, p.session, p.dropAll)
}

// runSessions runs session until ctx ends. A session that fails with other
// than a fatalError is followed, after reset and a pause, by a new one.
func runSessions(ctx context.Context, log *slog.Logger, what string, restarts prometheus.Counter, session func(context.Context) error, reset func()) error {
	for {
		err := session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return fe.err
		}
		log.Error(what+" session failed; restarting it", "err", err)
		restarts.Inc()
		reset()
		if backoff.Wait(ctx, time.Second) != nil {
			return nil
		}
	}
}

// txnTimeout is the processors' transaction timeout: how long the broker
// lets a transaction stay open before it aborts it.
const txnTimeout = 30 * time.Second

// fence ends whatever transaction a previous member under the same
// transactional id left open, before this member waits on anything: the
// InitProducerID that Kafka clients send at initTransactions bumps the
// id's epoch, which aborts that transaction at once. kgo sends it only with
// its first record, after the partitions' loads; those wait for open
// transactions to end (WaitStable), so without this a member restarted
// after a SIGKILL would wait out its own predecessor's transaction timeout.
func fence(ctx context.Context, cl *kgo.Client, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	retry := backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}
	for attempt := 1; ; attempt++ {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = int32(timeout.Milliseconds())
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			if err == nil {
				return nil
			}
		}
		// CONCURRENT_TRANSACTIONS while the coordinator aborts the old
		// transaction, a coordinator loading or moving: wait and ask again.
		if ke := (*kerr.Error)(nil); ctx.Err() != nil || (errors.As(err, &ke) && !ke.Retriable && ke != kerr.ConcurrentTransactions) {
			return fmt.Errorf("fencing the previous member with transactional id %q: %w", id, err)
		}
		if backoff.Wait(ctx, retry.Delay(attempt)) != nil {
			return fmt.Errorf("fencing the previous member with transactional id %q: %w", id, err)
		}
	}
}

func (p *Processor) session(ctx context.Context) error {
	t := p.cfg.Topics
	sess, err := kgo.NewGroupTransactSession(append(kafka.ClientOpts(p.cfg.Brokers, "walletsync-process"),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(t.Events),
		kgo.TransactionalID(p.cfg.TransactionalID),
		// Static membership under the same stable id: a member restarted
		// after a crash takes its predecessor's place (and partitions) at
		// once, instead of the group waiting out the dead member's session
		// timeout before it rebalances.
		kgo.InstanceID(p.cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The resolver writes wallet.events in transactions: with their
		// markers kept (and skipped), the committed offsets reach the end
		// of the topic, and the lag of /v1/pipeline reaches 0.
		kgo.KeepControlRecords(),
		// Outputs go to the input's partition number, but for the holders
		// taught on wallet.passes, which is partitioned by pass.
		kgo.RecordPartitioner(kafka.PassPartitioner(kgo.ManualPartitioner())),
		kgo.OnPartitionsRevoked(p.dropParts),
		kgo.OnPartitionsLost(p.dropParts),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, p.cfg.SessionTimeout/3)),
		kgo.RebalanceTimeout(p.cfg.RebalanceTimeout),
		kgo.TransactionTimeout(txnTimeout),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		// A client that cannot be built is a configuration error: no
		// retry will fix it.
		return &fatalError{err}
	}
	defer sess.Close()
	adm := kadm.NewClient(sess.Client())
	p.phase.set(fmt.Sprintf("fencing the previous member with transactional id %q", p.cfg.TransactionalID))
	if err := fence(ctx, sess.Client(), p.cfg.TransactionalID, txnTimeout); err != nil {
		return err
	}

	for {
		// The poll returns at least every CheckpointEvery, so that the
		// changes of a partition that went quiet are checkpointed too.
		p.phase.set("polling " + t.Events)
		pctx, cancel := context.WithTimeout(ctx, p.cfg.CheckpointEvery)
		fetches := sess.PollRecords(pctx, 20_000)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
		var ferr error
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetching %s/%d: %w", t, part, err)
			}
		})
		if ferr != nil {
			p.log.Warn("fetch error", "err", ferr)
		}
		idle := p.idleDue(fetches)
		if fetches.NumRecords() == 0 && len(idle) == 0 {
			continue
		}
		// Partitions seen for the first time are loaded before the
		// transaction begins: a load may wait out another member's open
		// transaction, and this member's own must not time out meanwhile.
		p.phase.set("loading partitions")
		p.preload(ctx, adm, fetches)
		p.phase.set(fmt.Sprintf("a transaction of %d records", fetches.NumRecords()))
		if err := p.transact(ctx, sess, adm, fetches, idle); err != nil {
			return err
		}
	}
}

// idleDue lists the loaded partitions absent from fetches whose checkpoint
// is due: quiet partitions must not keep changes out of wallet.state.
func (p *Processor) idleDue(fetches kgo.Fetches) map[int32]*partState {
	polled := map[int32]bool{}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 {
			polled[fp.Partition] = true
		}
	})
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var idle map[int32]*partState
	for part, st := range p.parts {
		if !polled[part] && st.marked && st.due(&p.cfg, now) {
			if idle == nil {
				idle = map[int32]*partState{}
			}
			idle[part] = st
		}
	}
	return idle
}

// transact processes one poll in one transaction: the fetched records of
// every partition, and the checkpoints that are due.
func (p *Processor) transact(ctx context.Context, sess *kgo.GroupTransactSession, adm *kadm.Client, fetches kgo.Fetches, idle map[int32]*partState) error {
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
	for part, st := range idle {
		touched[part] = true
		p.checkpoint(ctx, sess, st, part, new(outputs), promise, &batch)
	}
	// Partitions share nothing, so each is folded on its own goroutine;
	// records of one partition stay in order.
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
				var out outputs
				if st.due(&p.cfg, time.Now()) {
					p.checkpoint(ctx, sess, st, fp.Partition, &out, promise, &mine)
				}
				cleanPromise := func(r *kgo.Record, err error) {
					if err != nil {
						promise(r, err)
						return
					}
					st.cleanNext.Store(r.Offset + 1)
				}
				for _, r := range fp.Records {
					if r.Attrs.IsControl() {
						continue
					}
					p.process(ctx, sess, st, r, &out, &mine, promise, cleanPromise)
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
	// Flush before deciding, so that a record that failed is known and the
	// transaction is aborted, not committed without it.
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
		// The records will be fetched again from the committed offsets;
		// the state they changed in memory must go too, and is rebuilt
		// from what Kafka committed.
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
	return nil
}

// checkpoint writes, inside the open transaction, the state of every
// customer of the partition changed since the last checkpoint, then the
// marker telling a loader to replay the clean records from cleanNext on.
// It runs before the transaction folds anything of the partition, so the
// records are the state as of cleanNext exactly. If the transaction
// aborts, the state is rebuilt from Kafka, so nothing here is undone by
// hand.
func (p *Processor) checkpoint(ctx context.Context, sess *kgo.GroupTransactSession, st *partState, part int32, out *outputs,
	promise func(*kgo.Record, error), batch *batchCounts) {
	t := p.cfg.Topics
	st.fold.TakeChanged(func(id string) {
		out.scratch = out.scratch[:0]
		if status, regs, ok := st.fold.Record(id); ok {
			out.scratch = wire.AppendStateRecord(out.scratch, &status, regs)
		}
		rec := out.record()
		*rec = kgo.Record{Topic: t.State, Partition: part, Key: []byte(id), Value: out.value(out.scratch)}
		sess.Produce(ctx, rec, promise)
		batch.stateRecords++
	})
	out.scratch = wire.AppendCheckpoint(out.scratch[:0], st.cleanNext.Load())
	rec := out.record()
	*rec = kgo.Record{Topic: t.State, Partition: part, Key: []byte(wire.CheckpointKey), Value: out.value(out.scratch)}
	sess.Produce(ctx, rec, promise)
	batch.checkpoints++
	st.since, st.ckptAt, st.marked = 0, time.Now(), true
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
	note := func(what string) { p.phase.part(part, what) }
	defer note("")
	st, ls, err := load(ctx, p.log, note, p.cfg.Brokers, adm, p.cfg.Topics, part, p.cfg.DedupeWindow, p.cfg.AllUninstalls)
	if err != nil {
		return nil, err
	}
	p.m.replayed.Add(float64(ls.replayed))
	p.mu.Lock()
	p.parts[part] = st
	p.mu.Unlock()
	p.m.loads.Inc()
	p.m.loadSeconds.Observe(time.Since(start).Seconds())
	p.log.Info("partition state loaded", "partition", part, "customers", ls.customers, "dedupeIds", ls.dedupeIDs, "replayedEvents", ls.replayed, "took", time.Since(start).Round(time.Millisecond).String())
	return st, nil
}

// loadStats says what a load read.
type loadStats struct {
	customers, dedupeIDs, replayed int
}

// load rebuilds one partition's state: the fold from the state records
// (registers and version) of the last checkpoint, plus the clean events
// committed after it, folded again; the dedupe memory from the clean records
// of the last window (their id-key headers). wallet.status cannot serve: it
// gets a record only when the six fields change, and registers change more
// often.
func load(ctx context.Context, log *slog.Logger, note func(string), brokers []string, adm *kadm.Client, t kafka.Topics, part int32, window time.Duration,
	allUninstalls bool) (*partState, loadStats, error) {
	var ls loadStats
	st := &partState{fold: walletsync.NewFold(), dedupe: walletsync.NewDeduper(window), ckptAt: time.Now()}
	st.fold.TrackChanged()
	if allUninstalls {
		st.fold.AllUninstalls()
	}
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
		note(fmt.Sprintf("waiting for %s/%d to be stable (another member's transaction is open)", topic, part))
		waited, err := kafka.WaitStable(wctx, adm, topic, part)
		if err != nil {
			return nil, ls, fmt.Errorf("loading partition %d: %w", part, err)
		}
		if waited > time.Second {
			log.Warn("waited for another member's open transaction before loading", "topic", topic, "partition", part, "waited", waited.Round(time.Millisecond).String())
		}
	}
	// Nobody else writes the partition now, so its end stays where it is
	// until this member writes.
	ends, err := adm.ListEndOffsets(ctx, t.Clean)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, ls, fmt.Errorf("loading partition %d: end of %s: %w", part, t.Clean, err)
	}
	cleanEnd, _ := ends.Lookup(t.Clean, part)
	st.cleanNext.Store(cleanEnd.Offset)
	var (
		wg         sync.WaitGroup
		errS, errC error
		badRecords int
		replayFrom = int64(-1) // the last marker's offset; -1: no marker
	)
	note(fmt.Sprintf("reading %s/%d and the dedupe window of %s/%d", t.State, part, t.Clean, part))
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, errS = kafka.ReadPartition(ctx, brokers, adm, t.State, part, -1, func(r *kgo.Record) {
			if string(r.Key) == wire.CheckpointKey {
				off, err := wire.ParseCheckpoint(r.Value)
				if err != nil {
					badRecords++
					return
				}
				replayFrom = off
				return
			}
			if r.Value == nil { // a tombstone forgets the customer
				st.fold.Restore(walletsync.Status{CustomerID: string(r.Key)}, nil)
				return
			}
			rs, regs, err := wire.ParseStateRecord(r.Value)
			if err != nil {
				badRecords++
				return
			}
			st.fold.Restore(rs, regs)
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
		ls.dedupeIDs, errC = kafka.ReadPartition(ctx, brokers, adm, t.Clean, part, from, func(r *kgo.Record) {
			ts := r.Timestamp.UnixMilli()
			if k, ok := idKeyHeader(r); ok {
				st.dedupe.Remember(k, ts)
			}
			st.maxTS = max(st.maxTS, ts)
		})
	}()
	wg.Wait()
	if err := errors.Join(errS, errC); err != nil {
		return nil, ls, fmt.Errorf("loading partition %d: %w", part, err)
	}
	if badRecords > 0 {
		log.Warn("unreadable state records skipped while loading", "partition", part, "records", badRecords)
	}
	// No marker: wallet.state is empty or was written by a version that
	// wrote every change, and is whole either way. The first transaction
	// writes a marker before it folds anything.
	st.marked = replayFrom >= 0
	if st.marked && replayFrom < cleanEnd.Offset {
		// The fold is idempotent, so an event that a state record already
		// holds changes nothing when folded again: a replay may start too
		// early, never too late.
		starts, err := adm.ListStartOffsets(ctx, t.Clean)
		if err == nil {
			if s, ok := starts.Lookup(t.Clean, part); ok && s.Offset > replayFrom {
				log.Error("clean records after the last checkpoint are gone (retention); the state misses their events", "partition", part, "checkpoint", replayFrom, "logStart", s.Offset)
			}
		}
		var dec wire.Decoder
		note(fmt.Sprintf("replaying %s/%d from offset %d to %d", t.Clean, part, replayFrom, cleanEnd.Offset))
		ls.replayed, err = kafka.ReadPartition(ctx, brokers, adm, t.Clean, part, replayFrom, func(r *kgo.Record) {
			ev, _, err := dec.ParseLean(r.Value) // the fold reads no more
			if err != nil {
				badRecords++
				return
			}
			// Changed customers are marked for the next checkpoint.
			st.fold.ApplyBase(&ev)
		})
		if err != nil {
			return nil, ls, fmt.Errorf("loading partition %d: replaying %s from %d: %w", part, t.Clean, replayFrom, err)
		}
		// The replayed events count towards the next checkpoint, which
		// also writes the customers they changed.
		st.since = ls.replayed
	}
	st.lastExpire = st.maxTS
	ls.customers = st.fold.Len()
	return st, ls, nil
}

// idKeyHeader is a clean record's walletsync.KeyOf(eventId).
func idKeyHeader(r *kgo.Record) (walletsync.IDKey, bool) {
	for _, h := range r.Headers {
		if h.Key == kafka.HeaderIDKey && len(h.Value) == len(walletsync.IDKey{}) {
			return walletsync.IDKey(h.Value), true
		}
	}
	return walletsync.IDKey{}, false
}

type batchCounts struct {
	events, duplicates, statuses int
	checkpoints, stateRecords    int
	holders                      int // taught on wallet.passes
	rejected                     map[string]int
	drift                        [3]int // by Platform
	deviceRemovals               [3]int // by Platform
}

func (b *batchCounts) add(o *batchCounts) {
	b.events += o.events
	b.duplicates += o.duplicates
	b.statuses += o.statuses
	b.checkpoints += o.checkpoints
	b.stateRecords += o.stateRecords
	b.holders += o.holders
	for i := range b.drift {
		b.drift[i] += o.drift[i]
		b.deviceRemovals[i] += o.deviceRemovals[i]
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
	m.checkpoints.Add(float64(b.checkpoints))
	m.stateRecords.Add(float64(b.stateRecords))
	m.holders.Add(float64(b.holders))
	for field, n := range b.rejected {
		m.rejected.WithLabelValues(field).Add(float64(n))
	}
	for p, n := range b.drift {
		if n > 0 {
			m.drift.WithLabelValues(walletsync.Platform(p).String()).Add(float64(n))
		}
		if n := b.deviceRemovals[p]; n > 0 {
			m.deviceRemovals.WithLabelValues(walletsync.Platform(p).String()).Add(float64(n))
		}
	}
}

// outputs is where one partition's share of a transaction allocates what it
// produces: records, headers and values are cut from chunks instead of
// allocated one by one, which is most of the garbage of a record otherwise.
// The client holds on to them until the transaction ends, so a chunk is
// never written again once handed out; a full one is replaced, not grown.
type outputs struct {
	recs    []kgo.Record
	headers []kgo.RecordHeader
	bytes   []byte
	scratch []byte // an encoding on its way into bytes
}

const outChunk = 1024

func (o *outputs) record() *kgo.Record {
	if len(o.recs) == cap(o.recs) {
		o.recs = make([]kgo.Record, 0, outChunk)
	}
	o.recs = o.recs[:len(o.recs)+1]
	return &o.recs[len(o.recs)-1]
}

func (o *outputs) headerSlots(n int) []kgo.RecordHeader {
	if len(o.headers)+n > cap(o.headers) {
		o.headers = make([]kgo.RecordHeader, 0, 4*outChunk)
	}
	h := o.headers[len(o.headers) : len(o.headers) : len(o.headers)+n]
	o.headers = o.headers[:len(o.headers)+n]
	return h
}

// value copies b into the chunk and returns the copy, capped so that
// appending to it can never reach into a later value.
func (o *outputs) value(b []byte) []byte {
	if len(o.bytes)+len(b) > cap(o.bytes) {
		o.bytes = make([]byte, 0, max(64<<10, len(b)))
	}
	from := len(o.bytes)
	o.bytes = append(o.bytes, b...)
	return o.bytes[from:len(o.bytes):len(o.bytes)]
}

// process handles one input record inside the open transaction.
func (p *Processor) process(ctx context.Context, sess *kgo.GroupTransactSession, st *partState, r *kgo.Record, out *outputs,
	batch *batchCounts, promise, cleanPromise func(*kgo.Record, error)) {
	t := p.cfg.Topics
	// Ingest writes canonical events, so the input usually is the clean
	// record already: it is passed on as it is, and only what the fold
	// reads is decoded out of it.
	ev, canonical, err := st.dec.ParseLean(r.Value)
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
				{Key: kafka.HeaderError, Value: []byte(err.Error())},
				{Key: kafka.HeaderTopic, Value: []byte(r.Topic)},
				{Key: kafka.HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
				{Key: kafka.HeaderOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
			},
		}, promise)
		return
	}
	ts := r.Timestamp.UnixMilli()
	st.maxTS = max(st.maxTS, ts)
	key := walletsync.KeyOf(ev.ID)
	if st.dedupe.SeenKey(key, ts) {
		batch.duplicates++
		return
	}
	batch.events++
	if ev.Type == walletsync.TypeUninstalled && st.fold.IsDeviceRemoval(&ev) {
		batch.deviceRemovals[ev.Platform]++
	}
	a := st.fold.ApplyBase(&ev)
	// The first event of a pass for a customer teaches wallet.passes who
	// holds the pass, so that events waiting for it (and later ones that
	// name no customer) are folded under that customer (SPEC §6).
	teach := a.NewPass && strings.IndexByte(ev.PassID, 0) < 0
	status, regsChanged, changed, base := a.Status, a.RegistersChanged, a.StatusChanged, a.Base
	clean := r.Value
	if !canonical {
		out.scratch = wire.AppendEvent(out.scratch[:0], &ev)
		clean = out.value(out.scratch)
	}
	headers := out.headerSlots(3)
	headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderIDKey, Value: out.value(key[:])})
	if base.Known {
		headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderBaseChange, Value: p.baseValues[base.Delta+1]})
		if len(base.Retention) > 0 {
			out.scratch = wire.AppendRetentionChanges(out.scratch[:0], base.Retention)
			headers = append(headers, kgo.RecordHeader{Key: kafka.HeaderRetention, Value: out.value(out.scratch)})
		}
	}
	rec := out.record()
	*rec = kgo.Record{Topic: t.Clean, Partition: r.Partition, Key: r.Key, Value: clean, Timestamp: r.Timestamp, Headers: headers}
	sess.Produce(ctx, rec, cleanPromise)
	if teach {
		h := wire.Holder{PassID: ev.PassID, CustomerID: ev.CustomerID, At: ev.OccurredAt, Source: "event"}
		out.scratch = wire.AppendHolder(out.scratch[:0], &h)
		rec := out.record()
		*rec = kgo.Record{Topic: t.Passes, Key: out.value([]byte(ev.PassID)), Value: out.value(out.scratch), Timestamp: r.Timestamp}
		sess.Produce(ctx, rec, promise)
		batch.holders++
	}
	st.since++
	// A changed customer goes to wallet.state at the next checkpoint (the
	// fold keeps the list); until then the clean record just written is
	// what a loader replays.
	if regsChanged && changed {
		batch.statuses++
		if ev.Type == walletsync.TypeObserved {
			batch.drift[ev.Platform]++
		}
		// The SPEC §4 record alone: the registers are wallet.state's.
		out.scratch = wire.AppendStatus(out.scratch[:0], &status, true)
		rec := out.record()
		*rec = kgo.Record{Topic: t.Status, Partition: r.Partition, Key: r.Key, Value: out.value(out.scratch)}
		sess.Produce(ctx, rec, promise)
	}
	// Forget ids past the window now and then; the rebuild costs a pass
	// over the table, so not on every record.
	if w := p.cfg.DedupeWindow.Milliseconds(); st.maxTS-st.lastExpire > w/50 {
		st.dedupe.Expire(st.maxTS)
		st.lastExpire = st.maxTS
	}
}
