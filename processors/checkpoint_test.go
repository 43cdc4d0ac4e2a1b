package processors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

// onePartition is a broker with the pipeline's topics on one partition, so
// that checkpoints and replays are easy to reason about.
type onePartition struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client
	topics  kafka.Topics
}

func newOnePartition(t *testing.T) *onePartition {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "checkpoint-test"), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	o := &onePartition{brokers: emb.Brokers(), cl: cl, adm: kadm.NewClient(cl), topics: kafka.DefaultTopics()}
	if err := kafka.EnsureTopics(context.Background(), o.adm, o.topics, kafka.Layout{Partitions: 1, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *onePartition) send(t *testing.T, evs []walletsync.Event) {
	t.Helper()
	var recs []*kgo.Record
	for i := range evs {
		recs = append(recs, &kgo.Record{Topic: o.topics.Events, Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i])})
	}
	if err := o.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// run starts a processor and returns a stop function that waits for it.
func (o *onePartition) run(t *testing.T, cfg processors.Config) (stop func()) {
	t.Helper()
	cfg.Brokers, cfg.Topics = o.brokers, o.topics
	p, err := processors.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
	}
}

// caughtUp waits until the group has committed every event.
func (o *onePartition) caughtUp(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ends, err1 := o.adm.ListEndOffsets(ctx, o.topics.Events)
		offs, err2 := o.adm.FetchOffsets(kadm.RequireStable(ctx), processors.DefaultGroup)
		if err1 != nil || err2 != nil {
			continue
		}
		end, okE := ends.Lookup(o.topics.Events, 0)
		if c, ok := offs.Lookup(o.topics.Events, 0); ok && okE && end.Err == nil && c.At == end.Offset {
			return
		}
	}
	t.Fatal("the processor never caught up")
}

// read calls fn with every committed record of the topic. A topic the test
// client never wrote to may be unknown to its metadata for a moment, so a
// failed read is tried again from the start.
func (o *onePartition) read(t *testing.T, topic string, fn func(*kgo.Record)) {
	t.Helper()
	var (
		recs []*kgo.Record
		err  error
	)
	for try := 0; try < 50; try++ {
		recs = recs[:0]
		if _, err = kafka.ReadPartition(context.Background(), o.brokers, o.adm, topic, 0, -1, func(r *kgo.Record) { recs = append(recs, r) }); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		fn(r)
	}
}

// stateRecords splits wallet.state into its customer records and the
// checkpoint markers' offsets.
func (o *onePartition) stateRecords(t *testing.T) (customers int, markers []int64) {
	t.Helper()
	o.read(t, o.topics.State, func(r *kgo.Record) {
		if strings.HasPrefix(string(r.Key), "\xff") {
			var m struct{ CleanOffset int64 }
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("checkpoint marker %q: %v", r.Value, err)
			}
			markers = append(markers, m.CleanOffset)
			return
		}
		customers++
	})
	return customers, markers
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metricValue(t, reg, name)
}

// metricValue is the value of the first series of a counter or gauge.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// wallet.state is written at checkpoints, one record per changed customer,
// not one per change; the member taking over folds the clean events after
// the last checkpoint again and carries on exactly, versions included.
func TestCheckpointedStateRecoversExactly(t *testing.T) {
	o := newOnePartition(t)
	cfg := synth.Default(900)
	cfg.Customers, cfg.Seed = 15, 3
	evs := synth.Events(cfg)

	regA := prometheus.NewRegistry()
	stop := o.run(t, processors.Config{TransactionalID: "a", CheckpointEvents: 100, CheckpointEvery: time.Hour,
		Metrics: processors.NewMetrics(regA)})
	// In batches, so that there are transactions to checkpoint in: the
	// count is checked as each begins.
	for i := 0; i < 600; i += 60 {
		o.send(t, evs[i:i+60])
		o.caughtUp(t)
	}
	stop()
	customers, markers := o.stateRecords(t)
	changes := counter(t, regA, "walletsync_process_events_total")
	if len(markers) < 2 {
		t.Fatalf("%d checkpoint markers after 600 events at one per 100, want several", len(markers))
	}
	if float64(customers) >= changes/2 {
		t.Errorf("wallet.state holds %d customer records for %v events: not coalesced", customers, changes)
	}
	if got := counter(t, regA, "walletsync_process_state_records_total"); got != float64(customers) {
		t.Errorf("state_records_total %v, wallet.state holds %d", got, customers)
	}

	// A new member, as after a crash: the events after the last checkpoint
	// exist only on the clean topic.
	o.send(t, evs[600:])
	regB := prometheus.NewRegistry()
	stop = o.run(t, processors.Config{TransactionalID: "b", CheckpointEvents: 100, CheckpointEvery: time.Hour,
		Metrics: processors.NewMetrics(regB)})
	o.caughtUp(t)
	stop()
	if counter(t, regB, "walletsync_process_replayed_events_total") == 0 {
		t.Error("the second member replayed nothing: the first one's last events were never checkpointed, so it must have")
	}
	checkStatuses(t, o.topics.Status, evs, func(topic string, fn func(*kgo.Record)) { o.read(t, topic, fn) })
}

