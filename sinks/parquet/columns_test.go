package parquet_test

import (
	"testing"

	pq "github.com/parquet-go/parquet-go"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// The exported column names are the rows' own, and the value readers read
// what EventToRow writes.
func TestColumnNamesAndValues(t *testing.T) {
	events, statuses := pq.SchemaOf(new(parquet.EventRow)), pq.SchemaOf(new(parquet.StatusRow))
	for _, name := range []string{parquet.TypeColumn, parquet.PlatformColumn, parquet.CustomerIDColumn, parquet.PassIDColumn,
		parquet.PassTypeColumn, parquet.OccurredAtColumn, parquet.SourceColumn, parquet.MediumColumn} {
		if _, ok := events.Lookup(name); !ok {
			t.Errorf("no events column %q", name)
		}
	}
	for _, name := range []string{parquet.CustomerIDColumn, parquet.VersionColumn, parquet.WalletStatusColumn} {
		if _, ok := statuses.Lookup(name); !ok {
			t.Errorf("no status column %q", name)
		}
	}
	for _, typ := range []walletsync.EventType{walletsync.TypeInstalled, walletsync.TypeUninstalled, walletsync.TypeObserved} {
		for _, p := range []walletsync.Platform{walletsync.PlatformApple, walletsync.PlatformGoogle} {
			r := parquet.EventToRow(&walletsync.Event{Type: typ, Platform: p}, 0, 0)
			if got := parquet.EventTypeOf(pq.ValueOf(r.Type)); got != typ {
				t.Errorf("EventTypeOf(%q) = %v", r.Type, got)
			}
			if got := parquet.PlatformOf(pq.ValueOf(r.Platform)); got != p {
				t.Errorf("PlatformOf(%q) = %v", r.Platform, got)
			}
		}
	}
}
