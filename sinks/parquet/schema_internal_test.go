package parquet

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// statusRowV1 is StatusRow as files written before issue 18 have it: no
// firstInstalledAt or passIssuedAt, and a required last change.
type statusRowV1 struct {
	CustomerID        string `parquet:"customer_id"`
	Version           int64  `parquet:"version"`
	WalletStatus      string `parquet:"wallet_status,dict"`
	AppleInstalledAt  *int64 `parquet:"apple_wallet_installed_at,optional,timestamp(millisecond)"`
	GoogleInstalledAt *int64 `parquet:"google_wallet_installed_at,optional,timestamp(millisecond)"`
	LastChangedAt     int64  `parquet:"wallet_last_changed_at,timestamp(millisecond)"`
	LastEvent         string `parquet:"wallet_last_event,dict"`
	KafkaPartition    int32  `parquet:"kafka_partition"`
	KafkaOffset       int64  `parquet:"kafka_offset"`
}

// An archive written before issue 18 reads under today's schema: every
// column it has, and the two new fields null.
func TestStatusFilesOfEarlierSchemasRead(t *testing.T) {
	dir := t.TempDir()
	apple := int64(1772359200000)
	old := []statusRowV1{
		{CustomerID: "c1", Version: 3, WalletStatus: "apple", AppleInstalledAt: &apple, LastChangedAt: apple, LastEvent: "installed", KafkaPartition: 2, KafkaOffset: 7},
		{CustomerID: "c2", Version: 1, WalletStatus: "none", LastChangedAt: apple + 1, LastEvent: "uninstalled", KafkaPartition: 2, KafkaOffset: 8},
	}
	if err := writeRange(dir, StatusDataset, 2, 7, 8, map[string][]statusRowV1{"2026-03-01": old}, NewMetrics(prometheus.NewRegistry())); err != nil {
		t.Fatal(err)
	}
	var got []StatusRow
	if err := ReadDataset(dir, StatusDataset, "", "", func(rows []StatusRow) error { got = append(got, rows...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(old) {
		t.Fatalf("read %d rows, want %d", len(got), len(old))
	}
	for i, r := range got {
		o := old[i]
		if r.CustomerID != o.CustomerID || r.Version != o.Version || r.WalletStatus != o.WalletStatus || r.LastChangedAt == nil ||
			*r.LastChangedAt != o.LastChangedAt || r.LastEvent != o.LastEvent || r.KafkaOffset != o.KafkaOffset ||
			(r.AppleInstalledAt == nil) != (o.AppleInstalledAt == nil) || r.FirstInstalledAt != nil || r.PassIssuedAt != nil {
			t.Errorf("row %d: read %+v from %+v", i, r, o)
		}
	}
}