// A partition that goes quiet is still checkpointed within CheckpointEvery:
// its last changes must not live on the clean topic alone, whose retention
// is finite.
func TestQuietPartitionIsCheckpointed(t *testing.T) {
	o := newOnePartition(t)
	cfg := synth.Default(80)
	cfg.Customers, cfg.Seed = 10, 4
	evs := synth.Events(cfg)
	o.send(t, evs)
	stop := o.run(t, processors.Config{TransactionalID: "q", CheckpointEvents: 1 << 30, CheckpointEvery: 200 * time.Millisecond})
	defer stop()
	o.caughtUp(t)
	lastClean := int64(-1)
	o.read(t, o.topics.Clean, func(r *kgo.Record) { lastClean = r.Offset })
	fold := walletsync.NewFold()
	for i := range evs {
		fold.Apply(&evs[i])
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		customers, markers := o.stateRecords(t)
		if len(markers) > 0 && markers[len(markers)-1] > lastClean && customers >= fold.Len() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint past the last clean record (%d) with every customer: markers %v, %d of %d customers", lastClean, markers, customers, fold.Len())
		}
	}
}

// wallet.state written by a version without checkpoints (a record at every
// change, no marker) is whole: it is loaded as it is, nothing replayed, and
// the first transaction writes a marker before folding anything.
func TestStateWithoutMarkerLoadsAsWhole(t *testing.T) {
	o := newOnePartition(t)
	at := func(h int) int64 { return time.Date(2026, 1, 1, h, 0, 0, 0, time.UTC).UnixMilli() }
	old := []walletsync.Event{
		{ID: "e1", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c1", PassID: "p", OccurredAt: at(1)},
		{ID: "e2", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: "c1", PassID: "p", OccurredAt: at(2)},
		{ID: "e3", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: "c1", PassID: "p", OccurredAt: at(3)},
	}
	f := walletsync.NewFold()
	var recs []*kgo.Record
	for i := range old {
		f.Apply(&old[i])
		st, regs, _ := f.Record("c1")
		rec := wire.AppendStateRecord(nil, &st, regs)
		recs = append(recs, &kgo.Record{Topic: o.topics.State, Key: []byte("c1"), Value: rec})
	}
	if err := o.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	next := walletsync.Event{ID: "e4", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c1", PassID: "p", OccurredAt: at(4)}
	o.send(t, []walletsync.Event{next})
	reg := prometheus.NewRegistry()
	stop := o.run(t, processors.Config{TransactionalID: "legacy", Metrics: processors.NewMetrics(reg)})
	o.caughtUp(t)
	stop()
	var versions []string
	o.read(t, o.topics.Status, func(r *kgo.Record) {
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, fmt.Sprintf("%s v%d %s", st.CustomerID, st.Version, st.Wallet))
	})
	if fmt.Sprint(versions) != "[c1 v4 both]" {
		t.Errorf("wallet.status %v, want [c1 v4 both]", versions)
	}
	if _, markers := o.stateRecords(t); len(markers) == 0 {
		t.Error("no checkpoint marker written")
	}
	if got := counter(t, reg, "walletsync_process_replayed_events_total"); got != 0 {
		t.Errorf("replayed %v events from a state without a marker", got)
	}
}
