// Package embedded answers the insight queries (package queries) from the
// Parquet archive in process, reading it through the archive's own readers
// and names (sinks/parquet).
package embedded

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/queries"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// Engine answers insight queries from the Parquet archive in process,
// for deployments without ClickHouse. The archive holds each clean event
// once (the processors dedupe, the archiver writes each offset once), so no
// dedupe is needed here; only the columns a query needs are read, and only
// the day directories it can touch.
type Engine struct {
	Dir  string
	seed maphash.Seed
}

// New reads the archive under dir.
func New(dir string) *Engine { return &Engine{Dir: dir, seed: maphash.MakeSeed()} }

// Insight runs q.
func (e *Engine) Insight(ctx context.Context, q queries.Query) (queries.Answer, error) {
	var rows []queries.Row
	var err error
	switch q.Name {
	case queries.Daily:
		rows, err = e.daily(ctx, q)
	case queries.StatusMix:
		rows, err = e.status(ctx)
	case queries.InstalledBase:
		rows, err = e.installedBase(ctx, q)
	case queries.Retention:
		rows, err = e.retention(ctx, q)
	case queries.Funnel:
		rows, err = e.funnel(ctx, q)
	default:
		return queries.Answer{}, fmt.Errorf("%s: %w", q.Name, queries.ErrNotImplemented)
	}
	if err != nil {
		return queries.Answer{}, fmt.Errorf("%s over the archive: %w", q.Name, err)
	}
	return q.Answer(rows), nil
}

// day names t's day as the archive's day directories do.
func day(t time.Time) string { return parquet.Day(t.UnixMilli()) }

// daily counts installs, uninstalls and device removals (read from the
// archived device counts, parquet.DeviceRemovalOf) by UTC day; issued
// events and observations are not counted, nor are their by values seen.
func (e *Engine) daily(ctx context.Context, q queries.Query) ([]queries.Row, error) {
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	type key struct {
		d uint32
		p string
		b string
	}
	counts := map[key]queries.DailyCounts{}
	cols := []string{parquet.TypeColumn, parquet.PlatformColumn, parquet.OccurredAtColumn, parquet.ActiveCountColumn, parquet.TotalCountColumn}
	if q.By != "" {
		cols = append(cols, map[string]string{"passType": parquet.PassTypeColumn, "medium": parquet.MediumColumn, "source": parquet.SourceColumn}[q.By])
	}
	err := parquet.ScanColumns(e.Dir, parquet.EventsDataset, day(q.From), day(q.To), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			typ, at := parquet.EventTypeOf(c[0][i]), c[2][i].Int64()
			if at < from || at >= to || typ != walletsync.TypeInstalled && typ != walletsync.TypeUninstalled {
				continue
			}
			k := key{d: uint32(at / 86_400_000), p: parquet.PlatformOf(c[1][i]).String()}
			if q.By != "" {
				k.b = string(c[5][i].ByteArray())
			}
			n := counts[k]
			switch {
			case typ == walletsync.TypeInstalled:
				n[0]++
			case parquet.DeviceRemovalOf(typ, c[3][i], c[4][i]):
				n[2]++
			default:
				n[1]++
			}
			counts[k] = n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[[3]string]queries.DailyCounts, len(counts))
	for k, c := range counts {
		out[[3]string{time.Unix(int64(k.d)*86400, 0).UTC().Format(time.DateOnly), k.p, k.b}] = c
	}
	return queries.DailyRows(q, out), nil
}

