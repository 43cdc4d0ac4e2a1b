// Package querytest holds what the insight engines' benchmarks share: the
// same 10M events for each engine to load, and the same queries timed on
// each (queries/clickhouse, queries/embedded).
package querytest

import (
	"context"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/queries"
)

// BenchEvents feeds the benchmarks' 10M events over 1M customers to load in
// ten chunks a month apart (the events span most of a year), each with
// what it did to its register's installed state folded in that order (as
// the processors report it), and returns the fold with every status
// version it emitted.
func BenchEvents(b *testing.B, load func(chunk int, evs []walletsync.Event, base []walletsync.BaseChange)) (*walletsync.Fold, []walletsync.Status) {
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

// BenchQueries times each insight over the year on engine.
func BenchQueries(b *testing.B, engine queries.Engine) {
	ctx := context.Background()
	for _, c := range []struct{ name, from, to, by, label string }{
		{"daily", "2025-06-01", "2026-06-01", "", ""},
		{"daily", "2025-06-01", "2026-06-01", "medium", ""},
		{"status", "2025-06-01", "2025-06-02", "", ""},
		{"installed-base", "2025-06-01", "2026-06-01", "", ""},
		{"retention", "2025-06-01", "2026-06-01", "", ""},
		{"retention", "2026-01-01", "2026-04-01", "", "retention_quarter"},
		// The benchmark stream has no issued event (synth without
		// Lifecycle): this times what the funnel reads, not its groups.
		{"funnel", "2025-06-01", "2026-06-01", "", ""},
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
