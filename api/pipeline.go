package api

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/walletsync/walletsync/pipeline"
)

// Lag measures how many records written to the pipeline's topics are not yet
// processed by each of its consumers (SPEC §6 /v1/pipeline).
type Lag struct {
	adm    *kadm.Client
	events string // consumed by the processors' group
	status string // followed by the status view
	group  string
	view   *StatusView
	// outputs are the topics the processors write in transactions.
	outputs []string
	// sinks are further consumer groups of the pipeline and their topics;
	// they keep transaction markers, so their offsets reach the end.
	sinks map[string][]string
	// Brokers are reported as they are.
	Brokers []string
	// Waiting, when set, reports the events waiting for their pass's
	// customer.
	Waiting *WaitingView
	// Discover, when set, recognises the sink groups on the cluster that
	// this process was not told of (a standalone query does not run the
	// sinks) and says what each reads; they are counted too, so every role
	// reports the same consumers for one deployment.
	Discover func(group string) (topics []string, ok bool)
}

// ViewConsumer names the status view among the consumers of a Report.
const ViewConsumer = "status-view"

// WaitingConsumer names the view of wallet.passes (WaitingView).
const WaitingConsumer = pipeline.WaitingViewName

// AddGroup counts a sink's consumer group, reading topics, in the lag.
func (l *Lag) AddGroup(group string, topics ...string) {
	if l.sinks == nil {
		l.sinks = map[string][]string{}
	}
	l.sinks[group] = topics
}

// NewLag measures the processors' group on events (with the topics it writes
// transactionally, outputs) and the view on status.
func NewLag(adm *kadm.Client, eventsTopic, statusTopic, processGroup string, view *StatusView, outputs ...string) *Lag {
	return &Lag{adm: adm, events: eventsTopic, status: statusTopic, group: processGroup, view: view, outputs: outputs}
}

// Report is the body of GET /v1/pipeline.
type Report struct {
	Lag       int64            `json:"lag"`
	Consumers map[string]int64 `json:"consumers"`
	// Brokers are the Kafka addresses the pipeline uses (for kcat and
	// other clients: with the embedded broker, its --kafka-listen address).
	Brokers []string `json:"brokers,omitempty"`
	// Unmatched says how many events wait on wallet.passes for their
	// pass's customer (SPEC §6).
	Unmatched *Waiting `json:"unmatched,omitempty"`
	// Positions are, per consumer, the sum of its positions over its
	// partitions: they grow while it makes progress (Progress).
	Positions map[string]int64 `json:"-"`
}

// listed fails on any partition that could not be listed: a topic the
// broker does not (yet) report comes back as a placeholder partition with an
// error, and counting it as zero would claim "caught up" for work not even
// measured.
func listed(lo kadm.ListedOffsets, err error) (kadm.ListedOffsets, error) {
	if err != nil {
		return nil, err
	}
	if err := lo.Error(); err != nil {
		return nil, err
	}
	return lo, nil
}

// groupLag is a group's records not yet committed, over topics. The offset
// fetch is stable (KIP-447): offsets committed inside a transaction that has
// not ended are not progress yet. A broker that still has such a transaction
// answers UNSTABLE_OFFSET_COMMIT; that work is in flight and counts as at
// least 1.
func (l *Lag) groupLag(ctx context.Context, group string, topics []string) (lag, position int64, err error) {
	ends, err := listed(l.adm.ListEndOffsets(ctx, topics...))
	if err != nil {
		return 0, 0, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := listed(l.adm.ListStartOffsets(ctx, topics...))
	if err != nil {
		return 0, 0, fmt.Errorf("start offsets: %w", err)
	}
	pending := false
	committed, err := l.adm.FetchOffsetsForTopics(kadm.RequireStable(ctx), group, topics...)
	if errors.Is(err, kerr.UnstableOffsetCommit) {
		pending = true
		committed, err = l.adm.FetchOffsetsForTopics(ctx, group, topics...)
	}
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return 0, 0, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	committed.Each(func(o kadm.OffsetResponse) {
		if errors.Is(o.Err, kerr.UnstableOffsetCommit) {
			pending = true
		}
	})
	var n, sum int64
	ends.Each(func(o kadm.ListedOffset) {
		pos := int64(0)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			pos = s.Offset
		}
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			pos = max(pos, c.At)
		}
		n += max(0, o.Offset-pos)
		sum += pos
	})
	if pending {
		n = max(n, 1)
	}
	return n, sum, nil
}

