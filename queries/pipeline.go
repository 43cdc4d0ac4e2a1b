package queries

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Lag measures how many records written to the pipeline's topics are not yet
// processed by each of its consumers (SPEC §6 /v1/pipeline).
type Lag struct {
	adm    *kadm.Client
	events string // consumed by the processors' group
	status string // followed by the status view
	group  string
	view   *StatusView
	// more groups (sinks) register here in later issues: group → topic
	groups map[string]string
}

// NewLag measures the processors' group on events and the view on status.
func NewLag(adm *kadm.Client, eventsTopic, statusTopic, processGroup string, view *StatusView) *Lag {
	return &Lag{adm: adm, events: eventsTopic, status: statusTopic, group: processGroup, view: view, groups: map[string]string{}}
}

// Report is the body of GET /v1/pipeline.
type Report struct {
	Lag       int64            `json:"lag"`
	Consumers map[string]int64 `json:"consumers"`
}

// Compute returns the current lag. A partition's lag is its end offset
// minus the consumer's position: the high watermark for wallet.events
// (written without transactions), the last stable offset for wallet.status,
// whose reader keeps transaction markers and so can reach it exactly.
func (l *Lag) Compute(ctx context.Context) (Report, error) {
	r := Report{Consumers: map[string]int64{}}
	ends, err := l.adm.ListEndOffsets(ctx, l.events)
	if err != nil {
		return r, fmt.Errorf("end offsets of %s: %w", l.events, err)
	}
	starts, err := l.adm.ListStartOffsets(ctx, l.events)
	if err != nil {
		return r, fmt.Errorf("start offsets of %s: %w", l.events, err)
	}
	committed, err := l.adm.FetchOffsetsForTopics(ctx, l.group, l.events)
	if err != nil {
		return r, fmt.Errorf("offsets of group %s: %w", l.group, err)
	}
	var procLag int64
	ends.Each(func(o kadm.ListedOffset) {
		pos := int64(0)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			pos = s.Offset
		}
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			pos = max(pos, c.At)
		}
		procLag += max(0, o.Offset-pos)
	})
	r.Consumers[l.group] = procLag

	if l.view != nil {
		lso, err := l.adm.ListCommittedOffsets(ctx, l.status)
		if err != nil {
			return r, fmt.Errorf("end offsets of %s: %w", l.status, err)
		}
		pos := l.view.Positions()
		var viewLag int64
		lso.Each(func(o kadm.ListedOffset) { viewLag += max(0, o.Offset-pos[o.Partition]) })
		r.Consumers["status-view"] = viewLag
	}
	for _, v := range r.Consumers {
		r.Lag += v
	}
	return r, nil
}
