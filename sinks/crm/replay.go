package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/backoff"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// ReplayConfig configures Replay.
type ReplayConfig struct {
	Brokers []string
	Topics  kafka.Topics
	// Group keeps the replay's position in wallet.crm.dlq (default
	// walletsync-crm-replay-<destination>), so a replay sends each
	// dead-lettered item once.
	Group       string
	MaxAttempts int // per batch (default 5)
	Logger      *slog.Logger
	// Progress, when set, is called after each batch.
	Progress func(done, total int)
}

// ReplayReport is what a replay did.
type ReplayReport struct {
	Read      int // DLQ records read (all destinations)
	Skipped   int // of other destinations
	Customers int // distinct customers of this destination
	Delivered int // statuses the CRM acknowledged
	Missing   int // customers no longer on wallet.status (forgotten)
}

// Replay sends again what dest's sink dead-lettered. For each customer in
// the DLQ it delivers the customer's current status from wallet.status —
// never older than the dead-lettered version, so a replay cannot take a CRM
// back in time — and then moves the replay group past what it read. A
// batch that still fails after MaxAttempts stops the replay with an error
// and nothing is committed, so it can simply be run again.
func Replay(ctx context.Context, cfg ReplayConfig, dest Destination) (ReplayReport, error) {
	var rep ReplayReport
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = "walletsync-crm-replay-" + dest.Name()
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(cfg.Brokers, "walletsync-crm-replay")...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// Where the replay group stopped last time, and where the DLQ ends now.
	ends, err := adm.ListCommittedOffsets(ctx, cfg.Topics.CRMDLQ)
	if err != nil {
		return rep, fmt.Errorf("replay: %w", err)
	}
	from, err := adm.FetchOffsets(ctx, cfg.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return rep, fmt.Errorf("replay: %w", err)
	}
	wanted := map[string]bool{}
	var order []string
	commit := kadm.Offsets{}
	var readErr error
	ends.Each(func(o kadm.ListedOffset) {
		if readErr != nil {
			return
		}
		start := int64(-1)
		if c, ok := from.Lookup(o.Topic, o.Partition); ok && c.At >= 0 {
			start = c.At
		}
		_, readErr = kafka.ReadPartition(ctx, cfg.Brokers, adm, o.Topic, o.Partition, start, func(r *kgo.Record) {
			rep.Read++
			if header(r, kafka.HeaderDestination) != dest.Name() {
				rep.Skipped++
				return
			}
			id := string(r.Key)
			if !wanted[id] {
				wanted[id] = true
				order = append(order, id)
			}
		})
		commit.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	})
	if readErr != nil {
		return rep, fmt.Errorf("replay: reading %s: %w", cfg.Topics.CRMDLQ, readErr)
	}
	rep.Customers = len(order)

	current := map[string]walletsync.Status{}
	if len(order) > 0 {
		parts, err := adm.ListEndOffsets(ctx, cfg.Topics.Status)
		if err != nil {
			return rep, fmt.Errorf("replay: %w", err)
		}
		parts.Each(func(o kadm.ListedOffset) {
			if readErr != nil {
				return
			}
			_, readErr = kafka.ReadPartition(ctx, cfg.Brokers, adm, o.Topic, o.Partition, -1, func(r *kgo.Record) {
				if !wanted[string(r.Key)] {
					return
				}
				if r.Value == nil {
					delete(current, string(r.Key))
					return
				}
				st, err := wire.ParseStatus(r.Value)
				if err == nil && st.Version >= current[st.CustomerID].Version {
					current[st.CustomerID] = st
				}
			})
		})
		if readErr != nil {
			return rep, fmt.Errorf("replay: reading %s: %w", cfg.Topics.Status, readErr)
		}
	}

	var items []*Item
	for _, id := range order {
		s, ok := current[id]
		if !ok {
			rep.Missing++
			continue
		}
		items = append(items, &Item{Status: s, Key: fmt.Sprintf("%s:%d", id, s.Version)})
	}
	for i := 0; i < len(items); i += dest.MaxBatch() {
		batch := items[i:min(i+dest.MaxBatch(), len(items))]
		if err := deliverWithRetry(ctx, dest, batch, cfg.MaxAttempts); err != nil {
			return rep, fmt.Errorf("replay: %w (nothing committed; run it again)", err)
		}
		rep.Delivered += len(batch)
		if cfg.Progress != nil {
			cfg.Progress(rep.Delivered, len(items))
		}
	}
	if err := adm.CommitAllOffsets(ctx, cfg.Group, commit); err != nil {
		return rep, fmt.Errorf("replay: delivered, but committing the replay position failed (a new replay resends the same statuses, harmlessly): %w", err)
	}
	return rep, nil
}

// replayRetry spaces a replay's attempts at a batch; a CRM's Retry-After
// waits longer where it asks to.
var replayRetry = backoff.Policy{Base: 500 * time.Millisecond, Max: 10 * time.Second}

// deliverWithRetry tries a batch up to attempts times, honouring
// Retry-After, giving up at once on a permanent refusal.
func deliverWithRetry(ctx context.Context, dest Destination, batch []*Item, attempts int) error {
	var err error
	for try := 1; try <= attempts; try++ {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = dest.Deliver(rctx, batch)
		cancel()
		var be *BatchError
		if errors.As(err, &be) {
			var kept []*Item
			for i, it := range batch {
				if e, failed := be.Failed[i]; failed {
					if permanent(e) {
						return fmt.Errorf("customer %s refused: %w", it.Status.CustomerID, e)
					}
					kept = append(kept, it)
				}
			}
			batch = kept
		}
		if err == nil || permanent(err) {
			return err
		}
		wait := max(retryAfter(err), replayRetry.Delay(try))
		if err := backoff.Wait(ctx, wait); err != nil {
			return err
		}
	}
	return err
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Send delivers statuses to dest in batches, each retried up to attempts
// times; for rebuilds that push every status to a CRM. keyPrefix keeps the
// idempotency keys apart from those of the stream the statuses replace,
// which a receiver may still remember.
func Send(ctx context.Context, dest Destination, keyPrefix string, statuses []walletsync.Status, attempts int, progress func(done, total int)) error {
	items := make([]*Item, len(statuses))
	for i := range statuses {
		items[i] = &Item{Status: statuses[i], Key: fmt.Sprintf("%s%s:%d", keyPrefix, statuses[i].CustomerID, statuses[i].Version)}
	}
	for i := 0; i < len(items); i += dest.MaxBatch() {
		batch := items[i:min(i+dest.MaxBatch(), len(items))]
		if err := deliverWithRetry(ctx, dest, batch, max(attempts, 1)); err != nil {
			return err
		}
		if progress != nil {
			progress(i+len(batch), len(items))
		}
	}
	return nil
}
