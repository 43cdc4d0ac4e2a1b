package clickhouse_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/wire"
)

// The running sink's verifier clears a month whose mark is older than the
// settle time once the month holds one row per event, merging its copies
// first; a month marked within the settle time stays dirty even when it
// holds no copy, since an insert announced by that mark may still land.
func TestSinkVerifierClearsSettledMonthsOnly(t *testing.T) {
	conn := migrated(t)
	ctx := context.Background()
	ev := func(id, at string) walletsync.Event {
		e, err := wire.ParseEvent([]byte(`{"eventId":"` + id + `","type":"installed","platform":"apple","customerId":"c","occurredAt":"` + at + `","source":"webhook"}`))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	old := []walletsync.Event{ev("a", "2026-01-10T10:00:00Z"), ev("b", "2026-01-11T10:00:00Z")}
	recent := []walletsync.Event{ev("c", "2026-02-10T10:00:00Z")}
	jan, feb := clickhouse.Month(old[0].OccurredAt), clickhouse.Month(recent[0].OccurredAt)
	// January: marked an hour ago (as by the server clock) and inserted
	// twice, as a retried insert does. February: marked now, one copy.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO wallet_events_dirty (month, marked_at)")
	if err != nil {
		t.Fatal(err)
	}
	var now time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(jan, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.MarkDirty(ctx, conn, []uint32{feb}); err != nil {
		t.Fatal(err)
	}
	for _, evs := range [][]walletsync.Event{old, old, recent} {
		if err := clickhouse.InsertEvents(ctx, conn, evs, nil); err != nil {
			t.Fatal(err)
		}
	}
	if dirty, err := clickhouse.DirtyMonths(ctx, conn); err != nil || !slices.Equal(dirty, []uint32{jan, feb}) {
		t.Fatalf("dirty before the verifier: %v, %v; want [%d %d]", dirty, err, jan, feb)
	}

	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s := clickhouse.NewSink(clickhouse.SinkConfig{Brokers: emb.Brokers(), VerifyEvery: 100 * time.Millisecond,
		InsertTimeout: 10 * time.Second, VerifySettle: 5 * time.Minute}, conn)
	go func() { defer close(done); _ = s.Run(sctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(30 * time.Second)
	var dirty []uint32
	for time.Now().Before(deadline) {
		if dirty, err = clickhouse.DirtyMonths(ctx, conn); err == nil && slices.Equal(dirty, []uint32{feb}) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(dirty, []uint32{feb}) {
		t.Fatalf("dirty after the verifier ran: %v, %v; want only February (%d)", dirty, err, feb)
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events WHERE occurred_at < toDateTime('2026-02-01 00:00:00')").Scan(&rows); err != nil || rows != 2 {
		t.Errorf("January holds %d rows (%v) after the verifier; want its copies merged into 2", rows, err)
	}
	// A few more rounds must not clear February, whose mark is younger
	// than the settle time.
	time.Sleep(500 * time.Millisecond)
	if dirty, err := clickhouse.DirtyMonths(ctx, conn); err != nil || !slices.Equal(dirty, []uint32{feb}) {
		t.Errorf("February cleared within its settle time: dirty %v, %v", dirty, err)
	}
}
