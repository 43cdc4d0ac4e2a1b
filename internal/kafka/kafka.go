// Package kafka holds what every Kafka-facing part of walletsync shares: the
// topic layout, topic creation, client options, the sinks' consume loop
// (ConsumeBatches), and the embedded broker (kfake) that `walletsync run` and
// the tests use in place of a real Kafka.
package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
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
// walletsync.RetentionChange list (wire.AppendRetentionChanges).
const HeaderRetention = "walletsync-retention"

// HeaderIDKey carries walletsync.KeyOf(eventId) on clean records, so that
// dedupe state is rebuilt without parsing the events.
const HeaderIDKey = "walletsync-idkey"

// Headers on dead-letter records, the processors' (an event refused) and the
// CRM sinks' (a status a CRM refused): why, and where the original record
// came from.
const (
	HeaderError     = "walletsync-error"
	HeaderTopic     = "walletsync-topic"
	HeaderPartition = "walletsync-partition"
	HeaderOffset    = "walletsync-offset"
	// HeaderDestination names the CRM, HeaderAttempts how often it was tried.
	HeaderDestination = "walletsync-destination"
	HeaderAttempts    = "walletsync-attempts"
)

// The pipeline's consumer groups. Each component's package defaults to its
// name here; pipeline.Spec lists which component reads what under which.
const (
	GroupProcess    = "walletsync-process"
	GroupArchive    = "walletsync-archive"
	GroupClickHouse = "walletsync-clickhouse"
	// GroupCRMPrefix and a destination's name (webhook, actito, hubspot)
	// make a CRM sink's group.
	GroupCRMPrefix = "walletsync-crm-"
)

// GroupCRM is the consumer group of the CRM sink for a destination.
func GroupCRM(destination string) string { return GroupCRMPrefix + destination }

// BackfillTopic holds the backfill's cursor: compacted, one partition,
// created by the backfill.
const BackfillTopic = "wallet.backfill"

// BackfillRunsTopic holds the backfill's reconciliation reports, one per
// run keyed by its id: compacted, one partition, created by the backfill.
const BackfillRunsTopic = "wallet.backfill.runs"

// GroupResolve is the consumer group of the resolver, which folds the
// events waiting on wallet.passes once their pass's customer is known.
const GroupResolve = "walletsync-resolve"

// Topics names the pipeline's topics (SPEC diagram and §4).
type Topics struct {
	Events string // wallet.events: canonical events, key customerId
	Clean  string // wallet.events.clean: deduplicated valid events
	Status string // wallet.status: compacted status records, one per change of the six fields
	State  string // wallet.state: compacted registers and version, one per change of a register
	DLQ    string // wallet.events.dlq: rejects with reason and origin
	CRMDLQ string // wallet.crm.dlq: status versions a CRM refused or that ran out of retries
	// Passes is wallet.passes: compacted, partitioned by passId
	// (PassPartitioner): who holds each pass, and the events that wait
	// for their pass's customer (identity repair, SPEC §6).
	Passes string
}

// DefaultTopics are the names of the contract.
func DefaultTopics() Topics {
	return Topics{Events: "wallet.events", Clean: "wallet.events.clean", Status: "wallet.status", State: "wallet.state", DLQ: "wallet.events.dlq", CRMDLQ: "wallet.crm.dlq", Passes: PassesTopic}
}

// All lists the topics in creation order.
func (t Topics) All() []string {
	return []string{t.Events, t.Clean, t.Status, t.State, t.DLQ, t.CRMDLQ, t.Passes}
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
		if name == t.Status || name == t.State || name == t.Passes {
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
		// wallet.passes is partitioned by pass, whoever writes it.
		kgo.RecordPartitioner(PassPartitioner(kgo.StickyKeyPartitioner(nil))),
	}
}

