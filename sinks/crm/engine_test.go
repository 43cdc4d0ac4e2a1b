package crm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/sinks/crm/crmtest"
	"github.com/walletsync/walletsync/wire"
)

// cluster is an embedded broker with the pipeline's topics and a fold whose
// status versions the test writes to wallet.status, as processors do
// (transactions included, so the sink meets transaction markers).
type cluster struct {
	t       testing.TB
	emb     *kafka.Embedded
	cl      *kgo.Client
	txn     *kgo.Client
	adm     *kadm.Client
	topics  kafka.Topics
	fold    *walletsync.Fold
	changes int
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "crm-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	txn, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "crm-test-txn"), kgo.TransactionalID("crm-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Close)
	c := &cluster{t: t, emb: emb, cl: cl, txn: txn, adm: kadm.NewClient(cl), topics: kafka.DefaultTopics(), fold: walletsync.NewFold()}
	if err := kafka.EnsureTopics(context.Background(), c.adm, c.topics, kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	return c
}

// fold applies events and writes every status change, in transactions of
// up to 200 records.
func (c *cluster) write(events []walletsync.Event) {
	c.t.Helper()
	ctx := context.Background()
	var recs []*kgo.Record
	flush := func() {
		if len(recs) == 0 {
			return
		}
		if err := c.txn.BeginTransaction(); err != nil {
			c.t.Fatal(err)
		}
		if err := c.txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			c.t.Fatal(err)
		}
		if err := c.txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			c.t.Fatal(err)
		}
		recs = recs[:0]
	}
	for i := range events {
		st, changed := c.fold.Apply(&events[i])
		if !changed {
			continue
		}
		c.changes++
		recs = append(recs, &kgo.Record{Topic: c.topics.Status, Key: []byte(st.CustomerID),
			Value: wire.AppendStateRecord(nil, &st, c.fold.Registers(st.CustomerID))})
		if len(recs) == 200 {
			flush()
		}
	}
	flush()
}

// caughtUp: the group has committed the end of wallet.status.
func (c *cluster) caughtUp(group string) bool {
	ctx := context.Background()
	ends, err := c.adm.ListEndOffsets(ctx, c.topics.Status)
	if err != nil {
		return false
	}
	offs, err := c.adm.FetchOffsets(ctx, group)
	if err != nil {
		return false
	}
	ok := len(ends) > 0
	ends.Each(func(e kadm.ListedOffset) {
		o, found := offs.Lookup(e.Topic, e.Partition)
		if e.Err != nil || e.Offset > 0 && (!found || o.At < e.Offset) {
			ok = false
		}
	})
	return ok
}

