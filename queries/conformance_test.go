package queries_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/queries"
	chquery "github.com/walletsync/walletsync/queries/clickhouse"
	embedq "github.com/walletsync/walletsync/queries/embedded"
	"github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// events spread over ten days of March 2026, with several passes, both
// platforms, observations and the three "by" fields.
func events(seed uint64, n int) []walletsync.Event {
	rng := rand.New(rand.NewPCG(seed, seed))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	out := make([]walletsync.Event, n)
	for i := range out {
		e := walletsync.Event{
			ID:         fmt.Sprintf("e%d", i),
			Type:       walletsync.EventType(1 + rng.IntN(3)),
			Platform:   walletsync.Platform(1 + rng.IntN(2)),
			CustomerID: fmt.Sprintf("c%d", rng.IntN(200)),
			PassID:     []string{"", "loyalty", "coupon"}[rng.IntN(3)],
			PassType:   []string{"loyalty", "coupon", ""}[rng.IntN(3)],
			OccurredAt: start + rng.Int64N(10*86_400_000),
			Source:     []string{"webhook", "connector", "backfill"}[rng.IntN(3)],
		}
		if rng.IntN(2) == 0 {
			e.Registration = &walletsync.Registration{Medium: []string{"email", "sms"}[rng.IntN(2)]}
		}
		if e.Type == walletsync.TypeObserved {
			e.Installed = rng.IntN(2) == 0
		}
		if i > 0 && i%25 == 0 {
			// A same-millisecond tie on the previous event's register.
			p := out[i-1]
			e.CustomerID, e.PassID, e.Platform, e.OccurredAt = p.CustomerID, p.PassID, p.Platform, p.OccurredAt
			e.Type = walletsync.EventType(1 + rng.IntN(2))
		}
		out[i] = e
	}
	return out
}