// Embedded is an in-process Kafka-protocol broker (kfake), persisted in a
// directory when one is given, so that `walletsync run` keeps its data across
// restarts.
type Embedded struct {
	// CrashAborts are the partitions whose open transaction, left by a
	// crash, got its abort marker at start (markCrashAborts).
	CrashAborts []string

	cluster     *kfake.Cluster
	unavailable atomic.Bool
	faultOnce   sync.Once
	disk        *DiskGuard
}

// DiskErr is why the broker refuses new records now (its data dir's disk
// below the reserve), or nil.
func (e *Embedded) DiskErr() error { return e.disk.Err() }

// guardProduce answers produce requests with KAFKA_STORAGE_ERROR while the
// data dir's disk is below the reserve. Other requests (the markers that
// end transactions, offset commits) still go through, into the reserve.
func (e *Embedded) guardProduce() {
	e.cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if e.disk.Err() == nil {
			return nil, nil, false
		}
		return refuseProduce(kr.(*kmsg.ProduceRequest), kerr.KafkaStorageError.Code), nil, true
	})
}

// refuseProduce answers every partition of a produce request with code.
func refuseProduce(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		t := kmsg.NewProduceResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition, p.ErrorCode = rp.Partition, code
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
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
			return refuseProduce(kr.(*kmsg.ProduceRequest), kerr.NotEnoughReplicas.Code), nil, true
		})
	})
	e.unavailable.Store(down)
}

// EmbeddedConfig configures the embedded cluster.
type EmbeddedConfig struct {
	// DataDir keeps the cluster's data across restarts; "" keeps
	// everything in memory.
	DataDir string
	// Brokers in the cluster (default 1).
	Brokers int
	// Listen "" puts the brokers on loopback at free ports; "HOST:PORT"
	// puts the first at that address and the others at the next ports on
	// the same host, so that clients outside the process (kcat) find the
	// cluster at a known address across restarts. HOST is also the
	// address the brokers advertise, so it must be one clients can reach
	// (not 0.0.0.0).
	Listen string
	// MinFreeBytes: with a DataDir, produce requests are refused
	// (KAFKA_STORAGE_ERROR) while the data dir's disk has less free space
	// than this (0: DefaultMinFreeBytes; negative: no reserve).
	MinFreeBytes int64
}

// StartEmbedded starts an embedded cluster; extra options are for tests
// (shorter group timeouts, faults).
func StartEmbedded(cfg EmbeddedConfig, extra ...kfake.Opt) (*Embedded, error) {
	n := max(cfg.Brokers, 1)
	dataDir, listen := cfg.DataDir, cfg.Listen
	opts := []kfake.Opt{kfake.NumBrokers(n)}
	if listen != "" {
		host, portText, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("kafka listen address %q: %w", listen, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil || port <= 0 || port+n-1 > 65535 {
			return nil, fmt.Errorf("kafka listen address %q: the port must be a number from 1 to %d", listen, 65536-n)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return nil, fmt.Errorf("kafka listen address %q: the host is also what the brokers advertise, so it must be one clients can reach (e.g. 127.0.0.1), not a wildcard", listen)
		}
		ports := make([]int, n)
		for i := range ports {
			ports[i] = port + i
		}
		// kfake listens on 127.0.0.1:port; the host is swapped for ours.
		opts = append(opts, kfake.Ports(ports...), kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}))
	}
	opts = append(opts, extra...)
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded broker: %w", err)
	}
	e := &Embedded{cluster: c}
	if dataDir != "" {
		minFree := cfg.MinFreeBytes
		if minFree == 0 {
			minFree = DefaultMinFreeBytes
		}
		if e.disk = NewDiskGuard(dataDir, minFree); e.disk != nil {
			e.guardProduce()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if e.CrashAborts, err = markCrashAborts(ctx, c.ListenAddrs()); err != nil {
			c.Close()
			return nil, fmt.Errorf("starting the embedded broker: ending the transactions a crash left open: %w", err)
		}
	}
	return e, nil
}

// Brokers are the embedded cluster's addresses.
func (e *Embedded) Brokers() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for tests that inject faults.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the cluster, flushing its data directory.
func (e *Embedded) Close() { e.cluster.Close() }