func (c *cluster) waitCaughtUp(group string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for !c.caughtUp(group) {
		if time.Now().After(deadline) {
			c.t.Fatalf("group %s did not commit the end of wallet.status within %v", group, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// want is the fold's statuses in the CRM's strings.
func (c *cluster) want() map[string]crmtest.Record {
	out := map[string]crmtest.Record{}
	ts := func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return string(wire.AppendTime(nil, ms))
	}
	for _, s := range c.fold.Statuses() {
		out[s.CustomerID] = crmtest.Record{WalletStatus: s.Wallet.String(), AppleAt: ts(s.AppleInstalledAt), GoogleAt: ts(s.GoogleInstalledAt),
			LastChangedAt: ts(s.LastChangedAt), LastEvent: s.LastEvent.String(),
			FirstInstalledAt: ts(s.FirstInstalledAt), PassIssuedAt: ts(s.PassIssuedAt)}
	}
	return out
}

func compare(t *testing.T, got, want map[string]crmtest.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("the CRM holds %d customers, the fold %d", len(got), len(want))
	}
	bad := 0
	for id, w := range want {
		g := got[id]
		g.Version = 0
		if g != w && bad < 5 {
			t.Errorf("customer %s: CRM %+v, fold %+v", id, g, w)
			bad++
		}
	}
}

// run starts an engine and returns its stop function.
func run(t *testing.T, c *cluster, cfg crm.Config, dest crm.Destination) (stop func()) {
	t.Helper()
	cfg.Brokers = c.emb.Brokers()
	e, err := crm.New(cfg, dest)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func events(customers, n int, seed uint64) []walletsync.Event {
	cfg := synth.Default(n)
	cfg.Customers, cfg.Seed = customers, seed
	return synth.Events(cfg)
}

// flappyStream is a stream in rounds, one event per customer a round, the
// rounds 1 s apart. Each customer first installs the pass on its devices
// (as many as devices, all apple), one a round, then flaps: a round takes
// the pass off one device, the next puts it back, and so on. With one
// device that is an uninstall, and the status flips; with more it is a
// device removal (activeCount devices-1 ≥ 1 and totalCount devices: SPEC
// §3), and the pass stays installed. The counts are the registrations after
// the event, as The Wallet Crew reports them.
func flappyStream(customers, devices, rounds int) [][]walletsync.Event {
	counts := func(active, total int) *walletsync.Registration {
		return &walletsync.Registration{ActiveCount: int64(active), TotalCount: int64(total), HasActiveCount: true, HasTotalCount: true}
	}
	var out [][]walletsync.Event
	for r := range rounds {
		typ, reg := walletsync.TypeInstalled, counts(devices, devices)
		switch flap := r - devices; {
		case flap < 0:
			reg = counts(r+1, r+1) // the install on device r+1
		case flap%2 == 0:
			typ, reg = walletsync.TypeUninstalled, counts(devices-1, devices)
		}
		var evs []walletsync.Event
		for c := range customers {
			evs = append(evs, walletsync.Event{ID: fmt.Sprintf("e%d-%d", c, r), Type: typ, Platform: walletsync.PlatformApple,
				CustomerID: fmt.Sprint("cust-", c), OccurredAt: 1_750_000_000_000 + int64(r)*1000, Registration: reg})
		}
		out = append(out, evs)
	}
	return out
}

type destCase struct {
	name  string
	batch bool
	start func(t *testing.T, f crmtest.Faults, client *http.Client) (crm.Destination, *crmtest.Store)
}

func destinations() []destCase {
	return []destCase{
		{"webhook", false, func(t *testing.T, f crmtest.Faults, client *http.Client) (crm.Destination, *crmtest.Store) {
			srv := crmtest.NewWebhookServer("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", f)
			t.Cleanup(srv.Close)
			d, err := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", Client: client})
			if err != nil {
				t.Fatal(err)
			}
			return d, srv.Store
		}},
		{"webhook-batched", true, func(t *testing.T, f crmtest.Faults, client *http.Client) (crm.Destination, *crmtest.Store) {
			srv := crmtest.NewWebhookServer("plain-secret", f)
			t.Cleanup(srv.Close)
			d, err := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "plain-secret", Batch: 25, Client: client})
			if err != nil {
				t.Fatal(err)
			}
			return d, srv.Store
		}},
		{"hubspot", true, func(t *testing.T, f crmtest.Faults, client *http.Client) (crm.Destination, *crmtest.Store) {
			srv := crmtest.NewHubSpotServer("pat-test", f)
			t.Cleanup(srv.Close)
			d, err := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: srv.URL, Token: "pat-test", IDProperty: "walletsync_customer_id", Client: client})
			if err != nil {
				t.Fatal(err)
			}
			return d, srv.Store
		}},
		{"actito", false, func(t *testing.T, f crmtest.Faults, client *http.Client) (crm.Destination, *crmtest.Store) {
			srv := crmtest.NewActitoServer("actito-key", "brand", "neostore_wallets", "customerId", f)
			t.Cleanup(srv.Close)
			d, err := crm.NewActito(crm.ActitoConfig{BaseURL: srv.URL, APIKey: "actito-key", Entity: "brand", Client: client})
			if err != nil {
				t.Fatal(err)
			}
			return d, srv.Store
		}},
	}
}

