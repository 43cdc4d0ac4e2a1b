package queries

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/walletsync/walletsync/sinks/parquet"
)

// Embedded answers insight queries from the Parquet archive in process,
// for deployments without ClickHouse. The archive holds each clean event
// once (the processors dedupe, the archiver writes each offset once), so no
// dedupe is needed here; only the columns a query needs are read, and only
// the day directories it can touch.
type Embedded struct {
	Dir  string
	seed maphash.Seed
}

// NewEmbedded reads the archive under dir.
func NewEmbedded(dir string) *Embedded { return &Embedded{Dir: dir, seed: maphash.MakeSeed()} }

// Insight runs q.
func (e *Embedded) Insight(ctx context.Context, q Query) (Answer, error) {
	var rows []Row
	var err error
	switch q.Name {
	case Daily:
		rows, err = e.daily(ctx, q)
	case StatusMix:
		rows, err = e.status(ctx)
	case InstalledBase:
		rows, err = e.installedBase(ctx, q)
	case Retention:
		rows, err = e.retention(ctx, q)
	default:
		return Answer{}, fmt.Errorf("%s: %w", q.Name, ErrNotImplemented)
	}
	if err != nil {
		return Answer{}, fmt.Errorf("%s over the archive: %w", q.Name, err)
	}
	return q.answer(rows), nil
}

func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

func (e *Embedded) daily(ctx context.Context, q Query) ([]Row, error) {
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	type key struct {
		d uint32
		p string
		b string
	}
	counts := map[key][2]int64{}
	cols := []string{"type", "platform", "occurred_at"}
	if q.By != "" {
		cols = append(cols, map[string]string{"passType": "pass_type", "medium": "medium", "source": "source"}[q.By])
	}
	err := parquet.ScanColumns(e.Dir, parquet.EventsDataset, day(q.From), day(q.To), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			typ, at := c[0][i].ByteArray(), c[2][i].Int64()
			if at < from || at >= to || typ[0] == 'o' {
				continue
			}
			k := key{d: uint32(at / 86_400_000), p: platformName(c[1][i].ByteArray())}
			if q.By != "" {
				k.b = string(c[3][i].ByteArray())
			}
			n := counts[k]
			if typ[0] == 'i' {
				n[0]++
			} else {
				n[1]++
			}
			counts[k] = n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[[3]string][2]int64, len(counts))
	for k, c := range counts {
		out[[3]string{time.Unix(int64(k.d)*86400, 0).UTC().Format(time.DateOnly), k.p, k.b}] = c
	}
	return dailyRows(q, out), nil
}

func platformName(b []byte) string {
	if len(b) > 0 && b[0] == 'a' {
		return "apple"
	}
	return "google"
}

func (e *Embedded) status(ctx context.Context) ([]Row, error) {
	type cur struct {
		v int64
		w string
	}
	// Customers by a 64-bit hash of their id: a map of uint64 keys is
	// several times faster than one of strings at a million customers.
	latest := map[uint64]cur{}
	wallets := map[string]string{}
	err := parquet.ScanColumns(e.Dir, parquet.StatusDataset, "", "", []string{"customer_id", "version", "wallet_status"}, func(c [][]pq.Value) error {
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
	var out []Row
	for _, w := range []string{"none", "apple", "google", "both"} {
		out = append(out, Row{"walletStatus": w, "customers": n[w]})
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

// registerEvents gathers the installed/uninstalled events before untilMs,
// sorted by register and rank: one flat array sorted once, far cheaper
// than a map of millions of registers each with its own slice.
func (e *Embedded) registerEvents(ctx context.Context, untilMs int64) ([]regEvent, error) {
	var all []regEvent
	var h maphash.Hash
	h.SetSeed(e.seed)
	cols := []string{"type", "platform", "customer_id", "pass_id", "occurred_at"}
	err := parquet.ScanColumns(e.Dir, parquet.EventsDataset, "", day(time.UnixMilli(untilMs).Add(24*time.Hour)), cols, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			typ, at := c[0][i].ByteArray(), c[4][i].Int64()
			if at >= untilMs || typ[0] == 'o' {
				continue
			}
			h.Reset()
			h.Write(c[2][i].ByteArray())
			h.WriteByte(0)
			h.Write(c[3][i].ByteArray())
			r := h.Sum64() &^ 1
			if p := c[1][i].ByteArray(); len(p) > 0 && p[0] == 'a' {
				r |= 1
			}
			k := at * 2
			if typ[0] == 'u' {
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

func (e *Embedded) installedBase(ctx context.Context, q Query) ([]Row, error) {
	all, err := e.registerEvents(ctx, q.To.UnixMilli())
	if err != nil {
		return nil, err
	}
	delta := map[platformDay]int64{}
	eachRegister(all, func(platform string, evs []regEvent) {
		prev := int64(0)
		for _, ev := range evs {
			inst := 1 - ev.k%2
			if inst != prev {
				delta[platformDay{platform, uint32(ev.k / 172_800_000)}] += inst - prev
				prev = inst
			}
		}
	})
	return installedBaseRows(q, delta), nil
}

func (e *Embedded) retention(ctx context.Context, q Query) ([]Row, error) {
	const dayMs = 86_400_000
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	all, err := e.registerEvents(ctx, to+30*dayMs+1)
	if err != nil {
		return nil, err
	}
	got := map[weekPlatform][4]int64{}
	eachRegister(all, func(platform string, evs []regEvent) {
		for _, ev := range evs {
			m := ev.k / 2
			// Every install event of the range counts, even two at one
			// millisecond: the archive holds each event once.
			if ev.k%2 != 0 || m < from || m >= to {
				continue
			}
			d := uint32(m / dayMs)
			k := weekPlatform{d - (d+3)%7, platform}
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
	return retentionRows(q, got), nil
}
