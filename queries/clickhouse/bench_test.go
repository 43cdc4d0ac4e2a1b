package clickhouse_test

import (
	"context"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	chquery "github.com/walletsync/walletsync/queries/clickhouse"
	"github.com/walletsync/walletsync/queries/querytest"
	"github.com/walletsync/walletsync/sinks/clickhouse"
)

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
	fold, _ := querytest.BenchEvents(b, func(_ int, evs []walletsync.Event, base []walletsync.BaseChange) {
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
	querytest.BenchQueries(b, &chquery.Engine{Conn: conn})
}
