package queries

import (
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
	latest := map[string]cur{}
	err := parquet.ScanColumns(e.Dir, parquet.StatusDataset, "", "", []string{"customer_id", "version", "wallet_status"}, func(c [][]pq.Value) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range c[0] {
			id, v := c[0][i].ByteArray(), c[1][i].Int64()
			if old, ok := latest[string(id)]; !ok || v > old.v {
				latest[string(id)] = cur{v, string(c[2][i].ByteArray())}
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

// register is one register's events, packed as installedBase's ClickHouse
// query packs them: occurred_ms*2 + uninstalled sorts as the fold ranks.
type register struct {
	platform string
	keys     []int64
	installs []int64 // retention: the install events of the range, by time
}

// registers gathers the installed/uninstalled events up to toMs (exclusive),
// by register; installs of [fromMs, toInstallMs) are kept apart when asked.
func (e *Embedded) registers(ctx context.Context, untilMs int64, fromMs, toInstallMs int64) (map[uint64]*register, error) {
	regs := map[uint64]*register{}
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
			platform := c[1][i].ByteArray()
			h.Reset()
			h.Write(c[2][i].ByteArray())
			h.WriteByte(0)
			h.Write(c[3][i].ByteArray())
			h.WriteByte(0)
			h.Write(platform)
			k := h.Sum64()
			reg := regs[k]
			if reg == nil {
				reg = &register{platform: platformName(platform)}
				regs[k] = reg
			}
			un := int64(0)
			if typ[0] == 'u' {
				un = 1
			}
			reg.keys = append(reg.keys, at*2+un)
			if un == 0 && at >= fromMs && at < toInstallMs {
				reg.installs = append(reg.installs, at)
			}
		}
		return nil
	})
	return regs, err
}

func (e *Embedded) installedBase(ctx context.Context, q Query) ([]Row, error) {
	regs, err := e.registers(ctx, q.To.UnixMilli(), 0, 0)
	if err != nil {
		return nil, err
	}
	delta := map[platformDay]int64{}
	for _, r := range regs {
		slices.Sort(r.keys)
		prev := int64(0)
		for _, k := range slices.Compact(r.keys) {
			inst := 1 - k%2
			if inst != prev {
				delta[platformDay{r.platform, uint32(k / 172_800_000)}] += inst - prev
				prev = inst
			}
		}
	}
	return installedBaseRows(q, delta), nil
}

func (e *Embedded) retention(ctx context.Context, q Query) ([]Row, error) {
	const dayMs = 86_400_000
	regs, err := e.registers(ctx, q.To.UnixMilli()+30*dayMs+1, q.From.UnixMilli(), q.To.UnixMilli())
	if err != nil {
		return nil, err
	}
	got := map[weekPlatform][4]int64{}
	for _, r := range regs {
		if len(r.installs) == 0 {
			continue
		}
		slices.Sort(r.keys)
		keys := slices.Compact(r.keys)
		for _, m := range r.installs {
			d := uint32(m / dayMs)
			k := weekPlatform{d - (d+3)%7, r.platform}
			c := got[k]
			c[0]++
			for j, n := range []int64{1, 7, 30} {
				// The last event at or before install + n days.
				i, _ := slices.BinarySearch(keys, 2*(m+n*dayMs)+2)
				if i > 0 && keys[i-1]%2 == 0 {
					c[j+1]++
				}
			}
			got[k] = c
		}
	}
	return retentionRows(q, got), nil
}