// After a stream delivered while 20% of requests fail (429, 503, 500 after
// the write, resets, answers slower than the client waits), every CRM holds
// exactly the fold's statuses, never saw an older version after a newer
// one, and got no more distinct writes than there were status changes.
func TestEveryDestinationConvergesUnderFaults(t *testing.T) {
	for _, dc := range destinations() {
		t.Run(dc.name, func(t *testing.T) {
			c := newCluster(t)
			client := &http.Client{Timeout: 300 * time.Millisecond}
			dest, store := dc.start(t, crmtest.Faults{FailRate: 0.2, SlowDelay: time.Second, Seed: 3}, client)
			reg := prometheus.NewRegistry()
			m := crm.NewMetrics(reg)
			run(t, c, crm.Config{Settle: 0, Concurrency: 8, Rate: 5000, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
				MaxAttempts: 1000, Metrics: m}, dest)
			// Written while the sink runs, in waves, so that versions
			// are delivered one after another, not only the last.
			evs := events(300, 3000, 11)
			for i := 0; i < len(evs); i += 100 {
				c.write(evs[i:min(i+100, len(evs))])
				time.Sleep(30 * time.Millisecond)
			}
			c.waitCaughtUp(crm.Group(dest.Name()), 90*time.Second)

			compare(t, store.Records(), c.want())
			if n := store.Regressions(); n != 0 {
				t.Errorf("%d writes went back to an older version", n)
			}
			if w := store.DistinctWrites(); w > c.changes {
				t.Errorf("%d distinct writes for %d status changes", w, c.changes)
			}
			faults := store.Faulted()
			total := 0
			for _, n := range faults {
				total += n
			}
			if total < 5 || len(faults) < 3 {
				t.Errorf("too few faults were injected to mean anything: %v", faults)
			}
			if testutil.ToFloat64(m.Retries(dest.Name())) == 0 {
				t.Error("no retry was counted")
			}
			t.Logf("%d changes, %d writes (%d distinct), %d requests, faults %v", c.changes, store.Writes(), store.DistinctWrites(), store.Requests(), faults)

			// A backfill that agrees with everything changes no status, so
			// the CRM gets nothing.
			before := store.Writes()
			var agree []walletsync.Event
			for i, s := range c.fold.Statuses() {
				for _, r := range c.fold.Registers(s.CustomerID) {
					// Registers whose state the events decide: an
					// observation agreeing with them changes nothing.
					installed, _, _ := r.State()
					if r.LastEventID == "" || installed == r.LastEventUninstalled {
						continue
					}
					agree = append(agree, walletsync.Event{ID: "backfill-" + strconv.Itoa(i) + r.PassID + r.Platform.String(), Type: walletsync.TypeObserved,
						Platform: r.Platform, CustomerID: s.CustomerID, PassID: r.PassID, Installed: installed,
						OccurredAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), Source: "backfill"})
				}
			}
			changes := c.changes
			c.write(agree)
			if c.changes != changes {
				t.Fatalf("an agreeing backfill changed %d statuses", c.changes-changes)
			}
			time.Sleep(200 * time.Millisecond)
			if store.Writes() != before {
				t.Errorf("an agreeing backfill caused %d writes", store.Writes()-before)
			}
		})
	}
}

// A flappy stream — customers that uninstall and reinstall within seconds
// — costs fewer writes than changes with a settle window; each customer's
// final status is still exact.
func TestSettleWindowSwallowsFlaps(t *testing.T) {
	c := newCluster(t)
	srv := crmtest.NewWebhookServer("s", crmtest.Faults{})
	defer srv.Close()
	dest, err := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := crm.NewMetrics(reg)
	run(t, c, crm.Config{Settle: 300 * time.Millisecond, Metrics: m, Rate: 1000}, dest)
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).UnixMilli()
	var evs []walletsync.Event
	for i := range 50 {
		cust := fmt.Sprintf("flappy-%d", i)
		for j, typ := range []walletsync.EventType{walletsync.TypeInstalled, walletsync.TypeUninstalled, walletsync.TypeInstalled, walletsync.TypeUninstalled, walletsync.TypeInstalled} {
			evs = append(evs, walletsync.Event{ID: fmt.Sprintf("%s-%d", cust, j), Type: typ, Platform: walletsync.PlatformApple,
				CustomerID: cust, PassID: "p", OccurredAt: base + int64(j)*2000})
		}
	}
	c.write(evs)
	c.waitCaughtUp(crm.Group("webhook"), 30*time.Second)
	compare(t, srv.Records(), c.want())
	if srv.Writes() > 50 {
		t.Errorf("%d writes for 50 customers whose flaps settled within the window (%d changes)", srv.Writes(), c.changes)
	}
	if got := testutil.ToFloat64(m.Coalesced("webhook")); got < float64(c.changes-50) {
		t.Errorf("coalesced %v, want at least %d", got, c.changes-50)
	}
}

