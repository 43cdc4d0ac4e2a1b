package api

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// StatusView keeps the current status of every customer in memory by
// reading the compacted wallet.status topic from its start, and follows it.
type StatusView struct {
	brokers []string
	topic   string
	log     *slog.Logger

	mu   sync.RWMutex
	byID map[string]walletsync.Status
	next map[int32]int64 // the next offset to read, per partition
}

// NewStatusView reads topic (wallet.status) from brokers.
func NewStatusView(brokers []string, topic string, log *slog.Logger) *StatusView {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StatusView{brokers: brokers, topic: topic, log: log, byID: map[string]walletsync.Status{}, next: map[int32]int64{}}
}

// Run follows the topic until ctx ends.
func (v *StatusView) Run(ctx context.Context) error {
	return follow(ctx, v.brokers, v.topic, "walletsync-status-view", v.log, &v.mu, func(r *kgo.Record) {
		v.next[r.Partition] = r.Offset + 1
		if r.Attrs.IsControl() {
			return
		}
		if r.Value == nil {
			delete(v.byID, string(r.Key))
			return
		}
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			v.log.Warn("unreadable status record", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		v.byID[st.CustomerID] = st
	})
}

// follow reads a compacted topic from its start and then as it grows,
// calling apply with every record under mu, until ctx ends. Transaction
// markers are kept (and handed to apply), so that a view's position is
// exact, and so is the lag computed from it.
func follow(ctx context.Context, brokers []string, topic, clientID string, log *slog.Logger, mu sync.Locker, apply func(*kgo.Record)) error {
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, clientID),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("fetch error", "client", clientID, "topic", t, "partition", p, "err", err)
			}
		})
		mu.Lock()
		fs.EachRecord(apply)
		mu.Unlock()
	}
}

// Get returns one customer's status.
func (v *StatusView) Get(id string) (walletsync.Status, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.byID[id]
	return s, ok
}

// All returns every status sorted by customerId bytes.
func (v *StatusView) All() []walletsync.Status {
	v.mu.RLock()
	out := make([]walletsync.Status, 0, len(v.byID))
	for _, s := range v.byID {
		out = append(out, s)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b walletsync.Status) int { return strings.Compare(a.CustomerID, b.CustomerID) })
	return out
}

// Len is the number of customers with a status.
func (v *StatusView) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.byID)
}

// Positions returns the next offset to read per partition.
func (v *StatusView) Positions() map[int32]int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[int32]int64, len(v.next))
	for p, o := range v.next {
		out[p] = o
	}
	return out
}
