package queries_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/internal/synth"
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
// oracle. Installed and uninstalled events only (not observed, not
// issued); a device removal (SPEC §3) counts in deviceRemovals, not in
// uninstalls.
func referenceDaily(evs []walletsync.Event, q queries.Query) []queries.Row {
	type key struct{ day, platform, by string }
	counts := map[key][3]int64{}
	byValues := map[string]bool{}
	for _, e := range evs {
		if e.Type != walletsync.TypeInstalled && e.Type != walletsync.TypeUninstalled ||
			e.OccurredAt < q.From.UnixMilli() || e.OccurredAt >= q.To.UnixMilli() {
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
		switch {
		case e.Type == walletsync.TypeInstalled:
			c[0]++
		case e.DeviceRemoval():
			c[2]++
		default:
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
				row := queries.Row{"day": d.Format(time.DateOnly), "platform": p, "installs": c[0], "uninstalls": c[1], "net": c[0] - c[1],
					"deviceRemovals": c[2]}
				if q.By != "" {
					row[q.By] = b
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// canBeE says whether e can be its register's E (SPEC §3): an install or
// an uninstall that is not a device removal. Observations are ignored by
// installed-base and retention, issued events belong to no register.
func canBeE(e *walletsync.Event) bool {
	return (e.Type == walletsync.TypeInstalled || e.Type == walletsync.TypeUninstalled) && !e.DeviceRemoval()
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
			if !canBeE(e) || e.OccurredAt >= end {
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
			if !canBeE(e) || e.OccurredAt > at || e.CustomerID != in.CustomerID ||
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

// referenceFunnel is SPEC §7's funnel, plainly: per pass (customerId,
// passId), its earliest issued event — the smallest eventId among those at
// the earliest instant, the rule docs/insights.md states where SPEC is
// silent; if that falls in the range, the pass counts in that event's week
// and passType, and within N days if the pass has an installed event, on
// any platform, from the issue instant to N×24 h after it, both included.
func referenceFunnel(evs []walletsync.Event, q queries.Query) []queries.Row {
	type pass struct{ customer, id string }
	first := map[pass]*walletsync.Event{}
	for i := range evs {
		e := &evs[i]
		if e.Type != walletsync.TypeIssued {
			continue
		}
		k := pass{e.CustomerID, e.PassID}
		if f := first[k]; f == nil || e.OccurredAt < f.OccurredAt || e.OccurredAt == f.OccurredAt && e.ID < f.ID {
			first[k] = e
		}
	}
	type key struct{ week, passType string }
	counts := map[key][4]int64{}
	for p, is := range first {
		if is.OccurredAt < q.From.UnixMilli() || is.OccurredAt >= q.To.UnixMilli() {
			continue
		}
		d := time.UnixMilli(is.OccurredAt).UTC()
		monday := time.Date(d.Year(), d.Month(), d.Day()-(int(d.Weekday())+6)%7, 0, 0, 0, 0, time.UTC)
		k := key{monday.Format(time.DateOnly), is.PassType}
		c := counts[k]
		c[0]++
		for j, n := range []int64{1, 7, 30} {
			for _, e := range evs {
				if e.Type == walletsync.TypeInstalled && e.CustomerID == p.customer && e.PassID == p.id &&
					e.OccurredAt >= is.OccurredAt && e.OccurredAt <= is.OccurredAt+n*86_400_000 {
					c[j+1]++
					break
				}
			}
		}
		counts[k] = c
	}
	var keys []key
	for k := range counts {
		keys = append(keys, k)
	}
	for i := range keys { // insertion sort by week, then passType
		for j := i; j > 0 && (keys[j].week < keys[j-1].week || keys[j].week == keys[j-1].week && keys[j].passType < keys[j-1].passType); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	rows := []queries.Row{} // none: an empty list, as the answer has
	for _, k := range keys {
		c := counts[k]
		rows = append(rows, queries.Row{"cohortWeek": k.week, "passType": k.passType, "issued": c[0], "within1d": c[1], "within7d": c[2], "within30d": c[3]})
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

// lifecycleEvents: synth's stream of issue 18 (each pass's first event
// preceded by its issued event, with no platform; one uninstall in five
// preceded by a device removal) in four bursts, from late February to
// April, over the same 60 customers: a pass issued in one burst is issued
// again (an issued event that is not the earliest) and installed days or
// weeks later in another; the second burst crosses a midnight.
func lifecycleEvents() []walletsync.Event {
	var out []walletsync.Event
	for i, start := range []string{"2026-02-27T22:00:00Z", "2026-03-03T23:58:30Z", "2026-03-09T12:00:00Z", "2026-04-01T06:00:00Z"} {
		cfg := synth.Default(700)
		cfg.Customers, cfg.Seed, cfg.DupRate, cfg.Lifecycle = 60, uint64(10+i), 0, true
		cfg.Start, _ = time.Parse(time.RFC3339, start)
		out = append(out, synth.Events(cfg)...)
	}
	return out
}

// deviceEvents: uninstalls whose device counts make them device removals
// (SPEC §3: activeCount ≥ 1 and totalCount > activeCount) or not — no
// device left, total not above active, a count missing — an install with
// counts a removal's would have, and a removal at midnight; each register
// installed first, so installed-base and retention see the removal leave
// it installed.
func deviceEvents() []walletsync.Event {
	at := time.Date(2026, 3, 6, 9, 0, 0, 0, time.UTC).UnixMilli()
	counts := func(active, total int64, hasActive, hasTotal bool) *walletsync.Registration {
		return &walletsync.Registration{ActiveCount: active, TotalCount: total, HasActiveCount: hasActive, HasTotalCount: hasTotal}
	}
	var out []walletsync.Event
	for i, c := range []struct {
		platform walletsync.Platform
		after    int64 // ms after at
		reg      *walletsync.Registration
		removal  bool
	}{
		{walletsync.PlatformApple, 3_600_000, counts(1, 2, true, true), true},
		{walletsync.PlatformApple, 3_600_000, counts(0, 1, true, true), false},
		{walletsync.PlatformApple, 3_600_000, counts(2, 2, true, true), false},
		{walletsync.PlatformGoogle, 3_600_000, counts(1, 0, true, false), false},
		{walletsync.PlatformGoogle, 3_600_000, counts(0, 3, false, true), false},
		{walletsync.PlatformGoogle, 15*3_600_000 - 1, counts(3, 5, true, true), true}, // 23:59:59.999
		{walletsync.PlatformGoogle, 15 * 3_600_000, counts(2, 5, true, true), true},   // 00:00 the next day
	} {
		id := fmt.Sprintf("dev%d", i)
		u := walletsync.Event{ID: id + "-u", Type: walletsync.TypeUninstalled, Platform: c.platform, CustomerID: id, OccurredAt: at + c.after, Registration: c.reg}
		if u.DeviceRemoval() != c.removal {
			panic(id + ": the case says the wrong thing of the rule")
		}
		out = append(out,
			walletsync.Event{ID: id + "-i", Type: walletsync.TypeInstalled, Platform: c.platform, CustomerID: id, OccurredAt: at,
				Registration: counts(1, 2, true, true)}, // an install is never a removal
			u)
	}
	// A removal, then the real uninstall of the last device.
	return append(out, walletsync.Event{ID: "dev0-last", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: "dev0",
		OccurredAt: at + 3*86_400_000, Registration: counts(0, 2, true, true)})
}

// funnelEvents: the funnel's edges (SPEC §7), around Thursday 2026-03-05
// 15:00 (the issue instant of most): an install exactly 0, 1, 7 or 30 days
// after the issue or a millisecond later, one before it only, an
// uninstall and an installed observation (which are not installs), two
// issued events for a pass (the install counts from the earlier), two at
// one millisecond (the smaller eventId's passType), an issued event with
// no passType, with and without a platform, a pass installed on both
// platforms, installs of another pass or customer, the pass without an id,
// a pass first issued before 03-04 and again after, issues either side of
// a week's start, and one a millisecond before 03-10 installed 30 days
// later.
func funnelEvents() []walletsync.Event {
	const day = 86_400_000
	at := time.Date(2026, 3, 5, 15, 0, 0, 0, time.UTC).UnixMilli()
	var out []walletsync.Event
	issued := func(id, customer, pass, passType string, platform walletsync.Platform, ms int64) {
		out = append(out, walletsync.Event{ID: id, Type: walletsync.TypeIssued, Platform: platform, CustomerID: customer, PassID: pass,
			PassType: passType, OccurredAt: ms, Source: "webhook"})
	}
	event := func(id string, typ walletsync.EventType, customer, pass string, platform walletsync.Platform, ms int64) {
		e := walletsync.Event{ID: id, Type: typ, Platform: platform, CustomerID: customer, PassID: pass, PassType: "loyalty", OccurredAt: ms}
		if typ == walletsync.TypeObserved {
			e.Installed, e.InstalledAt = true, ms
		}
		out = append(out, e)
	}
	for i, after := range []int64{0, day, day + 1, 7 * day, 7*day + 1, 30 * day, 30*day + 1, -1} {
		c := fmt.Sprintf("fun-after%d", i)
		issued(c+"-is", c, "p", "coupon", 0, at)
		event(c+"-in", walletsync.TypeInstalled, c, "p", walletsync.PlatformApple, at+after)
	}
	issued("fun-un-is", "fun-un", "p", "coupon", 0, at)
	event("fun-un-un", walletsync.TypeUninstalled, "fun-un", "p", walletsync.PlatformApple, at+1000)
	event("fun-un-obs", walletsync.TypeObserved, "fun-un", "p", walletsync.PlatformGoogle, at+2000)

	issued("fun-twice-1", "fun-twice", "p", "coupon", walletsync.PlatformGoogle, at)
	issued("fun-twice-2", "fun-twice", "p", "loyalty", walletsync.PlatformGoogle, at+2*day)
	event("fun-twice-in", walletsync.TypeInstalled, "fun-twice", "p", walletsync.PlatformGoogle, at+2*day+1) // 2 days after the first

	issued("fun-tie-b", "fun-tie", "p", "loyalty", 0, at)
	issued("fun-tie-a", "fun-tie", "p", "giftCard", 0, at)
	issued("fun-tie-c", "fun-tie", "p", "coupon", 0, at)

	issued("fun-notype-is", "fun-notype", "p", "", 0, at)
	event("fun-notype-in", walletsync.TypeInstalled, "fun-notype", "p", walletsync.PlatformGoogle, at+3*day)
	issued("fun-apple-is", "fun-apple", "p", "coupon", walletsync.PlatformApple, at)
	event("fun-apple-in", walletsync.TypeInstalled, "fun-apple", "p", walletsync.PlatformGoogle, at+1)

	issued("fun-both-is", "fun-both", "p", "coupon", 0, at)
	event("fun-both-a", walletsync.TypeInstalled, "fun-both", "p", walletsync.PlatformApple, at+3_600_000)
	event("fun-both-g", walletsync.TypeInstalled, "fun-both", "p", walletsync.PlatformGoogle, at+7_200_000)

	issued("fun-other-is", "fun-other", "p", "coupon", 0, at)
	event("fun-other-pass", walletsync.TypeInstalled, "fun-other", "q", walletsync.PlatformApple, at+1)
	event("fun-other-cust", walletsync.TypeInstalled, "fun-nobody", "p", walletsync.PlatformApple, at+1)

	issued("fun-noid-is", "fun-noid", "", "", 0, at)
	event("fun-noid-in", walletsync.TypeInstalled, "fun-noid", "", walletsync.PlatformApple, at+day/2)

	issued("fun-early-1", "fun-early", "p", "coupon", 0, time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixMilli())
	issued("fun-early-2", "fun-early", "p", "coupon", 0, at)
	event("fun-early-in", walletsync.TypeInstalled, "fun-early", "p", walletsync.PlatformApple, at+1)

	monday := time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC).UnixMilli()
	issued("fun-sunday-is", "fun-sunday", "p", "coupon", 0, monday-1)
	event("fun-sunday-in", walletsync.TypeInstalled, "fun-sunday", "p", walletsync.PlatformApple, monday-1+day)
	issued("fun-monday-is", "fun-monday", "p", "coupon", 0, monday)
	issued("fun-last-is", "fun-last", "p", "coupon", 0, monday+day-1) // 2026-03-09T23:59:59.999
	event("fun-last-in", walletsync.TypeInstalled, "fun-last", "p", walletsync.PlatformApple, monday+day-1+30*day)
	return out
}

// conformanceData: events (with same-millisecond ties and retention
// boundaries, issued events and device removals) and every status version
// the fold emits, in order.
func conformanceData() ([]walletsync.Event, []walletsync.Status, *walletsync.Fold, []walletsync.BaseChange) {
	evs := append(events(1, 3000), boundaryEvents()...)
	evs = append(append(append(evs, lifecycleEvents()...), deviceEvents()...), funnelEvents()...)
	ids := map[string]bool{}
	for _, e := range evs {
		if ids[e.ID] {
			panic("two events " + e.ID + ": the stores would keep one")
		}
		ids[e.ID] = true
	}
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
	{"daily", "2026-02-27", "2026-04-03", ""}, // every burst of lifecycleEvents
	{"status", "2026-03-01", "2026-03-02", ""},
	{"installed-base", "2026-02-27", "2026-03-12", ""},
	{"installed-base", "2026-03-05", "2026-03-06", ""},
	{"retention", "2026-02-23", "2026-03-16", ""},
	{"retention", "2026-03-04", "2026-03-06", ""},
	{"funnel", "2026-02-23", "2026-04-06", ""}, // every issued event
	{"funnel", "2026-03-04", "2026-03-10", ""}, // from a Wednesday: passes first issued before it are out
	{"funnel", "2026-03-09", "2026-03-10", ""},
	{"funnel", "2026-01-05", "2026-01-19", ""}, // no issued event: no row
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
	case queries.Funnel:
		return referenceFunnel(evs, q)
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
	var issued, removals int
	for _, e := range evs {
		if e.Type == walletsync.TypeIssued {
			issued++
		}
		if e.DeviceRemoval() {
			removals++
		}
	}
	if issued < 200 || removals < 30 {
		t.Fatalf("%d issued events, %d device removals: the stream is too thin", issued, removals)
	}

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
	// The registers' rows as the engine's unknownRegisters reads them:
	// installs and uninstalls but device removals (issued events carry no
	// change, and must not send their passes the slow way).
	var fast, slow, fastIssued uint64
	if err := conn.QueryRow(ctx, `SELECT uniqExactIf(register, known), uniqExactIf(register, NOT known), uniqExactIf(register, known AND issued) FROM (
		SELECT register, minIf(base_known, type IN ('installed', 'uninstalled') AND device_removal = 0) = 1 AS known,
			countIf(type IN ('installed', 'uninstalled') AND device_removal = 0) > 0 AS held, countIf(type = 'issued') > 0 AS issued
		FROM wallet_events GROUP BY register HAVING held)`).Scan(&fast, &slow, &fastIssued); err != nil || fast < 100 || slow < 100 || fastIssued < 20 {
		t.Fatalf("registers all known %d (with an issued event %d), with an unknown change %d (%v): want both ways exercised, issued passes the fast way", fast, fastIssued, slow, err)
	}
	t.Logf("registers all known %d (with an issued event %d), with an unknown change %d", fast, fastIssued, slow)
	again := clickhouse.EventMonths(evs[:1000])
	if err := clickhouse.MarkDirty(ctx, conn, again); err != nil {
		t.Fatal(err)
	}
	if err := clickhouse.InsertEvents(ctx, conn, evs[:1000], base[:1000]); err != nil {
		t.Fatal(err)
	}
	// And, in those months only (the others are read without FINAL),
	// the issued events, device removals and funnel edges a second time.
	var twice []walletsync.Event
	var twiceBase []walletsync.BaseChange
	for i, e := range evs {
		if (e.Type == walletsync.TypeIssued || e.DeviceRemoval() || strings.HasPrefix(e.CustomerID, "fun-")) &&
			slices.Contains(again, clickhouse.Month(e.OccurredAt)) {
			twice, twiceBase = append(twice, e), append(twiceBase, base[i])
		}
	}
	if len(twice) < 100 {
		t.Fatalf("only %d issue-18 events inserted twice", len(twice))
	}
	if err := clickhouse.InsertEvents(ctx, conn, twice, twiceBase); err != nil {
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

// The edges' answers, worked out by hand from SPEC §7 (see funnelEvents
// and deviceEvents), from the oracles and from the embedded engine over an
// archive of those events alone: the suite above holds both engines to
// the oracles, this holds the oracles to the spec.
func TestEdgesAnswerAsWorkedOutByHand(t *testing.T) {
	funnel := func(week, passType string, n ...int64) queries.Row {
		return queries.Row{"cohortWeek": week, "passType": passType, "issued": n[0], "within1d": n[1], "within7d": n[2], "within30d": n[3]}
	}
	daily := func(day, platform string, n ...int64) queries.Row {
		return queries.Row{"day": day, "platform": platform, "installs": n[0], "uninstalls": n[1], "net": n[0] - n[1], "deviceRemovals": n[2]}
	}
	base := func(day string, apple, google int64) []queries.Row {
		return []queries.Row{{"day": day, "platform": "apple", "installed": apple}, {"day": day, "platform": "google", "installed": google}}
	}
	for _, set := range []struct {
		what  string
		evs   []walletsync.Event
		cases []struct {
			name, from, to string
			want           []queries.Row
		}
	}{
		{"funnelEvents", funnelEvents(), []struct {
			name, from, to string
			want           []queries.Row
		}{
			// Week 03-02, coupon: the eight fun-after passes (within 1
			// day: after 0 and exactly 1 day; 7: also 1 day + 1 ms and
			// exactly 7; 30: also 7 days + 1 ms and exactly 30), fun-un,
			// fun-twice (2 days after its first issue), fun-apple,
			// fun-both, fun-other, fun-early (3 days 5 h after its 03-02
			// issue), fun-sunday (exactly 1 day). "": fun-notype (3
			// days), fun-noid (12 h). giftCard: fun-tie's smallest
			// eventId. Week 03-09: fun-monday (never), fun-last (exactly
			// 30 days, past the range's end).
			{"funnel", "2026-03-02", "2026-03-16", []queries.Row{funnel("2026-03-02", "", 2, 1, 2, 2), funnel("2026-03-02", "coupon", 15, 5, 9, 11),
				funnel("2026-03-02", "giftCard", 1, 0, 0, 0), funnel("2026-03-09", "coupon", 2, 0, 0, 1)}},
			// From 03-04: fun-early was first issued before, so it is out.
			{"funnel", "2026-03-04", "2026-03-10", []queries.Row{funnel("2026-03-02", "", 2, 1, 2, 2), funnel("2026-03-02", "coupon", 14, 5, 8, 10),
				funnel("2026-03-02", "giftCard", 1, 0, 0, 0), funnel("2026-03-09", "coupon", 2, 0, 0, 1)}},
			{"funnel", "2026-03-09", "2026-03-10", []queries.Row{funnel("2026-03-09", "coupon", 2, 0, 0, 1)}},
			{"funnel", "2026-03-10", "2026-03-31", []queries.Row{}},
		}},
		{"deviceEvents", deviceEvents(), []struct {
			name, from, to string
			want           []queries.Row
		}{
			// Installs of 03-06 09:00: apple dev0-2, google dev3-6. Device
			// removals: dev0 (apple), dev5 at 23:59:59.999, dev6 at
			// midnight; dev0's last device goes on 03-09.
			{"daily", "2026-03-06", "2026-03-10", []queries.Row{
				daily("2026-03-06", "apple", 3, 2, 1), daily("2026-03-06", "google", 4, 2, 1),
				daily("2026-03-07", "apple", 0, 0, 0), daily("2026-03-07", "google", 0, 0, 1),
				daily("2026-03-08", "apple", 0, 0, 0), daily("2026-03-08", "google", 0, 0, 0),
				daily("2026-03-09", "apple", 0, 1, 0), daily("2026-03-09", "google", 0, 0, 0)}},
			// The removals leave dev0 (until 03-09), dev5 and dev6 installed.
			{"installed-base", "2026-03-06", "2026-03-10", slices.Concat(base("2026-03-06", 1, 2), base("2026-03-07", 1, 2),
				base("2026-03-08", 1, 2), base("2026-03-09", 0, 2))},
			{"retention", "2026-03-02", "2026-03-09", []queries.Row{
				{"cohortWeek": "2026-03-02", "platform": "apple", "installed": int64(3), "after1d": int64(1), "after7d": int64(0), "after30d": int64(0)},
				{"cohortWeek": "2026-03-02", "platform": "google", "installed": int64(4), "after1d": int64(2), "after7d": int64(2), "after30d": int64(2)}}},
		}},
	} {
		dir := t.TempDir()
		if err := parquet.WriteEvents(dir, 0, 0, set.evs); err != nil {
			t.Fatal(err)
		}
		engine := embedq.New(dir)
		for _, c := range set.cases {
			q, err := queries.ParseQuery(c.name, c.from, c.to, "")
			if err != nil {
				t.Fatal(err)
			}
			got, err := engine.Insight(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			g, o, w := asJSON(t, got.Rows), asJSON(t, reference(t, q, set.evs, nil)), asJSON(t, c.want)
			if g != w || o != w {
				t.Errorf("%s %s %s..%s:\n  embedded %s\n    oracle %s\nworked out %s", set.what, c.name, c.from, c.to, g, o, w)
			}
		}
	}
}
