package kafka

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/backoff"
)

// Offsets are what a sink commits: per topic and partition, the offset of
// the next record to read (and the leader epoch of the last one read, or -1).
type Offsets map[string]map[int32]kgo.EpochOffset

// A Batcher is a sink's side of ConsumeBatches: it buffers what the loop
// fetches, says when the batch in hand must be made durable, and makes a
// batch durable. B is a batch once taken out of the Batcher.
//
// After each poll the loop adds its records, then asks Due; before each poll
// it asks Room and Deadline. These four and Take are called from the loop's
// goroutine only; with ConsumeConfig.Pipeline, Flush runs on another one,
// while the loop goes on adding to the next batch.
type Batcher[B any] interface {
	// Add takes a fetched record, control records (transaction markers)
	// included: a batch of only markers is made durable and committed
	// too, so that the group's lag can reach 0.
	Add(r *kgo.Record)
	// Room bounds the records the next poll may return (<= 0: no bound).
	Room() int
	// Due reports that the batch in hand, empty or not, must be made
	// durable now (full, old or quiet).
	Due(now time.Time) bool
	// Deadline is when Due may next turn true without new records (zero:
	// not before a record comes); the poll waits no longer.
	Deadline() time.Time
	// Take hands the batch in hand over to be flushed and starts an empty
	// one.
	Take() B
	// Flush makes b durable, in one attempt (the first is number 1), and
	// returns what may now be committed. An error is retried, with the same
	// batch, after ConsumeConfig.Retry's delay, until ctx ends; nothing of
	// the batch is committed meanwhile.
	Flush(ctx context.Context, b B, attempt int) (Offsets, error)
}

// ConsumeConfig is the caller's side of ConsumeBatches besides its Batcher.
type ConsumeConfig struct {
	// Commit commits what a Flush returned (nothing is called for an empty
	// Offsets): in the consumer group, or through the admin client for a
	// reader without one. A commit that fails is the Commit's to log; it
	// never ends the loop: what was flushed is durable, and is only read
	// and written again by whoever resumes from the older offsets.
	Commit func(ctx context.Context, offs Offsets)
	// Retry is the delay between the attempts of a failing Flush.
	Retry backoff.Policy
	// Pipeline flushes on a goroutine of its own while the next batch is
	// polled. At most one taken batch waits behind the one being flushed,
	// so memory stays bounded and a slow store still holds the poller
	// back. Batches are committed in the order they were taken. Without
	// it the loop polls nothing while it flushes.
	Pipeline bool
	// FlushOnStop (without Pipeline only): when ctx ends, the batch in
	// hand, with the last poll's records, is taken and flushed in one more
	// attempt (given the ended ctx: the Batcher decides what of its write
	// may be cut short), and committed. Without it the batch in hand is
	// dropped, to be read again by whoever resumes.
	FlushOnStop bool
	// Logger and FetchErrorMsg log the polls' fetch errors
	// (LogFetchErrors).
	Logger        *slog.Logger
	FetchErrorMsg string
}

// ConsumeBatches is the sinks' consume loop — poll, buffer, make durable,
// and commit only then — until ctx ends; it returns nil then (an error only
// if the client is closed under it). The ClickHouse sink (a consumer group,
// batches by rows and interval, pipelined inserts) and the Parquet archive
// (assigned partitions without a group, rolls by bytes, interval and quiet
// time, committed through the admin client) run on it.
//
// Each poll returns at most Room records and waits at most until the
// Batcher's Deadline. When the client was made with
// kgo.BlockRebalanceOnPoll, a rebalance is held back from each poll until
// the loop has added its records and, when due, handed the batch over
// (without Pipeline: flushed and committed it; with it: queued it for the
// writer, which waits while another one is queued), so that no other member
// starts on records this one has in hand.
//
// A failing Flush is retried until it succeeds or ctx ends, and nothing of
// its batch, or of any batch behind it, is committed meanwhile; without
// Pipeline nothing is polled either, with it the loop stops polling once
// the next batch is waiting. A store that is down makes the sink wait, and
// a sink stopped mid-retry loses nothing, since what it had not committed
// is read again by whoever resumes. No attempt starts after ctx ended,
// except FlushOnStop's.
//
// The CRM engine (sinks/crm) does not run on it. Its unit of
// acknowledgement is one customer's version, not a batch: a CRM
// acknowledges versions one customer at a time and out of order, a
// customer whose deliveries fail retries (or is dead-lettered) on its own
// schedule while the others go on, and a version may wait out a settle
// window for a newer one that supersedes it. What it may commit is the
// first offset, per partition, not yet acknowledged, dead-lettered or
// superseded — known from per-offset tracking, not from a batch whose
// Flush made everything before it durable at once. Fitted into batches,
// one failing or slow customer would hold every other customer's
// deliveries and commits behind its batch, which is what the engine's
// lanes exist to prevent; and it hands revoked partitions over by waiting
// for their deliveries in flight in the revoke callback, rather than by
// blocking rebalances around the poll.
func ConsumeBatches[B any](ctx context.Context, cl *kgo.Client, b Batcher[B], cfg ConsumeConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Runs before the caller closes the client: leaving the group needs
	// the rebalance that a poll left blocked.
	defer cl.AllowRebalance()

	// flush makes one taken batch durable, then commits it. False: ctx
	// ended first, and nothing of it was committed.
	flush := func(batch B, final bool) bool {
		for attempt := 1; ; attempt++ {
			if !final && ctx.Err() != nil {
				return false
			}
			offs, err := b.Flush(ctx, batch, attempt)
			if err == nil {
				if len(offs) > 0 && cfg.Commit != nil {
					cfg.Commit(ctx, offs)
				}
				return true
			}
			if final || backoff.Wait(ctx, cfg.Retry.Delay(attempt)) != nil {
				return false
			}
		}
	}
	hand := func(batch B) bool { return flush(batch, false) }
	if cfg.Pipeline {
		jobs := make(chan B, 1)
		writerDone := make(chan struct{})
		go func() {
			defer close(writerDone)
			for batch := range jobs {
				if !flush(batch, false) {
					return
				}
			}
		}()
		defer func() {
			close(jobs)
			<-writerDone
		}()
		hand = func(batch B) bool {
			select {
			case jobs <- batch:
				return true
			case <-ctx.Done():
				return false
			case <-writerDone:
				return false
			}
		}
	}

	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if d := b.Deadline(); !d.IsZero() {
			pollCtx, cancel = context.WithDeadline(ctx, d)
		}
		fs := cl.PollRecords(pollCtx, b.Room())
		cancel()
		stopping := ctx.Err() != nil
		if stopping && (!cfg.FlushOnStop || cfg.Pipeline) {
			return nil
		}
		if fs.IsClientClosed() {
			return errors.New("kafka: the client closed while consuming")
		}
		LogFetchErrors(fs, log, cfg.FetchErrorMsg)
		fs.EachRecord(b.Add)
		if stopping {
			flush(b.Take(), true)
			return nil
		}
		if b.Due(time.Now()) && !hand(b.Take()) {
			return nil
		}
		cl.AllowRebalance()
	}
}