// viewLag counts a view that follows topic by itself (no group) as the
// consumer name, at positions.
func (l *Lag) viewLag(ctx context.Context, r *Report, name, topic string, pos map[int32]int64) error {
	hwm, err := listed(l.adm.ListEndOffsets(ctx, topic))
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	var n, sum int64
	hwm.Each(func(o kadm.ListedOffset) {
		n += max(0, o.Offset-pos[o.Partition])
		sum += pos[o.Partition]
	})
	r.Consumers[name], r.Positions[name] = n, sum
	return nil
}

// Compute returns the current lag: per partition, the high watermark minus
// the consumer's position. wallet.events is written without transactions,
// so the processors' committed offsets reach its high watermark exactly. On
// wallet.status the view keeps transaction markers, so it reaches the high
// watermark exactly once every transaction there has ended and been read;
// while a processor's transaction is open the view cannot read past it and
// the lag stays above zero. That is on purpose: a group's offsets committed
// inside an open transaction may already be visible, so the events lag
// alone would claim "caught up" too early.
func (l *Lag) Compute(ctx context.Context) (Report, error) {
	r := Report{Consumers: map[string]int64{}, Positions: map[string]int64{}, Brokers: l.Brokers}
	procLag, procPos, err := l.groupLag(ctx, l.group, []string{l.events})
	if err != nil {
		return r, err
	}
	// Records of a transaction that has not ended sit between the last
	// stable offset and the high watermark of the output topics: work in
	// flight, counted even when the group's offsets look settled.
	if len(l.outputs) > 0 {
		hwm, err := listed(l.adm.ListEndOffsets(ctx, l.outputs...))
		if err != nil {
			return r, fmt.Errorf("end offsets: %w", err)
		}
		lso, err := listed(l.adm.ListCommittedOffsets(ctx, l.outputs...))
		if err != nil {
			return r, fmt.Errorf("stable offsets: %w", err)
		}
		hwm.Each(func(o kadm.ListedOffset) {
			if s, ok := lso.Lookup(o.Topic, o.Partition); ok {
				procLag += max(0, o.Offset-s.Offset)
			}
		})
	}
	r.Consumers[l.group], r.Positions[l.group] = procLag, procPos

	sinks := maps.Clone(l.sinks)
	if sinks == nil {
		sinks = map[string][]string{}
	}
	if l.Discover != nil {
		groups, err := l.adm.ListGroups(ctx)
		if err != nil {
			return r, fmt.Errorf("listing consumer groups: %w", err)
		}
		for _, g := range groups.Groups() {
			if _, ok := sinks[g]; ok {
				continue
			}
			if topics, ok := l.Discover(g); ok {
				sinks[g] = topics
			}
		}
	}
	for group, topics := range sinks {
		n, pos, err := l.groupLag(ctx, group, topics)
		if err != nil {
			return r, err
		}
		r.Consumers[group], r.Positions[group] = n, pos
	}

	if l.view != nil {
		if err := l.viewLag(ctx, &r, ViewConsumer, l.status, l.view.Positions()); err != nil {
			return r, err
		}
	}
	if l.Waiting != nil {
		// The view of wallet.passes is a consumer too: until it has read
		// the topic, its count is not the truth, and lag 0 must mean
		// that it is.
		if err := l.viewLag(ctx, &r, WaitingConsumer, l.Waiting.topic, l.Waiting.Positions()); err != nil {
			return r, err
		}
		w := l.Waiting.Now()
		r.Unmatched = &w
	}
	for _, v := range r.Consumers {
		r.Lag += v
	}
	return r, nil
}
