package queries_test

import (
	"context"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/queries"
	"github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// benchEvents feeds the benchmarks' 10M events over 1M customers to load in
// ten chunks a month apart (the events span most of a year), each with
// what it did to its register's installed state folded in that order (as
// the processors report it), and returns the fold with every status
// version it emitted.
func benchEvents(b *testing.B, load func(chunk int, evs []walletsync.Event, base []walletsync.BaseChange)) (*walletsync.Fold, []walletsync.Status) {
	const chunks, perChunk = 10, 1_000_000
	fold := walletsync.NewFold()
	start := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var versions []walletsync.Status
	for c := range chunks {
		cfg := synth.Default(perChunk)
		cfg.Customers, cfg.Seed, cfg.DupRate = 1_000_000, uint64(c+1), 0
		cfg.Start = start.AddDate(0, c, 0)
		evs := synth.Events(cfg)
		base := make([]walletsync.BaseChange, len(evs))
		for i := range evs {
			a := fold.ApplyBase(&evs[i])
			st, changed, bc := a.Status, a.StatusChanged, a.Base
			if changed {
				versions = append(versions, st)
			}
			base[i] = bc
		}
		load(c, evs, base)
	}
	return fold, versions
}

// benchQueries times each insight over the year on engine.
func benchQueries(b *testing.B, engine queries.Engine) {
	ctx := context.Background()
	for _, c := range []struct{ name, from, to, by, label string }{
		{"daily", "2025-06-01", "2026-06-01", "", ""},
		{"daily", "2025-06-01", "2026-06-01", "medium", ""},
		{"status", "2025-06-01", "2025-06-02", "", ""},
		{"installed-base", "2025-06-01", "2026-06-01", "", ""},
		{"retention", "2025-06-01", "2026-06-01", "", ""},
		{"retention", "2026-01-01", "2026-04-01", "", "retention_quarter"},
	} {
		q, err := queries.ParseQuery(c.name, c.from, c.to, c.by)
		if err != nil {
			b.Fatal(err)
		}
		name := c.name
		if c.by != "" {
			name += "_by_" + c.by
		}
		if c.label != "" {
			name = c.label
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := engine.Insight(ctx, q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
		})
	}
}

// BenchmarkClickHouseInsights: latency of each insight over 10M events and
// 1M customers on this machine (goals: daily over a year < 300 ms, the
// others < 1 s). Loading the data takes a minute or two.
func BenchmarkClickHouseInsights(b *testing.B) {
	srv := chtest.Start(b)
	conn := srv.Conn(b)
	ctx := context.Background()
	if _, err := clickhouse.Migrate(ctx, conn); err != nil {
		b.Fatal(err)
	}
	fold, _ := benchEvents(b, func(_ int, evs []walletsync.Event, base []walletsync.BaseChange) {
		for i := 0; i < len(evs); i += 200_000 {
			if err := clickhouse.InsertEvents(ctx, conn, evs[i:min(i+200_000, len(evs))], base[i:min(i+200_000, len(evs))]); err != nil {
				b.Fatal(err)
			}
		}
	})
	sts := fold.Statuses() // the current status of each customer
	for i := 0; i < len(sts); i += 200_000 {
		if err := clickhouse.InsertStatuses(ctx, conn, sts[i:min(i+200_000, len(sts))]); err != nil {
			b.Fatal(err)
		}
	}
	benchQueries(b, &queries.ClickHouse{Conn: conn})
}

// BenchmarkEmbeddedInsights: the same queries over a Parquet archive of the
// same 10M events, in process (goal: daily over 10M events < 2 s).
func BenchmarkEmbeddedInsights(b *testing.B) {
	dir := b.TempDir()
	_, versions := benchEvents(b, func(chunk int, evs []walletsync.Event, _ []walletsync.BaseChange) {
		if err := parquet.WriteEvents(dir, int32(chunk), 0, evs); err != nil {
			b.Fatal(err)
		}
	})
	if err := parquet.WriteStatuses(dir, 0, 0, versions); err != nil {
		b.Fatal(err)
	}
	benchQueries(b, queries.NewEmbedded(dir))
}