// markCrashAborts writes the abort marker that kfake's recovery leaves out.
// A transaction that a crash left open is aborted when kfake reloads its
// DataDir (its batches are listed as aborted, the stable offset moves past
// them), but no control record follows its batches. Real Kafka always ends
// a transaction with a marker, and read_committed consumers rely on it: they
// learn that they have reached the end of a partition by reading a record
// there, and a log that ends in aborted batches gives them none. Until a
// later transaction wrote to the partition, every such consumer (the
// archive, the sinks) would report lag for ever. So, before any client
// connects, each partition whose last batch is transactional data with no
// transaction open (stable offset = high watermark, which a live
// transaction would hold back) gets the abort marker its producer's
// transaction should have ended with.
//
// It returns the partitions it marked.
func markCrashAborts(ctx context.Context, brokers []string) ([]string, error) {
	cl, err := kgo.NewClient(ClientOpts(brokers, "walletsync-embedded-recovery")...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	topics := md.Topics.Names()
	if len(topics) == 0 {
		return nil, nil
	}
	hwms, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	lsos, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	var marked []string
	for _, td := range md.Topics.Sorted() {
		for _, pd := range td.Partitions.Sorted() {
			h, okH := hwms.Lookup(td.Topic, pd.Partition)
			l, okL := lsos.Lookup(td.Topic, pd.Partition)
			if !okH || !okL || h.Err != nil || l.Err != nil || h.Offset <= 0 || l.Offset != h.Offset {
				continue
			}
			last, err := lastBatch(ctx, cl, td, pd.Partition, pd.Leader, h.Offset-1)
			if err != nil {
				return marked, fmt.Errorf("reading the end of %s/%d: %w", td.Topic, pd.Partition, err)
			}
			const transactional, control = 0x10, 0x20
			if last == nil || last.Attributes&transactional == 0 || last.Attributes&control != 0 {
				continue
			}
			req := kmsg.NewPtrWriteTxnMarkersRequest()
			m := kmsg.NewWriteTxnMarkersRequestMarker()
			m.ProducerID, m.ProducerEpoch, m.Committed = last.ProducerID, last.ProducerEpoch, false
			mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
			mt.Topic, mt.Partitions = td.Topic, []int32{pd.Partition}
			m.Topics = append(m.Topics, mt)
			req.Markers = append(req.Markers, m)
			kresp, err := cl.Broker(int(pd.Leader)).Request(ctx, req)
			if err != nil {
				return marked, fmt.Errorf("writing the abort marker of %s/%d: %w", td.Topic, pd.Partition, err)
			}
			for _, rm := range kresp.(*kmsg.WriteTxnMarkersResponse).Markers {
				for _, rt := range rm.Topics {
					for _, rp := range rt.Partitions {
						if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
							return marked, fmt.Errorf("writing the abort marker of %s/%d: %w", td.Topic, pd.Partition, err)
						}
					}
				}
			}
			marked = append(marked, fmt.Sprintf("%s/%d", td.Topic, pd.Partition))
		}
	}
	return marked, nil
}

// lastBatch returns the header of the batch holding offset at (the last
// offset of the partition), read uncommitted; nil if there is none.
func lastBatch(ctx context.Context, cl *kgo.Client, td kadm.TopicDetail, part, leader int32, at int64) (*kmsg.RecordBatch, error) {
	p, err := fetchPartition(ctx, cl, leader, td.Topic, td.ID, part, at, 64<<20, false)
	if err != nil {
		return nil, err
	}
	if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
		return nil, err
	}
	var last *kmsg.RecordBatch
	for in := p.RecordBatches; len(in) >= 12; {
		n := 12 + int(int32(binary.BigEndian.Uint32(in[8:])))
		if n < 12 || n > len(in) {
			break
		}
		b := new(kmsg.RecordBatch)
		if err := b.ReadFrom(in[:n]); err != nil {
			return nil, err
		}
		last, in = b, in[n:]
	}
	return last, nil
}
