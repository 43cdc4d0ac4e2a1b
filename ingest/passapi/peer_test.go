package passapi_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/peers/passapidoc"
	"github.com/walletsync/walletsync/wire"
)

// The backfill against a Pass API server written from The Wallet Crew's
// public documentation alone (internal/peers/passapidoc, by someone who
// never read this client): every pass of every page becomes one observation
// per platform, with the documented installation date, and one issued event
// at its documented creation date, through a 429 with Retry-After and two
// 5xx on the way.
func TestBackfillAgainstTheDocumentedPassAPI(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var passes []passapidoc.Pass
	for i := range 2500 {
		p := passapidoc.Pass{ID: fmt.Sprintf("pass-%05d", i), PassType: "loyalty", CreationDate: base.Add(-time.Duration(i) * time.Second),
			Identifiers: map[string]string{"customerId": fmt.Sprintf("cust-%04d", i%1800), "email": fmt.Sprintf("c%d@example.com", i)},
			Providers:   map[string]*time.Time{}}
		at := base.Add(time.Duration(i) * time.Minute)
		switch i % 4 {
		case 0:
			p.Providers[passapidoc.ProviderApple] = &at
			p.Providers[passapidoc.ProviderGoogle] = nil
		case 1:
			p.Providers[passapidoc.ProviderGoogle] = &at
		case 2:
			p.Providers[passapidoc.ProviderApple] = &at
			p.Providers[passapidoc.ProviderGoogle] = &at
		case 3:
			p.Providers = nil // never installed: the documented null
		}
		passes = append(passes, p)
	}
	srv := passapidoc.New("brand", "secret-key", passes)
	srv.ThrottleNext(1, 1)
	srv.FailNext(2, 503)
	url, stop := srv.Start()
	defer stop()

	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "peer-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, adm, kafka.DefaultTopics(), kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	client, err := passapi.NewClient(passapi.ClientConfig{BaseURL: url, Tenant: "brand", APIKey: "secret-key", PageSize: 1000, Rate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b, err := passapi.NewBackfill(passapi.Config{Client: client, Brokers: emb.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := b.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passes != 2500 || rep.Observations != 5000 || rep.Issued != 2500 || rep.Skipped != 0 || !rep.Done {
		t.Errorf("report %+v, want 2500 passes, 5000 observations, 2500 issued", rep)
	}
	if srv.Faults() != 3 {
		t.Errorf("%d faults served, want the 429 and both 503s retried", srv.Faults())
	}

	want := map[string]walletsync.Event{} // passId/platform → observation
	for _, p := range passes {
		for _, pl := range []walletsync.Platform{walletsync.PlatformApple, walletsync.PlatformGoogle} {
			e := walletsync.Event{CustomerID: p.Identifiers["customerId"], PassID: p.ID, Platform: pl}
			if d := p.Providers[pl.String()]; d != nil {
				e.Installed, e.InstalledAt = true, d.UnixMilli()
			}
			want[p.ID+"/"+pl.String()] = e
		}
		want[p.ID+"/issued"] = walletsync.Event{CustomerID: p.Identifiers["customerId"], PassID: p.ID, OccurredAt: p.CreationDate.UnixMilli()}
	}
	got := map[string]walletsync.Event{}
	ends, err := adm.ListEndOffsets(ctx, kafka.DefaultTopics().Events)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if _, err := kafka.ReadPartition(ctx, emb.Brokers(), adm, o.Topic, o.Partition, -1, func(r *kgo.Record) {
			e, err := wire.ParseEvent(r.Value)
			if err != nil {
				t.Errorf("observation %s: %v", r.Value, err)
				return
			}
			if e.Type != walletsync.TypeObserved && e.Type != walletsync.TypeIssued || string(r.Key) != e.CustomerID {
				t.Errorf("record %s keyed %q", r.Value, r.Key)
			}
			if e.Type == walletsync.TypeIssued {
				if e.Platform != 0 || e.Source != "backfill" || e.PassType != "loyalty" {
					t.Errorf("issued event %s", r.Value)
				}
				got[e.PassID+"/issued"] = e
				return
			}
			got[e.PassID+"/"+e.Platform.String()] = e
		}); err != nil {
			t.Fatal(err)
		}
	})
	if len(got) != len(want) {
		t.Errorf("%d observations on wallet.events, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.CustomerID != w.CustomerID || g.Installed != w.Installed || g.InstalledAt != w.InstalledAt || g.OccurredAt != w.OccurredAt && w.OccurredAt != 0 {
			t.Errorf("%s: observed %+v, want customer %s installed %v at %d", k, g, w.CustomerID, w.Installed, w.InstalledAt)
		}
	}
}
