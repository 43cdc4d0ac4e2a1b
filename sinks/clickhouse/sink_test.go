package clickhouse_test

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/wire"
)

type pipeline struct {
	brokers []string
	events  []walletsync.Event
	want    *walletsync.Fold
	uniq    int
}

// startPipeline runs a broker and a processor, and produces a synthetic
// stream to wallet.events in the background, slowly enough that sinks see
// it arrive over a few seconds.
func startPipeline(t *testing.T, n int) *pipeline {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "producer")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := processors.New(processors.Config{Brokers: emb.Brokers(), TransactionalID: "sink-test"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)

	cfg := synth.Default(n)
	cfg.Lifecycle = true // issued events and device removals reach the tables too
	cfg.Customers = 300
	pl := &pipeline{brokers: emb.Brokers(), events: synth.Events(cfg), want: walletsync.NewFold()}
	dd := walletsync.NewDeduper(0)
	for i := range pl.events {
		if !dd.Seen(pl.events[i].ID, 0) {
			pl.want.Apply(&pl.events[i])
			pl.uniq++
		}
	}
	go func() {
		for i := 0; i < len(pl.events); i += 200 {
			var recs []*kgo.Record
			for _, e := range pl.events[i:min(i+200, len(pl.events))] {
				recs = append(recs, &kgo.Record{Topic: "wallet.events", Key: []byte(e.CustomerID), Value: wire.AppendEvent(nil, &e)})
			}
			if cl.ProduceSync(ctx, recs...).FirstErr() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return pl
}

func runSink(t *testing.T, brokers []string, conn driver.Conn, reg ...*prometheus.Registry) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	cfg := clickhouse.SinkConfig{Brokers: brokers, BatchRows: 400, BatchInterval: 100 * time.Millisecond}
	if len(reg) > 0 {
		cfg.Metrics = clickhouse.NewSinkMetrics(reg[0])
	}
	s := clickhouse.NewSink(cfg, conn)
	go func() { defer close(done); _ = s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// waitExact waits until ClickHouse holds exactly the pipeline's result:
// every event once and every customer's newest status, as the fold says.
func waitExact(t *testing.T, conn driver.Conn, pl *pipeline) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	var events, customers uint64
	for time.Now().Before(deadline) {
		_ = conn.QueryRow(ctx, "SELECT count() FROM (SELECT event_id FROM wallet_events LIMIT 1 BY event_id)").Scan(&events)
		_ = conn.QueryRow(ctx, "SELECT count() FROM wallet_status_current FINAL").Scan(&customers)
		if events == uint64(pl.uniq) && customers == uint64(pl.want.Len()) && statusesMatch(t, conn, pl, false) {
			statusesMatch(t, conn, pl, true)
			copiesAreMarked(t, conn)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	statusesMatch(t, conn, pl, true)
	t.Fatalf("ClickHouse holds %d events and %d customers, want %d and %d", events, customers, pl.uniq, pl.want.Len())
}

// copiesAreMarked checks what lets queries skip FINAL: every month in which
// an event has two rows is marked dirty.
func copiesAreMarked(t *testing.T, conn driver.Conn) {
	t.Helper()
	ctx := context.Background()
	dirty, err := clickhouse.DirtyMonths(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT toYYYYMM(occurred_at, 'UTC') AS m, count() - uniqExact(event_id) AS copies
		FROM wallet_events GROUP BY m HAVING copies > 0`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var m uint32
		var copies int64
		if err := rows.Scan(&m, &copies); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(dirty, m) {
			t.Errorf("month %d holds %d copies of events but is not marked dirty (dirty: %v)", m, copies, dirty)
		}
	}
}

func statusesMatch(t *testing.T, conn driver.Conn, pl *pipeline, report bool) bool {
	rows, err := conn.Query(context.Background(), `SELECT customer_id, version, toString(wallet_status), apple_installed_at_ms,
		google_installed_at_ms, last_changed_at_ms, toString(last_event), first_installed_at_ms, pass_issued_at_ms FROM wallet_status_current FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n, ok := 0, true
	for rows.Next() {
		var id, wallet, last string
		var version uint64
		var apple, google, changed, first, issued int64
		if err := rows.Scan(&id, &version, &wallet, &apple, &google, &changed, &last, &first, &issued); err != nil {
			t.Fatal(err)
		}
		n++
		want, _ := pl.want.Status(id)
		if wallet != want.Wallet.String() || apple != want.AppleInstalledAt || google != want.GoogleInstalledAt ||
			changed != want.LastChangedAt || last != cmp.Or(want.LastEvent.String(), "none") ||
			first != want.FirstInstalledAt || issued != want.PassIssuedAt {
			ok = false
			if report {
				t.Errorf("customer %s in ClickHouse: %s %d %d %d %s %d %d; the fold says %+v", id, wallet, apple, google, changed, last, first, issued, want.Fields)
			}
		}
	}
	return ok && n == pl.want.Len()
}

func TestSinkWritesExactlyWhatThePipelineFolded(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	pl := startPipeline(t, 4000)
	runSink(t, pl.brokers, conn)
	waitExact(t, conn, pl)
	baseChangesAddUp(t, conn, pl)
}

// baseChangesAddUp checks the processors' base changes as the sink stored
// them: for every register whose rows all carry one, they sum to its
// installed state by the fold; most registers must carry them.
func baseChangesAddUp(t *testing.T, conn driver.Conn, pl *pipeline) {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT customer_id, pass_id, toString(platform), sum(base_change), min(base_known)
		FROM (SELECT * FROM wallet_events LIMIT 1 BY event_id) WHERE type != 'observed'
		GROUP BY customer_id, pass_id, platform`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	known, unknown := 0, 0
	for rows.Next() {
		var customer, pass, platform string
		var sum int64
		var allKnown uint8
		if err := rows.Scan(&customer, &pass, &platform, &sum, &allKnown); err != nil {
			t.Fatal(err)
		}
		if allKnown == 0 {
			unknown++
			continue
		}
		known++
		want := int64(-1)
		for _, r := range pl.want.Registers(customer) {
			if r.PassID == pass && r.Platform.String() == platform {
				want = 0
				if r.LastEventID != "" && !r.LastEventUninstalled {
					want = 1
				}
			}
		}
		if sum != want {
			t.Errorf("register %s/%s/%s: stored base changes sum to %d, its installed state is %d", customer, pass, platform, sum, want)
		}
	}
	if known == 0 || known < unknown {
		t.Errorf("%d registers carry their base changes, %d do not: the header did not reach ClickHouse", known, unknown)
	}
	// Every install event of an in-order register has its initial
	// retention row (the walletsync-retention header made it through).
	var installs, initial uint64
	if err := conn.QueryRow(context.Background(), `SELECT
		(SELECT count() FROM (SELECT * FROM wallet_events LIMIT 1 BY event_id) WHERE type = 'installed' AND base_known = 1),
		(SELECT count() FROM (SELECT * FROM wallet_retention LIMIT 1 BY event_id, seq) WHERE initial = 1)`).Scan(&installs, &initial); err != nil {
		t.Fatal(err)
	}
	if installs == 0 || initial != installs {
		t.Errorf("%d initial retention rows for %d in-order install events", initial, installs)
	}
}

// The sink stopped and started again several times mid-stream, each time
// possibly after inserting a batch and before committing its offsets: the
// re-inserted rows collapse, nothing is counted twice or lost.
func TestSinkRestartsCountNothingTwice(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	pl := startPipeline(t, 4000)
	for range 4 {
		stop := runSink(t, pl.brokers, conn)
		time.Sleep(400 * time.Millisecond)
		stop()
	}
	runSink(t, pl.brokers, conn)
	waitExact(t, conn, pl)
}

// The sink inserts a batch and dies before committing its offsets. The
// next sink inserts those records again: it must have read the dead one's
// announcement and marked their months dirty before it did.
func TestSinkCrashBetweenInsertAndCommitMarksTheRepeat(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	pl := startPipeline(t, 4000)
	ctx := context.Background()

	s := clickhouse.NewSink(clickhouse.SinkConfig{Brokers: pl.brokers, BatchRows: 400, BatchInterval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}, conn)
	// The first batches may hold status records only; the crash comes
	// after the first insert that wrote events.
	clickhouse.SetCrashAfterInsert(s, func() bool {
		var n uint64
		return conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&n) == nil && n > 0
	})
	if err := s.Run(ctx); err != nil { // returns once that insert "crashed" it
		t.Fatal(err)
	}
	var first []uint32
	rows, err := conn.Query(ctx, "SELECT DISTINCT toYYYYMM(occurred_at, 'UTC') FROM wallet_events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m uint32
		if err := rows.Scan(&m); err != nil {
			t.Fatal(err)
		}
		first = append(first, m)
	}
	rows.Close()
	if len(first) == 0 {
		t.Fatal("the first sink inserted nothing before it stopped")
	}
	if dirty, _ := clickhouse.DirtyMonths(ctx, conn); len(dirty) != 0 {
		t.Fatalf("months %v dirty after a first insert: nothing could have been repeated yet", dirty)
	}

	runSink(t, pl.brokers, conn)
	waitExact(t, conn, pl)
	dirty, err := clickhouse.DirtyMonths(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range first {
		if !slices.Contains(dirty, m) {
			t.Errorf("month %d was inserted by the crashed sink and again by the next, but is not marked dirty (dirty: %v)", m, dirty)
		}
	}
}

// ClickHouse killed mid-stream and started again: the sink retries with
// backoff, holds its offsets meanwhile, and ends exact.
// ClickHouse down when the sink starts: its migrations wait for the server
// like its inserts do, instead of the sink giving up for good.
func TestSinkWaitsForClickHouseAtStart(t *testing.T) {
	srv := chtest.Start(t)
	srv.Stop()
	pl := startPipeline(t, 2000)
	reg := prometheus.NewRegistry()
	runSink(t, pl.brokers, srv.Conn(t), reg)
	time.Sleep(1500 * time.Millisecond)
	srv.Restart(t)
	waitExact(t, srv.Conn(t), pl)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "walletsync_clickhouse_migration_retries_total" && mf.GetMetric()[0].GetCounter().GetValue() > 0 {
			return
		}
	}
	t.Error("walletsync_clickhouse_migration_retries_total did not count the wait")
}

func TestSinkSurvivesClickHouseOutage(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	pl := startPipeline(t, 4000)
	reg := prometheus.NewRegistry()
	runSink(t, pl.brokers, conn, reg)
	time.Sleep(300 * time.Millisecond)
	srv.Stop()
	time.Sleep(1500 * time.Millisecond) // events keep flowing meanwhile
	srv.Restart(t)
	waitExact(t, srv.Conn(t), pl)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	retries := 0.0
	for _, mf := range mfs {
		// The outage hits an insert, or the migrations when the sink is
		// still starting.
		if n := mf.GetName(); n == "walletsync_clickhouse_insert_retries_total" || n == "walletsync_clickhouse_migration_retries_total" {
			retries += mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if retries == 0 {
		t.Fatal("the sink never retried: the outage did not hit it")
	}
}
