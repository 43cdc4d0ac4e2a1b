package clickhouse_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/wire"
)

// BenchmarkSink: rows/s from wallet.events.clean into ClickHouse through
// the sink (Kafka fetch, parse, batch, insert, commit), against a bare
// clickhouse-go PrepareBatch insert of the same rows in the same run
// (goal: ratio ≥ 0.7 and ≥ 1M rows/s). The sink's time includes its start
// (migrations, group join: about 0.2 s here), so the stream is 1M rows
// long, enough for it to be a small part, as in a sink that runs for days.
func BenchmarkSink(b *testing.B) {
	const n = 1_000_000
	conn := migrated(b)
	ctx := context.Background()
	// The clean topic holds each eventId once; with repeats in the stream,
	// background merges would collapse rows under the count the sink
	// waits for.
	cfg := synth.Default(n)
	cfg.DupRate = 0
	evs := synth.Events(cfg)

	b.Run("bare_prepare_batch_baseline", func(b *testing.B) {
		for b.Loop() {
			if err := conn.Exec(ctx, "TRUNCATE TABLE wallet_events"); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i += 50_000 {
				if err := clickhouse.InsertEvents(ctx, conn, evs[i:i+50_000], nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})

	b.Run("sink", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			b.StopTimer()
			if err := conn.Exec(ctx, "TRUNCATE TABLE wallet_events"); err != nil {
				b.Fatal(err)
			}
			emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
			if err != nil {
				b.Fatal(err)
			}
			cl, _ := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "bench")...)
			if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 6, Replication: 1}); err != nil {
				b.Fatal(err)
			}
			recs := make([]*kgo.Record, 0, n)
			for i := range evs {
				recs = append(recs, &kgo.Record{Topic: "wallet.events.clean", Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i])})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			sctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			s := clickhouse.NewSink(clickhouse.SinkConfig{Brokers: emb.Brokers(), BatchRows: 50_000, BatchInterval: 200 * time.Millisecond}, conn)
			go func() { defer close(done); _ = s.Run(sctx) }()
			for {
				var c uint64
				if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&c); err == nil && c >= n {
					break
				}

				time.Sleep(5 * time.Millisecond)
			}
			total += time.Since(start)
			b.StopTimer()
			cancel()
			<-done
			cl.Close()
			emb.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "rows/s")
	})
}
