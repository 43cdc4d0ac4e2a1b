package api

import (
	"context"
	"log/slog"
	"maps"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/wire"
)

// WaitingView counts the events waiting on wallet.passes for their pass's
// customer (SPEC §6), for /v1/pipeline: it follows the compacted topic from
// its start and keeps the live waiting keys with when each began to wait,
// nothing of the events themselves. The resolver's own gauge covers only
// the partitions its process owns; this is the whole deployment's figure,
// in every role that serves the read API.
type WaitingView struct {
	brokers []string
	topic   string
	log     *slog.Logger

	mu    sync.RWMutex
	since map[string]int64    // waiting key → the record's timestamp (ms)
	held  map[string]struct{} // passes with a holder
	next  map[int32]int64     // the next offset to read, per partition
}

// NewWaitingView follows topic (wallet.passes) on brokers.
func NewWaitingView(brokers []string, topic string, log *slog.Logger) *WaitingView {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &WaitingView{brokers: brokers, topic: topic, log: log, since: map[string]int64{}, held: map[string]struct{}{}, next: map[int32]int64{}}
}

// Run follows the topic until ctx ends.
func (v *WaitingView) Run(ctx context.Context) error {
	return follow(ctx, v.brokers, v.topic, "walletsync-waiting-view", v.log, &v.mu, func(r *kgo.Record) {
		v.next[r.Partition] = r.Offset + 1
		if r.Attrs.IsControl() {
			return
		}
		_, _, waiting := wire.SplitPassKey(r.Key)
		switch {
		case !waiting && r.Value == nil:
			delete(v.held, string(r.Key))
		case !waiting:
			v.held[string(r.Key)] = struct{}{}
		case r.Value == nil:
			delete(v.since, string(r.Key))
		default:
			v.since[string(r.Key)] = r.Timestamp.UnixMilli()
		}
	})
}

// Positions returns the next offset to read per partition.
func (v *WaitingView) Positions() map[int32]int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return maps.Clone(v.next)
}

// Waiting is the body of /v1/pipeline's "unmatched".
type Waiting struct {
	// Events wait for their pass's customer; Oldest is when the longest
	// waiting of them arrived ("" when none waits).
	Events int    `json:"waiting"`
	Oldest string `json:"oldestSince,omitempty"`
	// Passes is how many passes have a known holder.
	Passes int `json:"passesHeld"`
}

// Now reports what waits.
func (v *WaitingView) Now() Waiting {
	v.mu.RLock()
	defer v.mu.RUnlock()
	w := Waiting{Events: len(v.since), Passes: len(v.held)}
	oldest := int64(0)
	for _, ts := range v.since {
		if oldest == 0 || ts < oldest {
			oldest = ts
		}
	}
	if oldest != 0 {
		w.Oldest = wire.FormatTime(oldest)
	}
	return w
}
