package passapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/ingest/passapi/passapitest"
	"github.com/walletsync/walletsync/internal/kafka"
)

// BenchmarkBackfill: a backfill of 1M passes from the local Pass API into
// an in-process broker (goal: < 60 s), pages of 1,000.
func BenchmarkBackfill(b *testing.B) {
	const passes = 1_000_000
	api := passapitest.New("brand", "k")
	defer api.Close()
	api.SetPasses(passapitest.Seed(passes, passes/2, 0.6, 1))
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
		if err != nil {
			b.Fatal(err)
		}
		cl, _ := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "bench")...)
		if err := kafka.EnsureTopics(context.Background(), kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 6, Replication: 1}); err != nil {
			b.Fatal(err)
		}
		client, _ := passapi.NewClient(passapi.ClientConfig{BaseURL: api.URL, Tenant: "brand", APIKey: "k", PageSize: 1000, Rate: 1e6})
		bf, err := passapi.NewBackfill(passapi.Config{Client: client, Brokers: emb.Brokers()})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		rep, err := bf.RunOnce(context.Background())
		total += time.Since(start)
		b.StopTimer()
		if err != nil || rep.Passes != passes || rep.Observations != 2*passes {
			b.Fatalf("%+v %v", rep, err)
		}
		cl.Close()
		emb.Close()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/1M-passes")
	b.ReportMetric(float64(passes)*float64(b.N)/total.Seconds(), "passes/s")
}