// A flappy multi-device stream costs no CRM write for device removals
// (issue 18): customers holding the pass on two devices take it off one
// and put it back, three times, through the real fold. The fold ignores a
// removal, so no status is produced and no CRM hears of it. A re-add is a
// repeated install, which moves appleWalletInstalledAt to it (SPEC §3): a
// status change, one write. Each round is delivered before the next is
// written, with no settle window, so no write is coalesced away and the
// writes are exactly the installs'.
func TestDeviceRemovalsCostNoCRMWrite(t *testing.T) {
	const customers, devices, flaps = 20, 2, 3
	stream := flappyStream(customers, devices, devices+2*flaps)
	// The stream means something: taken as uninstalls (the rule off), the
	// removals would each change a status (walletStatus none), a write.
	off := walletsync.NewFold()
	off.AllUninstalls()
	removals, offChanges := 0, 0
	for _, round := range stream {
		for i := range round {
			_, changed := off.Apply(&round[i])
			if round[i].DeviceRemoval() {
				removals++
				if changed {
					offChanges++
				}
			}
		}
	}
	if removals != flaps*customers || offChanges != removals {
		t.Fatalf("%d device removals, %d of them status changes with the rule off; want %d of %d", removals, offChanges, flaps*customers, flaps*customers)
	}
	installs := (devices + flaps) * customers
	for _, dc := range destinations() {
		t.Run(dc.name, func(t *testing.T) {
			c := newCluster(t)
			dest, store := dc.start(t, crmtest.Faults{}, nil)
			run(t, c, crm.Config{Settle: 0, Rate: 1000}, dest)
			for r, round := range stream {
				before := c.changes
				c.write(round)
				removal := round[0].DeviceRemoval()
				if n := c.changes - before; removal && n != 0 || !removal && n != customers {
					t.Fatalf("round %d (device removals: %v): %d status changes for %d customers", r, removal, n, customers)
				}
				deadline := time.Now().Add(30 * time.Second)
				for store.Writes() < c.changes {
					if time.Now().After(deadline) {
						t.Fatalf("round %d: %d writes of %d status changes", r, store.Writes(), c.changes)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if w := store.Writes(); w != c.changes {
					t.Fatalf("round %d: %d writes for %d status changes", r, w, c.changes)
				}
			}
			c.waitCaughtUp(crm.Group(dest.Name()), 30*time.Second)
			if w := store.Writes(); w != installs || c.changes != installs {
				t.Errorf("%d writes and %d status changes, want %d: one per install, none per device removal", w, c.changes, installs)
			}
			compare(t, store.Records(), c.want())
			for id, r := range store.Records() {
				if r.WalletStatus != "apple" || r.LastEvent != "installed" {
					t.Errorf("customer %s: %+v, want the pass still installed on apple", id, r)
					break
				}
			}
		})
	}
}

// The two status fields of issue 18 reach every CRM with their values: a
// customer sent the pass who then added it (both set), one sent it who did
// not add it (walletStatus none with a passIssuedAt: the "sent but not
// added" segment) and one with neither (a lone uninstall: both null).
func TestFirstInstallAndPassIssuedReachEveryDestination(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).UnixMilli()
	evs := []walletsync.Event{
		{ID: "i1", Type: walletsync.TypeIssued, CustomerID: "c-added", OccurredAt: at},
		{ID: "a1", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c-added", OccurredAt: at + 5000},
		{ID: "i2", Type: walletsync.TypeIssued, Platform: walletsync.PlatformGoogle, CustomerID: "c-sent", OccurredAt: at},
		{ID: "u3", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformGoogle, CustomerID: "c-neither", OccurredAt: at},
	}
	want := map[string]crmtest.Record{
		"c-added": {WalletStatus: "apple", AppleAt: "2026-05-01T10:00:05.000Z", LastChangedAt: "2026-05-01T10:00:05.000Z", LastEvent: "installed",
			FirstInstalledAt: "2026-05-01T10:00:05.000Z", PassIssuedAt: "2026-05-01T10:00:00.000Z"},
		"c-sent":    {WalletStatus: "none", PassIssuedAt: "2026-05-01T10:00:00.000Z"},
		"c-neither": {WalletStatus: "none", LastChangedAt: "2026-05-01T10:00:00.000Z", LastEvent: "uninstalled"},
	}
	for _, dc := range destinations() {
		t.Run(dc.name, func(t *testing.T) {
			c := newCluster(t)
			dest, store := dc.start(t, crmtest.Faults{}, nil)
			run(t, c, crm.Config{Settle: 0, Rate: 1000}, dest)
			c.write(evs)
			c.waitCaughtUp(crm.Group(dest.Name()), 30*time.Second)
			if got := c.want(); !maps.Equal(got, want) {
				t.Fatalf("the fold says %+v, want %+v", got, want)
			}
			compare(t, store.Records(), want)
		})
	}
	// A null is written, not left out, so no value the CRM got elsewhere
	// outlives it: "" clears a HubSpot property, Actito gets a null column.
	it := &crm.Item{Status: walletsync.Status{CustomerID: "c-neither", Version: 1}}
	props := crm.HubSpotProperties(it)
	cols := map[string]any{}
	for _, col := range crm.ActitoColumns("customerId", it) {
		cols[col.Name] = col.Value
	}
	for _, f := range []struct{ hubspot, actito string }{{crm.PropFirstInstalledAt, "firstInstalledAt"}, {crm.PropPassIssuedAt, "passIssuedAt"}} {
		if v, ok := props[f.hubspot]; !ok || v != "" {
			t.Errorf("HubSpot property %s for null: %q, written %v; want \"\"", f.hubspot, v, ok)
		}
		if v, ok := cols[f.actito]; !ok || v != nil {
			t.Errorf("Actito column %s for null: %v, written %v; want null", f.actito, v, ok)
		}
	}
}

// The sink stopped in the middle of delivering (requests cut off) and
// started again, three times: the CRM still ends exact, with no version
// going back — nothing read but unacknowledged was committed.
func TestRestartMidDeliveryStaysExact(t *testing.T) {
	c := newCluster(t)
	srv := crmtest.NewActitoServer("k", "ent", "neostore_wallets", "customerId", crmtest.Faults{Latency: 5 * time.Millisecond, FailRate: 0.1, SlowDelay: 500 * time.Millisecond, Seed: 9})
	defer srv.Close()
	dest, err := crm.NewActito(crm.ActitoConfig{BaseURL: srv.URL, APIKey: "k", Entity: "ent", Client: &http.Client{Timeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	c.write(events(400, 4000, 5))
	// About 200 deliveries a second: 400 customers take two seconds. Each
	// round stops once it has delivered a few dozen more customers (not
	// after a fixed sleep: on a loaded machine the group join alone can
	// outlast one), so every stop cuts the stream in the middle.
	cfg := crm.Config{Concurrency: 2, Rate: 200, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxAttempts: 1000}
	for round := range 3 {
		from := srv.Customers()
		stop := run(t, c, cfg, dest)
		deadline := time.Now().Add(60 * time.Second)
		for srv.Customers() < from+20+15*round {
			if time.Now().After(deadline) {
				t.Fatalf("round %d delivered %d customers in 60 s", round, srv.Customers()-from)
			}
			time.Sleep(2 * time.Millisecond)
		}
		stop()
	}
	if n := len(srv.Records()); n == 0 || n == 400 {
		t.Fatalf("%d of 400 customers delivered before the last start: the stops did not cut the stream", n)
	}
	run(t, c, cfg, dest)
	c.waitCaughtUp(crm.Group("actito"), 90*time.Second)
	compare(t, srv.Records(), c.want())
	if n := srv.Regressions(); n != 0 {
		t.Errorf("%d writes went back to an older version", n)
	}
}

// A CRM that refuses a customer (422) gets it dead-lettered with the reason,
// the offsets move on, and replaying the DLQ once the CRM accepts it
// delivers the customer's current status.
func TestRefusedItemsAreDeadLetteredAndReplayed(t *testing.T) {
	c := newCluster(t)
	srv := crmtest.NewWebhookServer("s", crmtest.Faults{})
	defer srv.Close()
	srv.Refuse = func(id string) bool { return id == "c-refused" }
	dest, err := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := crm.NewMetrics(reg)
	run(t, c, crm.Config{Metrics: m}, dest)
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).UnixMilli()
	c.write([]walletsync.Event{
		{ID: "r1", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: "c-refused", OccurredAt: at},
		{ID: "a1", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c-ok", OccurredAt: at},
		{ID: "r2", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c-refused", OccurredAt: at + 1000},
	})
	c.waitCaughtUp(crm.Group("webhook"), 30*time.Second)
	if _, ok := srv.Records()["c-refused"]; ok {
		t.Fatal("a refused customer was written")
	}
	var dead []*kgo.Record
	for p := range int32(3) {
		if _, err := kafka.ReadPartition(context.Background(), c.emb.Brokers(), c.adm, c.topics.CRMDLQ, p, -1, func(r *kgo.Record) { dead = append(dead, r) }); err != nil {
			t.Fatal(err)
		}
	}
	if len(dead) == 0 || testutil.ToFloat64(m.DeadLettered("webhook")) != float64(len(dead)) {
		t.Fatalf("%d DLQ records, metric %v", len(dead), testutil.ToFloat64(m.DeadLettered("webhook")))
	}
	hdr := map[string]string{}
	for _, h := range dead[0].Headers {
		hdr[h.Key] = string(h.Value)
	}
	if hdr[kafka.HeaderDestination] != "webhook" || hdr[kafka.HeaderError] == "" || string(dead[0].Key) != "c-refused" {
		t.Errorf("DLQ record: key %q, headers %v", dead[0].Key, hdr)
	}

	srv.Refuse = nil
	rep, err := crm.Replay(context.Background(), crm.ReplayConfig{Brokers: c.emb.Brokers()}, dest)
	if err != nil {
		t.Fatal(err)
	}
	got := srv.Records()["c-refused"]
	if want := c.want()["c-refused"]; got.WalletStatus != want.WalletStatus || got.Version != 2 {
		t.Errorf("after replay the CRM holds %+v, want %+v at version 2", got, want)
	}
	if rep.Delivered != 1 || rep.Read != len(dead) {
		t.Errorf("replay report %+v, want 1 delivered of %d read", rep, len(dead))
	}
	// Replaying again sends nothing: the replay group's offsets moved on.
	writes := srv.Writes()
	if rep, err := crm.Replay(context.Background(), crm.ReplayConfig{Brokers: c.emb.Brokers()}, dest); err != nil || rep.Read != 0 || srv.Writes() != writes {
		t.Errorf("second replay: %+v, %v, %d new writes", rep, err, srv.Writes()-writes)
	}
}

// HubSpot's properties are created when missing; a wrong token never
// writes and ends in the DLQ after the retry budget.
func TestHubSpotCreatesPropertiesAndCredentialsFailuresDeadLetter(t *testing.T) {
	c := newCluster(t)
	srv := crmtest.NewHubSpotServer("right", crmtest.Faults{})
	defer srv.Close()
	good, _ := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: srv.URL, Token: "right"})
	if err := good.EnsureProperties(context.Background()); err != nil {
		t.Fatal(err)
	}
	props := map[string]bool{}
	for _, p := range srv.Properties() {
		props[p] = true
	}
	for _, p := range []string{crm.PropWalletStatus, crm.PropAppleAt, crm.PropGoogleAt, crm.PropLastChangedAt, crm.PropLastEvent, crm.PropStatusVersion,
		crm.PropFirstInstalledAt, crm.PropPassIssuedAt} {
		if !props[p] {
			t.Errorf("property %s was not created", p)
		}
	}
	// The two of issue 18 are timestamps like walletLastChangedAt.
	ref, _ := srv.Property(crm.PropLastChangedAt)
	for _, p := range []string{crm.PropFirstInstalledAt, crm.PropPassIssuedAt} {
		if def, _ := srv.Property(p); def["type"] != "datetime" || def["type"] != ref["type"] || def["fieldType"] != ref["fieldType"] || def["groupName"] != ref["groupName"] {
			t.Errorf("property %s created as %v, want the definition of %s: %v", p, def, crm.PropLastChangedAt, ref)
		}
	}
	bad, _ := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: srv.URL, Token: "wrong"})
	reg := prometheus.NewRegistry()
	m := crm.NewMetrics(reg)
	run(t, c, crm.Config{MaxAttempts: 3, BaseBackoff: 5 * time.Millisecond, Metrics: m}, bad)
	c.write([]walletsync.Event{{ID: "x", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c1", OccurredAt: 1_700_000_000_000}})
	c.waitCaughtUp(crm.Group("hubspot"), 30*time.Second)
	if srv.Writes() != 0 || testutil.ToFloat64(m.DeadLettered("hubspot")) != 1 || testutil.ToFloat64(m.Retries("hubspot")) != 2 {
		t.Errorf("writes %d, dead-lettered %v, retries %v", srv.Writes(), testutil.ToFloat64(m.DeadLettered("hubspot")), testutil.ToFloat64(m.Retries("hubspot")))
	}
}

// An account whose wallet properties were created before issue 18 refuses
// the two new ones until they exist (the server's PROPERTY_DOESNT_EXIST),
// and a datetime property takes only a datetime; the sink creates them on
// first use and writes them.
func TestHubSpotAddsTheNewPropertiesToAnOlderAccount(t *testing.T) {
	srv := crmtest.NewHubSpotServer("pat", crmtest.Faults{})
	defer srv.Close()
	post := func(path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer pat")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for p, typ := range map[string]string{crm.PropWalletStatus: `"string","fieldType":"text"`, crm.PropLastEvent: `"string","fieldType":"text"`,
		crm.PropAppleAt: `"datetime","fieldType":"date"`, crm.PropGoogleAt: `"datetime","fieldType":"date"`, crm.PropLastChangedAt: `"datetime","fieldType":"date"`,
		crm.PropStatusVersion: `"number","fieldType":"number"`} {
		if code, body := post("/crm/v3/properties/contacts", `{"name":"`+p+`","label":"`+p+`","type":`+typ+`,"groupName":"contactinformation"}`); code != http.StatusCreated {
			t.Fatalf("creating %s: %d %s", p, code, body)
		}
	}
	upsert := func(prop, v string) (int, string) {
		return post("/crm/v3/objects/contacts/batch/upsert", `{"inputs":[{"id":"a@example.com","idProperty":"email","properties":{"`+prop+`":"`+v+`"}}]}`)
	}
	if code, body := upsert(crm.PropPassIssuedAt, "2026-05-01T10:00:00.000Z"); code != http.StatusBadRequest || !strings.Contains(body, "PROPERTY_DOESNT_EXIST") {
		t.Fatalf("a property that does not exist yet: %d %s", code, body)
	}
	h, err := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: srv.URL, Token: "pat"})
	if err != nil {
		t.Fatal(err)
	}
	st := walletsync.Status{CustomerID: "a@example.com", Version: 2, Fields: walletsync.Fields{Wallet: walletsync.WalletApple, LastEvent: walletsync.LastInstalled,
		AppleInstalledAt: 1777629605000, LastChangedAt: 1777629605000, FirstInstalledAt: 1777629605000, PassIssuedAt: 1777629600000}}
	if err := h.Deliver(context.Background(), []*crm.Item{{Status: st, Key: "a@example.com:2"}}); err != nil {
		t.Fatal(err)
	}
	if got := srv.Records()["a@example.com"]; got.FirstInstalledAt != "2026-05-01T10:00:05.000Z" || got.PassIssuedAt != "2026-05-01T10:00:00.000Z" {
		t.Errorf("HubSpot holds %+v", got)
	}
	if code, body := upsert(crm.PropFirstInstalledAt, "yesterday"); code != http.StatusBadRequest {
		t.Errorf("a datetime property took %q: %d %s", "yesterday", code, body)
	}
}

// Actito: a revoked token is replaced after the 401, within the same
// delivery.
func TestActitoRenewsARevokedToken(t *testing.T) {
	srv := crmtest.NewActitoServer("k", "ent", "neostore_wallets", "customerId", crmtest.Faults{})
	defer srv.Close()
	a, err := crm.NewActito(crm.ActitoConfig{BaseURL: srv.URL, APIKey: "k", Entity: "ent"})
	if err != nil {
		t.Fatal(err)
	}
	it := &crm.Item{Status: walletsync.Status{CustomerID: "c1", Version: 1, Fields: walletsync.Fields{Wallet: walletsync.WalletApple, LastEvent: walletsync.LastInstalled, AppleInstalledAt: 1, LastChangedAt: 1}}, Key: "c1:1"}
	if err := a.Deliver(context.Background(), []*crm.Item{it}); err != nil {
		t.Fatal(err)
	}
	srv.RevokeTokens()
	it.Status.Version, it.Key = 2, "c1:2"
	if err := a.Deliver(context.Background(), []*crm.Item{it}); err != nil {
		t.Fatal(err)
	}
	if srv.TokensIssued() != 2 || srv.Records()["c1"].Version != 2 {
		t.Errorf("tokens %d, record %+v", srv.TokensIssued(), srv.Records()["c1"])
	}
	wrongEntity, _ := crm.NewActito(crm.ActitoConfig{BaseURL: srv.URL, APIKey: "k", Entity: "other"})
	err = wrongEntity.Deliver(context.Background(), []*crm.Item{it})
	var he *crm.HTTPError
	if !asHTTP(err, &he) || he.Status != 404 || !he.Permanent() {
		t.Errorf("unknown entity: %v", err)
	}
}

func asHTTP(err error, target **crm.HTTPError) bool { return errors.As(err, target) }
