package processors_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

// identityRig is a three-partition broker running the processors and the
// resolver, and a client that writes as ingest and the backfill do.
type identityRig struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client
	topics  kafka.Topics
	reg     *prometheus.Registry
}

func newIdentityRig(t *testing.T, expiry time.Duration) *identityRig {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "identity-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	g := &identityRig{brokers: emb.Brokers(), cl: cl, adm: kadm.NewClient(cl), topics: kafka.DefaultTopics(), reg: prometheus.NewRegistry()}
	if err := kafka.EnsureTopics(context.Background(), g.adm, g.topics, kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := processors.New(processors.Config{Brokers: g.brokers, TransactionalID: "identity-process", CheckpointEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := processors.NewResolver(processors.ResolverConfig{Brokers: g.brokers, TransactionalID: "identity-resolve", Expiry: expiry,
		Metrics: processors.NewResolverMetrics(g.reg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- p.Run(ctx) }()
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	return g
}

// send writes events as ingest does: those without a customer wait on
// wallet.passes.
func (g *identityRig) send(t *testing.T, evs ...walletsync.Event) {
	t.Helper()
	var recs []*kgo.Record
	for i := range evs {
		if evs[i].CustomerID == "" {
			recs = append(recs, &kgo.Record{Topic: g.topics.Passes, Key: wire.WaitingKey(evs[i].PassID, evs[i].ID), Value: wire.AppendWaiting(nil, &evs[i])})
			continue
		}
		recs = append(recs, &kgo.Record{Topic: g.topics.Events, Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i])})
	}
	if err := g.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// teach writes a holder record as the backfill does.
func (g *identityRig) teach(t *testing.T, h wire.Holder) {
	t.Helper()
	if err := g.cl.ProduceSync(context.Background(), &kgo.Record{Topic: g.topics.Passes, Key: wire.HolderKey(h.PassID), Value: wire.AppendHolder(nil, &h)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// read calls fn with every committed record of topic's three partitions;
// a topic not written yet may be unknown to the client for a moment, which
// is tried again.
func (g *identityRig) read(t *testing.T, topic string, fn func(*kgo.Record)) {
	t.Helper()
	var err error
	for try := 0; try < 50; try++ {
		var recs []*kgo.Record
		err = nil
		for p := int32(0); p < 3 && err == nil; p++ {
			_, err = kafka.ReadPartition(context.Background(), g.brokers, g.adm, topic, p, -1, func(r *kgo.Record) { recs = append(recs, r) })
		}
		if err == nil {
			for _, r := range recs {
				fn(r)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("reading %s: %v", topic, err)
}

// statuses reads wallet.status: the last record of each customer.
func (g *identityRig) statuses(t *testing.T) map[string]walletsync.Fields {
	t.Helper()
	got := map[string]walletsync.Fields{}
	g.read(t, g.topics.Status, func(r *kgo.Record) {
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			t.Fatalf("bad status record: %v", err)
		}
		got[st.CustomerID] = st.Fields
	})
	return got
}

// await polls until the statuses equal the fold of want, or fails after a
// minute with the difference.
func (g *identityRig) await(t *testing.T, want []walletsync.Event) {
	t.Helper()
	f := walletsync.NewFold()
	for i := range want {
		f.Apply(&want[i])
	}
	exp := map[string]walletsync.Fields{}
	for _, s := range f.Statuses() {
		exp[s.CustomerID] = s.Fields
	}
	var got map[string]walletsync.Fields
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = g.statuses(t)
		if fmt.Sprint(got) == fmt.Sprint(exp) {
			return
		}
	}
	t.Fatalf("statuses\n got %v\nwant %v", got, exp)
}

func at(s string) int64 {
	ms, err := wire.ParseTime([]byte(s))
	if err != nil {
		panic(err)
	}
	return ms
}

func ev(id string, typ walletsync.EventType, customer, pass, when string) walletsync.Event {
	return walletsync.Event{ID: id, Type: typ, Platform: walletsync.PlatformApple, CustomerID: customer, PassID: pass, OccurredAt: at(when), Source: "webhook"}
}

// withCustomer is evs with the customer of every waiting event filled in.
func withCustomer(evs []walletsync.Event, customer string) []walletsync.Event {
	out := make([]walletsync.Event, len(evs))
	for i, e := range evs {
		if e.CustomerID == "" {
			e.CustomerID = customer
		}
		out[i] = e
	}
	return out
}

func TestWaitingEventsFoldOnceAnEventNamesTheCustomer(t *testing.T) {
	for _, order := range []string{"identifying event after", "identifying event before"} {
		t.Run(order, func(t *testing.T) {
			g := newIdentityRig(t, 0)
			waiting := []walletsync.Event{
				ev("w1", walletsync.TypeInstalled, "", "pass-1", "2026-03-01T10:00:00Z"),
				ev("w2", walletsync.TypeUninstalled, "", "pass-1", "2026-03-05T10:00:00Z"),
				ev("w3", walletsync.TypeInstalled, "", "pass-1", "2026-03-09T10:00:00Z"),
			}
			ident := ev("id1", walletsync.TypeInstalled, "alice", "pass-1", "2026-03-02T10:00:00Z")
			ident.Platform = walletsync.PlatformGoogle
			if order == "identifying event after" {
				g.send(t, waiting...)
				time.Sleep(300 * time.Millisecond) // they wait first
				g.send(t, ident)
			} else {
				g.send(t, ident)
				g.await(t, []walletsync.Event{ident})
				g.send(t, waiting...)
			}
			g.await(t, withCustomer(append([]walletsync.Event{ident}, waiting...), "alice"))
		})
	}
}

func TestWaitingEventsFoldOnceTheBackfillNamesTheCustomer(t *testing.T) {
	g := newIdentityRig(t, 0)
	waiting := []walletsync.Event{
		ev("w1", walletsync.TypeInstalled, "", "pass-1", "2026-03-01T10:00:00Z"),
		ev("w2", walletsync.TypeInstalled, "", "pass-2", "2026-03-01T11:00:00Z"),
	}
	g.send(t, waiting...)
	g.teach(t, wire.Holder{PassID: "pass-1", CustomerID: "bob", At: at("2026-03-10T03:00:00Z"), Source: "backfill"})
	g.await(t, withCustomer(waiting[:1], "bob"))
	// pass-2 still waits; an event that names no customer for the known
	// pass-1 is folded at once.
	later := ev("w3", walletsync.TypeUninstalled, "", "pass-1", "2026-03-11T10:00:00Z")
	g.send(t, later)
	g.await(t, withCustomer([]walletsync.Event{waiting[0], later}, "bob"))
	if n := gauge(t, g.reg, "walletsync_resolve_events_waiting"); n != 1 {
		t.Errorf("waiting gauge %v, want 1 (pass-2's event)", n)
	}
}

// A pass that changes hands keeps its history with the old customer; what
// waits after the change goes to the new one.
func TestPassChangingHandsStartsAnew(t *testing.T) {
	g := newIdentityRig(t, 0)
	old := ev("e1", walletsync.TypeInstalled, "alice", "pass-1", "2026-03-01T10:00:00Z")
	g.send(t, old)
	g.await(t, []walletsync.Event{old})
	g.teach(t, wire.Holder{PassID: "pass-1", CustomerID: "carol", At: at("2026-04-01T03:00:00Z"), Source: "backfill"})
	next := ev("e2", walletsync.TypeUninstalled, "", "pass-1", "2026-04-02T10:00:00Z")
	g.send(t, next)
	g.await(t, []walletsync.Event{old, withCustomer([]walletsync.Event{next}, "carol")[0]})
	// An older holder record (an event of alice's, late) does not take
	// the pass back.
	g.teach(t, wire.Holder{PassID: "pass-1", CustomerID: "alice", At: at("2026-03-15T00:00:00Z"), Source: "event"})
	last := ev("e3", walletsync.TypeInstalled, "", "pass-1", "2026-04-03T10:00:00Z")
	g.send(t, last)
	g.await(t, append([]walletsync.Event{old}, withCustomer([]walletsync.Event{next, last}, "carol")...))
	if n := counter(t, g.reg, "walletsync_resolve_holder_changes_total"); n != 1 {
		t.Errorf("holder changes %v, want 1", n)
	}
}

func TestWaitingEventsExpireIntoTheDLQ(t *testing.T) {
	g := newIdentityRig(t, 1500*time.Millisecond)
	lost := ev("w1", walletsync.TypeInstalled, "", "pass-never", "2026-03-01T10:00:00Z")
	g.send(t, lost)
	var reason string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && reason == ""; time.Sleep(100 * time.Millisecond) {
		g.read(t, g.topics.DLQ, func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafka.HeaderError && string(r.Key) == string(wire.WaitingKey("pass-never", "w1")) {
					reason = string(h.Value)
				}
			}
		})
	}
	if !strings.Contains(reason, `no customer for pass "pass-never" within 1.5s`) {
		t.Fatalf("DLQ reason %q", reason)
	}
	// Its wallet.passes record is deleted, so no later member waits on it:
	// in the transaction after the one that wrote the dead letter.
	waits := func() bool {
		live := map[string]bool{}
		g.read(t, g.topics.Passes, func(r *kgo.Record) { live[string(r.Key)] = r.Value != nil })
		return live[string(wire.WaitingKey("pass-never", "w1"))]
	}
	for deadline := time.Now().Add(10 * time.Second); waits() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if waits() {
		t.Error("the expired event's wallet.passes record has no tombstone")
	}
	// The metrics follow the commit that made the DLQ record visible.
	for deadline := time.Now().Add(10 * time.Second); counter(t, g.reg, "walletsync_resolve_events_expired_total") != 1 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := counter(t, g.reg, "walletsync_resolve_events_expired_total"); n != 1 {
		t.Errorf("expired %v, want 1", n)
	}
	if n := gauge(t, g.reg, "walletsync_resolve_events_waiting"); n != 0 {
		t.Errorf("waiting gauge %v, want 0", n)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metricValue(t, reg, name)
}