// referenceDaily is SPEC §7's daily written as plainly as possible: the
// oracle.
func referenceDaily(evs []walletsync.Event, q queries.Query) []queries.Row {
	type key struct{ day, platform, by string }
	counts := map[key][2]int64{}
	byValues := map[string]bool{}
	for _, e := range evs {
		if e.Type == walletsync.TypeObserved || e.OccurredAt < q.From.UnixMilli() || e.OccurredAt >= q.To.UnixMilli() {
			continue
		}
		by := ""
		switch q.By {
		case "passType":
			by = e.PassType
		case "source":
			by = e.Source
		case "medium":
			if e.Registration != nil {
				by = e.Registration.Medium
			}
		}
		byValues[by] = true
		k := key{time.UnixMilli(e.OccurredAt).UTC().Format(time.DateOnly), e.Platform.String(), by}
		c := counts[k]
		if e.Type == walletsync.TypeInstalled {
			c[0]++
		} else {
			c[1]++
		}
		counts[k] = c
	}
	if len(byValues) == 0 {
		byValues[""] = true
	}
	var sorted []string
	for b := range byValues {
		sorted = append(sorted, b)
	}
	for i := range sorted { // insertion sort: the oracle stays obvious
		for j := i; j > 0 && sorted[j] < sorted[j-1]; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	var rows []queries.Row
	for d := q.From; d.Before(q.To); d = d.AddDate(0, 0, 1) {
		for _, p := range []string{"apple", "google"} {
			for _, b := range sorted {
				c := counts[key{d.Format(time.DateOnly), p, b}]
				row := queries.Row{"day": d.Format(time.DateOnly), "platform": p, "installs": c[0], "uninstalls": c[1], "net": c[0] - c[1]}
				if q.By != "" {
					row[q.By] = b
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// referenceInstalledBase is SPEC §7's installed-base, plainly: for every
// day, every register's E among the events before the day ends.
func referenceInstalledBase(evs []walletsync.Event, q queries.Query) []queries.Row {
	type reg struct {
		customer, pass string
		platform       walletsync.Platform
	}
	var rows []queries.Row
	for d := q.From; d.Before(q.To); d = d.AddDate(0, 0, 1) {
		end := d.AddDate(0, 0, 1).UnixMilli()
		winner := map[reg]*walletsync.Event{}
		for i := range evs {
			e := &evs[i]
			if e.Type == walletsync.TypeObserved || e.OccurredAt >= end {
				continue
			}
			k := reg{e.CustomerID, e.PassID, e.Platform}
			w := winner[k]
			if w == nil || e.OccurredAt > w.OccurredAt ||
				e.OccurredAt == w.OccurredAt && (e.Type == walletsync.TypeUninstalled && w.Type == walletsync.TypeInstalled ||
					e.Type == w.Type && e.ID > w.ID) {
				winner[k] = e
			}
		}
		counts := map[walletsync.Platform]int64{}
		for k, w := range winner {
			if w.Type == walletsync.TypeInstalled {
				counts[k.platform]++
			}
		}
		for _, p := range []walletsync.Platform{walletsync.PlatformApple, walletsync.PlatformGoogle} {
			rows = append(rows, queries.Row{"day": d.Format(time.DateOnly), "platform": p.String(), "installed": counts[p]})
		}
	}
	return rows
}

// referenceRetention is SPEC §7's retention, plainly: for each install
// event in the range, its register's E at install + 1, 7 and 30 days.
func referenceRetention(evs []walletsync.Event, q queries.Query) []queries.Row {
	wins := func(a, b *walletsync.Event) bool {
		if a.OccurredAt != b.OccurredAt {
			return a.OccurredAt > b.OccurredAt
		}
		if a.Type != b.Type {
			return a.Type == walletsync.TypeUninstalled
		}
		return a.ID > b.ID
	}
	stillAt := func(in *walletsync.Event, at int64) bool {
		var w *walletsync.Event
		for i := range evs {
			e := &evs[i]
			if e.Type == walletsync.TypeObserved || e.OccurredAt > at || e.CustomerID != in.CustomerID ||
				e.PassID != in.PassID || e.Platform != in.Platform {
				continue
			}
			if w == nil || wins(e, w) {
				w = e
			}
		}
		return w != nil && w.Type == walletsync.TypeInstalled
	}
	type key struct {
		week string
		p    walletsync.Platform
	}
	counts := map[key][4]int64{}
	for i := range evs {
		e := &evs[i]
		if e.Type != walletsync.TypeInstalled || e.OccurredAt < q.From.UnixMilli() || e.OccurredAt >= q.To.UnixMilli() {
			continue
		}
		d := time.UnixMilli(e.OccurredAt).UTC()
		monday := time.Date(d.Year(), d.Month(), d.Day()-(int(d.Weekday())+6)%7, 0, 0, 0, 0, time.UTC)
		k := key{monday.Format(time.DateOnly), e.Platform}
		c := counts[k]
		c[0]++
		for j, n := range []int64{1, 7, 30} {
			if stillAt(e, e.OccurredAt+n*86_400_000) {
				c[j+1]++
			}
		}
		counts[k] = c
	}
	var rows []queries.Row
	for _, w := range q.Weeks() {
		for _, p := range []walletsync.Platform{walletsync.PlatformApple, walletsync.PlatformGoogle} {
			c := counts[key{w.Format(time.DateOnly), p}]
			rows = append(rows, queries.Row{"cohortWeek": w.Format(time.DateOnly), "platform": p.String(),
				"installed": c[0], "after1d": c[1], "after7d": c[2], "after30d": c[3]})
		}
	}
	return rows
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// boundaryEvents: registers whose uninstall falls exactly 1, 7 or 30 days
// after the install (E at that instant includes it), a millisecond later,
// or ties the install, and an install repeated on one millisecond.
func boundaryEvents() []walletsync.Event {
	const day = 86_400_000
	at := time.Date(2026, 3, 4, 9, 30, 0, 0, time.UTC).UnixMilli()
	var out []walletsync.Event
	for i, after := range []int64{day, 7 * day, 30 * day, day + 1, 7*day + 1, 0} {
		c := fmt.Sprintf("edge%d", i)
		out = append(out,
			walletsync.Event{ID: c + "-i", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: c, OccurredAt: at},
			walletsync.Event{ID: c + "-u", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: c, OccurredAt: at + after})
	}
	return append(out,
		walletsync.Event{ID: "twice-a", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: "twice", OccurredAt: at},
		walletsync.Event{ID: "twice-b", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: "twice", OccurredAt: at})
}

// conformanceData: events (with same-millisecond ties and retention
// boundaries) and every status version the fold emits, in order.
func conformanceData() ([]walletsync.Event, []walletsync.Status, *walletsync.Fold, []walletsync.BaseChange) {
	evs := append(events(1, 3000), boundaryEvents()...)
	fold := walletsync.NewFold()
	var versions []walletsync.Status
	base := make([]walletsync.BaseChange, len(evs))
	for i := range evs {
		a := fold.ApplyBase(&evs[i])
		st, changed, bc := a.Status, a.StatusChanged, a.Base
		if changed {
			versions = append(versions, st)
		}
		base[i] = bc
	}
	return evs, versions, fold, base
}

// conformanceCases are the queries every engine answers.
var conformanceCases = []struct{ name, from, to, by string }{
	{"daily", "2026-03-01", "2026-03-11", ""},
	{"daily", "2026-02-25", "2026-03-04", "passType"}, // days before the data: zeros
	{"daily", "2026-03-03", "2026-03-05", "medium"},
	{"daily", "2026-03-09", "2026-03-20", "source"},
	{"status", "2026-03-01", "2026-03-02", ""},
	{"installed-base", "2026-02-27", "2026-03-12", ""},
	{"installed-base", "2026-03-05", "2026-03-06", ""},
	{"retention", "2026-02-23", "2026-03-16", ""},
	{"retention", "2026-03-04", "2026-03-06", ""},
}

// reference answers a case with the plain Go oracles written from SPEC §7.
func reference(t *testing.T, q queries.Query, evs []walletsync.Event, fold *walletsync.Fold) []queries.Row {
	switch q.Name {
	case queries.Daily:
		return referenceDaily(evs, q)
	case queries.InstalledBase:
		return referenceInstalledBase(evs, q)
	case queries.Retention:
		return referenceRetention(evs, q)
	}
	mix := map[string]int64{}
	for _, s := range fold.Statuses() {
		mix[s.Wallet.String()]++
	}
	var want []queries.Row
	for _, w := range walletsync.WalletStatuses {
		want = append(want, queries.Row{"walletStatus": w.String(), "customers": mix[w.String()]})
	}
	return want
}

// conformance runs every case on an engine and returns its answers; each
// must equal the oracle's.
func conformance(t *testing.T, name string, engine queries.Engine, evs []walletsync.Event, fold *walletsync.Fold) []string {
	t.Helper()
	var answers []string
	for _, c := range conformanceCases {
		q, err := queries.ParseQuery(c.name, c.from, c.to, c.by)
		if err != nil {
			t.Fatal(err)
		}
		got, err := engine.Insight(context.Background(), q)
		if err != nil {
			t.Fatalf("%s %v: %v", name, c, err)
		}
		g, w := asJSON(t, got.Rows), asJSON(t, reference(t, q, evs, fold))
		if g != w {
			t.Errorf("%s %v:\n got %s\nwant %s", name, c, g, w)
		}
		answers = append(answers, g)
	}
	return answers
}

// One suite, both engines: ClickHouse (with a batch inserted twice, as a
// sink retry does, its months marked dirty first as the sink does; then
// again once the verifier merged them clean) and the embedded engine over a
// Parquet archive of the same events must each equal the oracles, and so
// give identical rows.
func TestEnginesConformToTheOracleAndEachOther(t *testing.T) {
	evs, versions, fold, base := conformanceData()

	dir := t.TempDir()
	if err := parquet.WriteEvents(dir, 0, 0, evs[:1500]); err != nil {
		t.Fatal(err)
	}
	if err := parquet.WriteEvents(dir, 1, 0, evs[1500:]); err != nil {
		t.Fatal(err)
	}
	if err := parquet.WriteStatuses(dir, 0, 0, versions); err != nil {
		t.Fatal(err)
	}
	embedded := conformance(t, "embedded", embedq.New(dir), evs, fold)

	srv := chtest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	if _, err := clickhouse.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// With each event's change as the processor reports it in this order:
	// registers whose events all came in order take installed-base's fast
	// way, the others (a late event) its slow way; both must be there.
	if err := clickhouse.InsertEvents(ctx, conn, evs, base); err != nil {
		t.Fatal(err)
	}
	var fast, slow uint64
	if err := conn.QueryRow(ctx, `SELECT uniqExactIf(register, known), uniqExactIf(register, NOT known) FROM (
		SELECT register, min(base_known) = 1 AS known FROM wallet_events WHERE type != 'observed' GROUP BY register)`).Scan(&fast, &slow); err != nil || fast < 100 || slow < 100 {
		t.Fatalf("registers all known %d, with an unknown change %d (%v): want both ways exercised", fast, slow, err)
	}
	again := clickhouse.EventMonths(evs[:1000])
	if err := clickhouse.MarkDirty(ctx, conn, again); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.InsertEvents(ctx, conn, evs[:1000], base[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.InsertStatuses(ctx, conn, versions); err != nil {
		t.Fatal(err)
	}
	all := clickhouse.EventMonths(evs)
	if len(again) == len(all) {
		t.Fatalf("the twice-inserted batch spans every month (%v): the plain-scan path goes untested", all)
	}
	ch := conformance(t, "clickhouse", &chquery.Engine{Conn: conn}, evs, fold)
	for i := range conformanceCases {
		if embedded[i] != ch[i] {
			t.Errorf("%v: the engines differ:\nembedded   %s\nclickhouse %s", conformanceCases[i], embedded[i], ch[i])
		}
	}

	// Marks carry the server's second: a verification in the same second
	// cannot tell whether it saw an insert that followed them.
	time.Sleep(1100 * time.Millisecond)
	cleared, err := clickhouse.Verify(ctx, conn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if dirty, err := clickhouse.DirtyMonths(ctx, conn); err != nil || len(dirty) != 0 || !slices.Equal(cleared, again) {
		t.Fatalf("after Verify: cleared %v, still dirty %v (%v); want %v cleared, none dirty", cleared, dirty, err, again)
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&rows); err != nil || rows != uint64(len(evs)) {
		t.Fatalf("after Verify wallet_events holds %d rows (%v), want %d: OPTIMIZE did not merge the copies", rows, err, len(evs))
	}
	ch = conformance(t, "clickhouse verified", &chquery.Engine{Conn: conn}, evs, fold)
	for i := range conformanceCases {
		if embedded[i] != ch[i] {
			t.Errorf("%v after Verify: the engines differ:\nembedded   %s\nclickhouse %s", conformanceCases[i], embedded[i], ch[i])
		}
	}
}
