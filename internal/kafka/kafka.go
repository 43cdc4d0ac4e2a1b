// Package kafka holds what every Kafka-facing part of walletsync shares: the
// topic layout, topic creation, client options, and the embedded broker
// (kfake) that `walletsync run` and the tests use in place of a real Kafka.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// HeaderBaseChange carries, on a clean install/uninstall record, the
// event's walletsync.BaseChange when the processor knew it: "1", "0" or
// "-1"; absent, it is unknown (a late event). Written by the processors,
// stored by the ClickHouse sink.
const HeaderBaseChange = "walletsync-base-change"

// HeaderRetention carries, next to HeaderBaseChange, the event's
// walletsync.RetentionChange list (walletsync.AppendRetentionChanges).
const HeaderRetention = "walletsync-retention"

// Topics names the pipeline's topics (SPEC diagram and §4).
type Topics struct {
	Events string // wallet.events: canonical events, key customerId
	Clean  string // wallet.events.clean: deduplicated valid events
	Status string // wallet.status: compacted status records, one per change of the six fields
	State  string // wallet.state: compacted registers and version, one per change of a register
	DLQ    string // wallet.events.dlq: rejects with reason and origin
	CRMDLQ string // wallet.crm.dlq: status versions a CRM refused or that ran out of retries
}

// DefaultTopics are the names of the contract.
func DefaultTopics() Topics {
	return Topics{Events: "wallet.events", Clean: "wallet.events.clean", Status: "wallet.status", State: "wallet.state", DLQ: "wallet.events.dlq", CRMDLQ: "wallet.crm.dlq"}
}

// All lists the topics in creation order.
func (t Topics) All() []string {
	return []string{t.Events, t.Clean, t.Status, t.State, t.DLQ, t.CRMDLQ}
}

// Layout is how topics are created when missing.
type Layout struct {
	Partitions  int32
	Replication int16
}

// EnsureTopics creates the topics that are missing and checks that all of
// them have the same partition count: processors write a partition's outputs
// to the same partition number of the output topics, so that a partition's
// state is found in one partition of wallet.status and wallet.events.clean.
func EnsureTopics(ctx context.Context, adm *kadm.Client, t Topics, l Layout) error {
	details, err := adm.ListTopics(ctx, t.All()...)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	// Topics that exist decide the count (the layout's is for creating
	// them); they must agree with each other.
	want, first := int32(0), ""
	for _, name := range t.All() {
		d, ok := details[name]
		if !ok || d.Err != nil {
			continue
		}
		if n := int32(len(d.Partitions)); want == 0 {
			want, first = n, name
		} else if n != want {
			return fmt.Errorf("topic %s has %d partitions, %s has %d: every topic of the pipeline must have the same count", name, n, first, want)
		}
	}
	if want == 0 {
		want = l.Partitions
	}
	for _, name := range t.All() {
		if d, ok := details[name]; ok && d.Err == nil {
			continue
		}
		configs := map[string]*string{}
		if name == t.Status || name == t.State {
			compact := "compact"
			configs["cleanup.policy"] = &compact
		}
		if name == t.Clean {
			// The clean topic is the dedupe memory of the processors: it
			// must keep at least the dedupe window, and is also what
			// replays read; keep it a month by default.
			ms := strconv.FormatInt((30 * 24 * time.Hour).Milliseconds(), 10)
			configs["retention.ms"] = &ms
		}
		parts := want
		if parts <= 0 {
			parts = 6
			want = parts
		}
		// Another process may create it at the same moment: that is fine.
		if _, err := adm.CreateTopic(ctx, parts, l.Replication, configs, name); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", name, err)
		}
	}
	return nil
}

// ClientOpts are the options every walletsync client starts from.
func ClientOpts(brokers []string, clientID string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(clientID),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
}

// Embedded is an in-process Kafka-protocol broker (kfake), persisted in a
// directory when one is given, so that `walletsync run` keeps its data across
// restarts.
type Embedded struct {
	cluster     *kfake.Cluster
	unavailable atomic.Bool
	faultOnce   sync.Once
}

// SetProduceUnavailable makes the cluster answer every produce request with
// NOT_ENOUGH_REPLICAS, as a cluster that lost its in-sync replicas does, until
// called with false. It is how tests take "the broker" away.
func (e *Embedded) SetProduceUnavailable(down bool) {
	e.faultOnce.Do(func() {
		e.cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
			e.cluster.KeepControl()
			if !e.unavailable.Load() {
				return nil, nil, false
			}
			req := kr.(*kmsg.ProduceRequest)
			resp := req.ResponseKind().(*kmsg.ProduceResponse)
			for _, rt := range req.Topics {
				t := kmsg.NewProduceResponseTopic()
				t.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					p := kmsg.NewProduceResponseTopicPartition()
					p.Partition, p.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
					t.Partitions = append(t.Partitions, p)
				}
				resp.Topics = append(resp.Topics, t)
			}
			return resp, nil, true
		})
	})
	e.unavailable.Store(down)
}

// StartEmbedded starts an embedded cluster of n brokers (n ≥ 1) listening on
// loopback. dataDir "" keeps everything in memory; extra options are for
// tests (shorter group timeouts, faults).
func StartEmbedded(dataDir string, n int, extra ...kfake.Opt) (*Embedded, error) {
	opts := append([]kfake.Opt{kfake.NumBrokers(max(n, 1))}, extra...) // kfake listens on loopback only
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded broker: %w", err)
	}
	return &Embedded{cluster: c}, nil
}

// Brokers are the embedded cluster's addresses.
func (e *Embedded) Brokers() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for tests that inject faults.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the cluster, flushing its data directory.
func (e *Embedded) Close() { e.cluster.Close() }
