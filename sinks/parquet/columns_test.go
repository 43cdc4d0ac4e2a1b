package parquet_test

import (
	"fmt"
	"testing"

	pq "github.com/parquet-go/parquet-go"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// The exported column names are the rows' own, and the value readers read
// what EventToRow writes.
func TestColumnNamesAndValues(t *testing.T) {
	events, statuses := pq.SchemaOf(new(parquet.EventRow)), pq.SchemaOf(new(parquet.StatusRow))
	for _, name := range []string{parquet.EventIDColumn, parquet.TypeColumn, parquet.PlatformColumn, parquet.CustomerIDColumn, parquet.PassIDColumn,
		parquet.PassTypeColumn, parquet.OccurredAtColumn, parquet.SourceColumn, parquet.MediumColumn,
		parquet.ActiveCountColumn, parquet.TotalCountColumn} {
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

// DeviceRemovalOf reads from an archive's count columns what
// walletsync.Event.DeviceRemoval says of the archived event: every type,
// with each count absent, zero, one or more.
func TestDeviceRemovalOfReadsTheArchivedCounts(t *testing.T) {
	counts := []int64{-1, 0, 1, 2, 3} // -1: absent
	var evs []walletsync.Event
	want := map[string]bool{}
	for _, typ := range []walletsync.EventType{walletsync.TypeInstalled, walletsync.TypeUninstalled, walletsync.TypeObserved, walletsync.TypeIssued} {
		for _, active := range counts {
			for _, total := range counts {
				e := walletsync.Event{ID: fmt.Sprintf("%v/%d/%d", typ, active, total), Type: typ, Platform: walletsync.PlatformApple,
					CustomerID: "c", OccurredAt: 1772359200000}
				if active >= 0 || total >= 0 {
					e.Registration = &walletsync.Registration{ActiveCount: max(active, 0), HasActiveCount: active >= 0,
						TotalCount: max(total, 0), HasTotalCount: total >= 0}
				}
				evs = append(evs, e)
				want[e.ID] = e.DeviceRemoval()
			}
		}
	}
	dir := t.TempDir()
	if err := parquet.WriteEvents(dir, 0, 0, evs); err != nil {
		t.Fatal(err)
	}
	seen, removals := 0, 0
	err := parquet.ScanColumns(dir, parquet.EventsDataset, "", "", []string{parquet.EventIDColumn, parquet.TypeColumn, parquet.ActiveCountColumn, parquet.TotalCountColumn}, func(c [][]pq.Value) error {
		for i := range c[0] {
			id := string(c[0][i].ByteArray())
			got := parquet.DeviceRemovalOf(parquet.EventTypeOf(c[1][i]), c[2][i], c[3][i])
			if got != want[id] {
				t.Errorf("%s: DeviceRemovalOf = %v, the event's DeviceRemoval %v", id, got, want[id])
			}
			seen++
			if got {
				removals++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Uninstalls with active 1 and total 2 or 3, or active 2 and total 3.
	if seen != len(evs) || removals != 3 {
		t.Errorf("read %d of %d events, %d device removals (want 3)", seen, len(evs), removals)
	}
}