func (e *Engine) status(ctx context.Context) ([]queries.Row, error) {
	type cur struct {
		v int64
		w string
	}
	// Customers by a 64-bit hash of their id: a map of uint64 keys is
	// several times faster than one of strings at a million customers.
	latest := map[uint64]cur{}
	wallets := map[string]string{}
	err := parquet.ScanColumns(e.Dir, parquet.StatusDataset, "", "", []string{parquet.CustomerIDColumn, parquet.VersionColumn, parquet.WalletStatusColumn}, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			id, v := maphash.Bytes(e.seed, c[0][i].ByteArray()), c[1][i].Int64()
			if old, ok := latest[id]; !ok || v > old.v {
				w, ok := wallets[string(c[2][i].ByteArray())]
				if !ok {
					w = string(c[2][i].ByteArray())
					wallets[w] = w
				}
				latest[id] = cur{v, w}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := map[string]int64{}
	for _, c := range latest {
		n[c.w]++
	}
	var out []queries.Row
	for _, w := range []string{"none", "apple", "google", "both"} {
		out = append(out, queries.Row{"walletStatus": w, "customers": n[w]})
	}
	return out, nil
}

// regEvent is one installed/uninstalled event of a register: r is a hash
// of (customer, pass, platform) whose low bit is the platform (1 apple),
// k packs the event as installedBase's ClickHouse query does,
// occurred_ms*2 + uninstalled, which sorts as the fold ranks events.
type regEvent struct {
	r uint64
	k int64
}

// registerEvents gathers the events before untilMs that can be their
// register's E (SPEC §3: installs and uninstalls; not device removals,
// observations, nor issued events, which belong to no register), sorted by
// register and rank: one flat array sorted once, far cheaper than a map of
// millions of registers each with its own slice.
func (e *Engine) registerEvents(ctx context.Context, untilMs int64) ([]regEvent, error) {
	var all []regEvent
	var h maphash.Hash
	h.SetSeed(e.seed)
	cols := []string{parquet.TypeColumn, parquet.PlatformColumn, parquet.CustomerIDColumn, parquet.PassIDColumn, parquet.OccurredAtColumn,
		parquet.ActiveCountColumn, parquet.TotalCountColumn}
	err := parquet.ScanColumns(e.Dir, parquet.EventsDataset, "", day(time.UnixMilli(untilMs).Add(24*time.Hour)), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			typ, at := parquet.EventTypeOf(c[0][i]), c[4][i].Int64()
			if at >= untilMs || typ != walletsync.TypeInstalled && typ != walletsync.TypeUninstalled || parquet.DeviceRemovalOf(typ, c[5][i], c[6][i]) {
				continue
			}
			h.Reset()
			h.Write(c[2][i].ByteArray())
			h.WriteByte(0)
			h.Write(c[3][i].ByteArray())
			r := h.Sum64() &^ 1
			if parquet.PlatformOf(c[1][i]) == walletsync.PlatformApple {
				r |= 1
			}
			k := at * 2
			if typ == walletsync.TypeUninstalled {
				k++
			}
			all = append(all, regEvent{r, k})
		}
		return nil
	})
	slices.SortFunc(all, func(a, b regEvent) int {
		if a.r != b.r {
			return cmp.Compare(a.r, b.r)
		}
		return cmp.Compare(a.k, b.k)
	})
	return all, err
}

func platformOf(r uint64) string {
	if r&1 == 1 {
		return "apple"
	}
	return "google"
}

// eachRegister calls fn with every register's sorted packed events.
func eachRegister(all []regEvent, fn func(platform string, keys []regEvent)) {
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && all[j].r == all[i].r {
			j++
		}
		fn(platformOf(all[i].r), all[i:j])
		i = j
	}
}

func (e *Engine) installedBase(ctx context.Context, q queries.Query) ([]queries.Row, error) {
	all, err := e.registerEvents(ctx, q.To.UnixMilli())
	if err != nil {
		return nil, err
	}
	delta := map[queries.PlatformDay]int64{}
	eachRegister(all, func(platform string, evs []regEvent) {
		prev := int64(0)
		for _, ev := range evs {
			inst := 1 - ev.k%2
			if inst != prev {
				delta[queries.PlatformDay{Platform: platform, Day: uint32(ev.k / 172_800_000)}] += inst - prev
				prev = inst
			}
		}
	})
	return queries.InstalledBaseRows(q, delta), nil
}

