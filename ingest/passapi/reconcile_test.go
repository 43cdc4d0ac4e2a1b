package passapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/peers/passapidoc"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

// reconRig is an embedded broker with the processors and the resolver
// running, a client that writes as ingest does, and a documented Pass API.
type reconRig struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client
	topics  kafka.Topics
	api     *passapidoc.Server
	url     string
}

func newReconRig(t *testing.T) *reconRig {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "recon-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	g := &reconRig{brokers: emb.Brokers(), cl: cl, adm: kadm.NewClient(cl), topics: kafka.DefaultTopics()}
	if err := kafka.EnsureTopics(context.Background(), g.adm, g.topics, kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := processors.New(processors.Config{Brokers: g.brokers, TransactionalID: "recon-process", CheckpointEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := processors.NewResolver(processors.ResolverConfig{Brokers: g.brokers, TransactionalID: "recon-resolve"})
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
	g.api = passapidoc.New("brand", "k", nil)
	var stop func()
	g.url, stop = g.api.Start()
	t.Cleanup(stop)
	return g
}

// send writes events as ingest does: those without a customer wait on
// wallet.passes.
func (g *reconRig) send(t *testing.T, evs ...walletsync.Event) {
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

// view is what the pipeline holds: each customer's registers by
// pass/platform, each pass's holder, and the live waiting events.
type view struct {
	regs    map[string]map[string]walletsync.Register
	holders map[string]string
	waiting int
}

// view reads the pipeline; an error is a topic not known to the client
// yet, or a broker's hiccup: the caller polls again.
func (g *reconRig) view(t *testing.T) (view, error) {
	t.Helper()
	v := view{regs: map[string]map[string]walletsync.Register{}, holders: map[string]string{}}
	var err error
	read := func(topic string, fn func(*kgo.Record)) {
		for p := int32(0); p < 3 && err == nil; p++ {
			_, err = kafka.ReadPartition(context.Background(), g.brokers, g.adm, topic, p, -1, fn)
		}
	}
	read(g.topics.State, func(r *kgo.Record) {
		if string(r.Key) == wire.CheckpointKey {
			return
		}
		if r.Value == nil {
			delete(v.regs, string(r.Key))
			return
		}
		_, regs, err := wire.ParseStateRecord(r.Value)
		if err != nil {
			t.Fatalf("state record: %v", err)
		}
		m := map[string]walletsync.Register{}
		for _, reg := range regs {
			m[reg.PassID+"/"+reg.Platform.String()] = reg
		}
		v.regs[string(r.Key)] = m
	})
	waiting := map[string]bool{}
	read(g.topics.Passes, func(r *kgo.Record) {
		pass, _, w := wire.SplitPassKey(r.Key)
		switch {
		case w:
			waiting[string(r.Key)] = r.Value != nil
		case r.Value == nil:
			delete(v.holders, pass)
		default:
			h, err := wire.ParseHolder(r.Value)
			if err != nil {
				t.Fatalf("holder: %v", err)
			}
			v.holders[pass] = h.CustomerID // the test writes in time order
		}
	})
	for _, live := range waiting {
		if live {
			v.waiting++
		}
	}
	return v, err
}

// awaitView polls the pipeline until ok says it is there; a minute at
// most.
func (g *reconRig) awaitView(t *testing.T, what string, ok func(view) bool) {
	t.Helper()
	var v view
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v, err = g.view(t); err == nil && ok(v) {
			return
		}
	}
	if err != nil {
		t.Fatalf("reading the pipeline: %v", err)
	}
	t.Fatalf("the pipeline never showed %s: registers %v, holders %v, %d waiting", what, v.regs, v.holders, v.waiting)
}

// drift is the injected numbers of one scenario.
type drift struct {
	agreeing, missedInstall, missedUninstall, unknownPass, identityResolved, identityChanged, skipped int
}

// scenario is what seed injected: the passes the API lists and, per
// kind, the customers a report must name.
type scenario struct {
	passes    []passapidoc.Pass
	customers map[string][]string
	installed func(v view) bool // the injected events are folded
	listed    []string          // customer/pass of every resolvable listed pass
}

// seed sends the events of each kind and lists the passes, their kinds
// interleaved so that every page mixes them. Every event is an apple one,
// on 2026-01-05, long before the run starts.
func (g *reconRig) seed(t *testing.T, prefix string, d drift) scenario {
	t.Helper()
	base := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	ms := func(h int) int64 { return base.Add(time.Duration(h) * time.Hour).UnixMilli() }
	installedAt := base
	sc := scenario{customers: map[string][]string{}}
	var evs []walletsync.Event
	type want struct {
		customer, pass string
		installed      bool
	}
	var folded []want
	type item struct {
		kind string
		i    int
	}
	var items []item
	for _, k := range []struct {
		kind string
		n    int
	}{{"agreeing", d.agreeing}, {passapi.KindMissedInstall, d.missedInstall}, {passapi.KindMissedUninstall, d.missedUninstall},
		{passapi.KindUnknownPass, d.unknownPass}, {passapi.KindIdentityResolved, d.identityResolved}, {passapi.KindIdentityChanged, d.identityChanged}, {"skipped", d.skipped}} {
		for i := range k.n {
			items = append(items, item{k.kind, i})
		}
	}
	// Interleave: a stable shuffle by index, so pages hold several kinds.
	slices.SortStableFunc(items, func(a, b item) int { return a.i - b.i })
	for n, it := range items {
		pass := fmt.Sprintf("%s-%03d-%s", prefix, n, it.kind)
		customer := fmt.Sprintf("%s-c%03d", prefix, n)
		p := passapidoc.Pass{ID: pass, PassType: "loyalty", CreationDate: base, Identifiers: map[string]string{"customerId": customer}}
		apple := func() {
			p.Providers = map[string]*time.Time{passapidoc.ProviderApple: &installedAt, passapidoc.ProviderGoogle: nil}
		}
		ev := func(id string, typ walletsync.EventType, cust string, h int) walletsync.Event {
			return walletsync.Event{ID: pass + "-" + id, Type: typ, Platform: walletsync.PlatformApple, CustomerID: cust, PassID: pass, OccurredAt: ms(h), Source: "webhook"}
		}
		switch it.kind {
		case "agreeing":
			evs = append(evs, ev("in", walletsync.TypeInstalled, customer, 0))
			folded = append(folded, want{customer, pass, true})
			apple()
		case passapi.KindMissedInstall: // the webhooks say uninstalled, the API installed
			evs = append(evs, ev("in", walletsync.TypeInstalled, customer, 0), ev("un", walletsync.TypeUninstalled, customer, 1))
			folded = append(folded, want{customer, pass, false})
			apple()
		case passapi.KindMissedUninstall: // the webhooks say installed, the API not
			evs = append(evs, ev("in", walletsync.TypeInstalled, customer, 0))
			folded = append(folded, want{customer, pass, true})
		case passapi.KindUnknownPass: // never heard of; half of them installed
			if it.i%2 == 0 {
				apple()
			}
		case passapi.KindIdentityResolved: // events without a customer wait
			evs = append(evs, ev("in", walletsync.TypeInstalled, "", 0))
			apple()
		case passapi.KindIdentityChanged: // the webhooks named another customer
			evs = append(evs, ev("in", walletsync.TypeInstalled, customer+"-old", 0))
			folded = append(folded, want{customer + "-old", pass, true})
			apple()
		case "skipped":
			p.Identifiers = map[string]string{"email": customer + "@example.com"}
		}
		if it.kind != "agreeing" && it.kind != "skipped" {
			sc.customers[it.kind] = append(sc.customers[it.kind], customer)
		}
		if it.kind != "skipped" {
			sc.listed = append(sc.listed, customer+"/"+pass)
		}
		sc.passes = append(sc.passes, p)
	}
	g.send(t, evs...)
	waiting := d.identityResolved
	sc.installed = func(v view) bool {
		for _, w := range folded {
			r, ok := v.regs[w.customer][w.pass+"/apple"]
			if !ok || r.ObservationID != "" {
				return false
			}
			if in, _, _ := r.State(); in != w.installed || v.holders[w.pass] != w.customer {
				return false
			}
		}
		return v.waiting == waiting
	}
	return sc
}

func (g *reconRig) backfill(t *testing.T, pageSize int, hc *http.Client, reg prometheus.Registerer) *passapi.Backfill {
	t.Helper()
	client, err := passapi.NewClient(passapi.ClientConfig{BaseURL: g.url, Tenant: "brand", APIKey: "k", PageSize: pageSize, Rate: 1000, MaxAttempts: 1, HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	b, err := passapi.NewBackfill(passapi.Config{Client: client, Brokers: g.brokers, Metrics: passapi.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runs reads wallet.backfill.runs: the last report of each run.
func (g *reconRig) runs(t *testing.T) map[string]passapi.RunReport {
	t.Helper()
	out := map[string]passapi.RunReport{}
	if _, err := kafka.ReadPartition(context.Background(), g.brokers, g.adm, passapi.RunsTopic, 0, -1, func(r *kgo.Record) {
		var rep passapi.RunReport
		if err := json.Unmarshal(r.Value, &rep); err != nil {
			t.Fatalf("report %s: %v", r.Value, err)
		}
		if string(r.Key) != rep.RunID {
			t.Errorf("report of %s keyed %q", rep.RunID, r.Key)
		}
		out[rep.RunID] = rep
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkCounts(t *testing.T, what string, rep passapi.RunReport, d drift) {
	t.Helper()
	want := passapi.Drift{MissedInstall: d.missedInstall, MissedUninstall: d.missedUninstall, UnknownPass: d.unknownPass,
		IdentityResolved: d.identityResolved, IdentityChanged: d.identityChanged}
	total := d.agreeing + d.missedInstall + d.missedUninstall + d.unknownPass + d.identityResolved + d.identityChanged + d.skipped
	if rep.Drift != want || rep.Agreeing != d.agreeing || rep.Skipped != d.skipped || rep.Passes != total {
		t.Errorf("%s: %d passes, %d agreeing, %d skipped, drift %+v; want %d, %d, %d, %+v", what, rep.Passes, rep.Agreeing, rep.Skipped, rep.Drift,
			total, d.agreeing, d.skipped, want)
	}
}

func checkSamples(t *testing.T, what string, rep passapi.RunReport, want map[string][]string) {
	t.Helper()
	for _, k := range passapi.Kinds {
		got := slices.Clone(rep.Customers[k])
		slices.Sort(got)
		w := slices.Clone(want[k])
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("%s: customers of %s %v, want %v", what, k, got, w)
		}
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := m.GetLabel()
			if kind == "" && len(labels) == 0 || len(labels) == 1 && labels[0].GetValue() == kind {
				if m.Counter != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{kind=%q}", name, kind)
	return 0
}

// The reconciliation report of a run over a stream with drift of every kind
// injected counts exactly what was injected, names its customers, is kept on
// wallet.backfill.runs and in the metrics; the next run, once the pipeline
// has folded what the first one taught (observations, holders, the waiting
// events resolved), finds every pass agreeing.
func TestReconciliationReportCountsInjectedDrift(t *testing.T) {
	g := newReconRig(t)
	d := drift{agreeing: 6, missedInstall: 2, missedUninstall: 3, unknownPass: 4, identityResolved: 5, identityChanged: 1, skipped: 2}
	sc := g.seed(t, "r", d)
	g.api.SetPasses(sc.passes)
	g.awaitView(t, "the injected events folded", sc.installed)

	reg := prometheus.NewRegistry()
	b := g.backfill(t, 5, nil, reg)
	rep, err := b.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	run := rep.Run
	if !run.Done || run.Resumed || run.RunID == "" || run.FinishedAt == "" || rep.NextPage != 5 {
		t.Errorf("first run: %+v", run)
	}
	checkCounts(t, "first run", run, d)
	checkSamples(t, "first run", run, sc.customers)
	if kept := g.runs(t)[run.RunID]; !reflect.DeepEqual(kept, run) {
		t.Errorf("wallet.backfill.runs holds %+v, RunOnce returned %+v", kept, run)
	}
	for kind, n := range map[string]int{passapi.KindMissedInstall: 2, passapi.KindMissedUninstall: 3, passapi.KindUnknownPass: 4,
		passapi.KindIdentityResolved: 5, passapi.KindIdentityChanged: 1} {
		if got := metric(t, reg, "walletsync_backfill_drift_total", kind); got != float64(n) {
			t.Errorf("drift_total{kind=%s} = %v, want %d", kind, got, n)
		}
		if got := metric(t, reg, "walletsync_backfill_last_run_drift", kind); got != float64(n) {
			t.Errorf("last_run_drift{kind=%s} = %v, want %d", kind, got, n)
		}
	}
	if got := metric(t, reg, "walletsync_backfill_agreeing_total", ""); got != 6 {
		t.Errorf("agreeing_total = %v, want 6", got)
	}

	// The run taught every listed pass's holder (the changed pass now
	// goes to its new customer), the resolver folded the waiting events,
	// and every listed register holds the run's observation.
	g.awaitView(t, "the first run folded", func(v view) bool {
		if v.waiting != 0 {
			return false
		}
		for _, cp := range sc.listed {
			var customer, pass string
			for i := range cp {
				if cp[i] == '/' {
					customer, pass = cp[:i], cp[i+1:]
					break
				}
			}
			if v.holders[pass] != customer {
				return false
			}
			for _, pl := range []string{"apple", "google"} {
				if r, ok := v.regs[customer][pass+"/"+pl]; !ok || r.ObservationID == "" {
					return false
				}
			}
		}
		return true
	})
	rep2, err := b.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Run.RunID == run.RunID {
		// Run ids have a second's resolution; the second run must not
		// overwrite the first's report.
		t.Fatalf("the second run reused the run id %s", run.RunID)
	}
	checkCounts(t, "second run", rep2.Run, drift{agreeing: 21, skipped: 2})
	checkSamples(t, "second run", rep2.Run, nil)
	if runs := g.runs(t); len(runs) != 2 {
		t.Errorf("wallet.backfill.runs holds %d runs, want 2", len(runs))
	}
	if got := metric(t, reg, "walletsync_backfill_last_run_drift", passapi.KindIdentityResolved); got != 0 {
		t.Errorf("last_run_drift{kind=identityResolved} = %v after a clean run, want 0", got)
	}
}

// failingPages fails every page from `from` on while on is set, as a Pass
// API that goes down in the middle of a run.
type failingPages struct {
	from int
	on   atomic.Bool
}

func (f *failingPages) RoundTrip(r *http.Request) (*http.Response, error) {
	var page int
	fmt.Sscan(r.URL.Query().Get("pageIndex"), &page)
	if f.on.Load() && page >= f.from {
		return nil, errors.New("injected: the Pass API is unreachable")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A run interrupted after its first pages and resumed reports what an
// uninterrupted one would: the checkpoint carries the counts, the
// skipped passes and the samples; its report on wallet.backfill.runs is
// not done in between.
func TestReconciliationCountsSurviveAResume(t *testing.T) {
	g := newReconRig(t)
	d := drift{agreeing: 3, missedInstall: 2, missedUninstall: 2, unknownPass: 3, identityResolved: 2, identityChanged: 2, skipped: 2}
	sc := g.seed(t, "s", d)
	g.api.SetPasses(sc.passes) // 16 passes, 4 pages of 4
	g.awaitView(t, "the injected events folded", sc.installed)

	fail := &failingPages{from: 2}
	fail.on.Store(true)
	b := g.backfill(t, 4, &http.Client{Transport: fail}, prometheus.NewRegistry())
	rep, err := b.RunOnce(context.Background())
	if err == nil || rep.Done || rep.NextPage != 2 || rep.Passes != 8 {
		t.Fatalf("interrupted run: %v, %+v", err, rep.Checkpoint)
	}
	mid := g.runs(t)[rep.RunID]
	if mid.Done || mid.Passes != 8 || mid.Agreeing+mid.Skipped+mid.Drift.Total() != 8 || mid.FinishedAt != "" {
		t.Errorf("the report of the interrupted run: %+v", mid)
	}
	fail.on.Store(false)
	rep2, err := b.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep2.RunID != rep.RunID || !rep2.Run.Resumed || !rep2.Run.Done {
		t.Errorf("resumed run: %+v", rep2.Run)
	}
	checkCounts(t, "resumed run", rep2.Run, d)
	checkSamples(t, "resumed run", rep2.Run, sc.customers)
	if kept := g.runs(t)[rep.RunID]; !reflect.DeepEqual(kept, rep2.Run) {
		t.Errorf("wallet.backfill.runs holds %+v, want %+v", kept, rep2.Run)
	}
}
