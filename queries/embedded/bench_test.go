package embedded_test

import (
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/queries/embedded"
	"github.com/walletsync/walletsync/queries/querytest"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// BenchmarkEmbeddedInsights: the same queries over a Parquet archive of the
// same 10M events, in process (goal: daily over 10M events < 2 s).
func BenchmarkEmbeddedInsights(b *testing.B) {
	dir := b.TempDir()
	_, versions := querytest.BenchEvents(b, func(chunk int, evs []walletsync.Event, _ []walletsync.BaseChange) {
		if err := parquet.WriteEvents(dir, int32(chunk), 0, evs); err != nil {
			b.Fatal(err)
		}
	})
	if err := parquet.WriteStatuses(dir, 0, 0, versions); err != nil {
		b.Fatal(err)
	}
	querytest.BenchQueries(b, embedded.New(dir))
}