func (e *Engine) retention(ctx context.Context, q queries.Query) ([]queries.Row, error) {
	const dayMs = 86_400_000
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	all, err := e.registerEvents(ctx, to+30*dayMs+1)
	if err != nil {
		return nil, err
	}
	got := map[queries.WeekPlatform][4]int64{}
	eachRegister(all, func(platform string, evs []regEvent) {
		for _, ev := range evs {
			m := ev.k / 2
			// Every install event of the range counts, even two at one
			// millisecond: the archive holds each event once.
			if ev.k%2 != 0 || m < from || m >= to {
				continue
			}
			d := uint32(m / dayMs)
			k := queries.WeekPlatform{Week: d - (d+3)%7, Platform: platform}
			c := got[k]
			c[0]++
			for j, n := range []int64{1, 7, 30} {
				// The last event at or before install + n days.
				limit := 2*(m+n*dayMs) + 1
				i, _ := slices.BinarySearchFunc(evs, limit+1, func(a regEvent, t int64) int { return cmp.Compare(a.k, t) })
				if i > 0 && evs[i-1].k%2 == 0 {
					c[j+1]++
				}
			}
			got[k] = c
		}
	})
	return queries.RetentionRows(q, got), nil
}

// funnel follows every pass (customer and pass, hashed as registerEvents
// does but without the platform) whose earliest issued event — the least
// (occurredAt, eventId), whose passType it takes — falls in [from, to):
// was it installed, on any platform, from that instant to 1, 7 and 30 days
// after? Weeks as in retention.
//
// Two scans keep the memory to the range's passes. The first reads the
// days from from to 30 days past to: the issued events of the range (the
// earliest per pass) and the installs that can count. The second reads
// the days before from, only to drop the passes issued earlier as well,
// and so needs neither eventId nor passType. Day directories are UTC days
// and from is a midnight, so every event before from is in the second.
func (e *Engine) funnel(ctx context.Context, q queries.Query) ([]queries.Row, error) {
	const dayMs = 86_400_000
	days := queries.FunnelDays()
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	last := to + days[len(days)-1]*dayMs // the latest install that can count
	type issue struct {
		at           int64
		id, passType string
	}
	type install struct {
		pass uint64
		at   int64
	}
	issues := map[uint64]issue{}
	var installs []install
	var h maphash.Hash
	h.SetSeed(e.seed)
	pass := func(customer, passID []byte) uint64 {
		h.Reset()
		h.Write(customer)
		h.WriteByte(0)
		h.Write(passID)
		return h.Sum64()
	}
	cols := []string{parquet.TypeColumn, parquet.CustomerIDColumn, parquet.PassIDColumn, parquet.OccurredAtColumn, parquet.PassTypeColumn, parquet.EventIDColumn}
	err := parquet.ScanColumns(e.Dir, parquet.EventsDataset, day(q.From), day(time.UnixMilli(last).Add(24*time.Hour)), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			typ, at := parquet.EventTypeOf(c[0][i]), c[3][i].Int64()
			switch {
			case typ == walletsync.TypeIssued && at >= from && at < to:
				p, id := pass(c[1][i].ByteArray(), c[2][i].ByteArray()), c[5][i].ByteArray()
				if old, ok := issues[p]; !ok || at < old.at || at == old.at && string(id) < old.id {
					issues[p] = issue{at, string(id), string(c[4][i].ByteArray())}
				}
			case typ == walletsync.TypeInstalled && at >= from && at <= last:
				installs = append(installs, install{pass(c[1][i].ByteArray(), c[2][i].ByteArray()), at})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(issues) == 0 {
		return queries.FunnelRows(nil), nil
	}
	cols = []string{parquet.TypeColumn, parquet.CustomerIDColumn, parquet.PassIDColumn}
	err = parquet.ScanColumns(e.Dir, parquet.EventsDataset, "", day(q.From), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			if parquet.EventTypeOf(c[0][i]) == walletsync.TypeIssued {
				delete(issues, pass(c[1][i].ByteArray(), c[2][i].ByteArray()))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// within[p] bit j: p was installed within days[j] of its issue.
	within := map[uint64]uint8{}
	for _, in := range installs {
		is, ok := issues[in.pass]
		if !ok || in.at < is.at {
			continue
		}
		for j, n := range days {
			if in.at <= is.at+n*dayMs {
				within[in.pass] |= 1 << j
			}
		}
	}
	got := map[queries.WeekPassType][4]int64{}
	for p, is := range issues {
		d := uint32(is.at / dayMs)
		k := queries.WeekPassType{Week: d - (d+3)%7, PassType: is.passType}
		c := got[k]
		c[0]++
		for j := range days {
			if within[p]&(1<<j) != 0 {
				c[j+1]++
			}
		}
		got[k] = c
	}
	return queries.FunnelRows(got), nil
}
