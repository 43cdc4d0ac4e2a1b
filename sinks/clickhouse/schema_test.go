package clickhouse_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/sinks/clickhouse"
)

// migrated starts a server and returns a connection to its default
// database with the schema applied.
func migrated(tb testing.TB) driver.Conn {
	tb.Helper()
	conn := chtest.Start(tb).Conn(tb)
	if _, err := clickhouse.Migrate(context.Background(), conn); err != nil {
		tb.Fatal(err)
	}
	return conn
}

func TestMigrateIsIdempotent(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	done, err := clickhouse.Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"001_wallet_events", "002_wallet_status_versions", "003_wallet_status_current",
		"004_wallet_events_dirty", "005_wallet_events_verified", "006_wallet_events_base_change", "007_wallet_retention",
		"008_wallet_events_issued", "009_wallet_status_versions_firsts", "010_wallet_status_current_firsts"}
	if !slices.Equal(done, want) {
		t.Fatalf("first run applied %v, want %v", done, want)
	}
	if again, err := clickhouse.Migrate(ctx, conn); err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, %v; want nothing", again, err)
	}
	for _, table := range []string{"wallet_events", "wallet_status_versions", "wallet_status_current",
		"wallet_events_dirty", "wallet_events_verified", "wallet_retention"} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: %d, %v", table, n, err)
		}
	}
}

// A batch inserted twice, as a sink does when it crashes after the insert
// and before committing its offsets, counts once.
func TestEventsInsertedTwiceCountOnce(t *testing.T) {
	conn := migrated(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for range 2 {
		// An explicit column list: ClickHouse 18.16 needs it for batches.
		b, err := conn.PrepareBatch(ctx, "INSERT INTO wallet_events (event_id, type, platform, customer_id, occurred_at, occurred_ms, tags)")
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"e1", "e2", "e3"} {
			if err := b.Append(id, "installed", "apple", "c1", at, at.UnixMilli()+int64(i), []string{"spring"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	var raw, final, distinct uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events FINAL").Scan(&final); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM (SELECT event_id FROM wallet_events LIMIT 1 BY event_id)").Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if raw != 6 || final != 3 || distinct != 3 {
		t.Fatalf("rows %d, FINAL %d, one per event_id %d; want 6, 3, 3", raw, final, distinct)
	}
}

// Sinks starting together all migrate: each must succeed, whichever applies
// a step first, ALTER … ADD COLUMN included (18.16 has no IF NOT EXISTS).
func TestMigrateConcurrently(t *testing.T) {
	srv := chtest.Start(t)
	ctx := context.Background()
	for round := range 3 {
		db := fmt.Sprintf("concurrent%d", round)
		if err := srv.Conn(t).Exec(ctx, "CREATE DATABASE "+db); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				conn, err := chgo.Open(&chgo.Options{Addr: []string{srv.Addr}, Auth: chgo.Auth{Database: db}})
				if err == nil {
					_, err = clickhouse.Migrate(ctx, conn)
					conn.Close()
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("round %d: a concurrent migrate failed: %v", round, err)
			}
		}
		var n uint64
		if err := srv.Conn(t).QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'wallet_events' AND name IN ('base_change', 'base_known', 'register')", db).Scan(&n); err != nil || n != 3 {
			t.Errorf("round %d: %d of the added columns (%v)", round, n, err)
		}
	}
}
