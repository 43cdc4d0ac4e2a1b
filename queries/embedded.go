package queries

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

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

// The projections the queries read.
type dailyCols struct {
	Type       string `parquet:"type"`
	Platform   string `parquet:"platform"`
	OccurredAt int64  `parquet:"occurred_at"`
	PassType   string `parquet:"pass_type"`
	Medium     string `parquet:"medium"`
	Source     string `parquet:"source"`
}

type registerCols struct {
	EventID    string `parquet:"event_id"`
	Type       string `parquet:"type"`
	Platform   string `parquet:"platform"`
	CustomerID string `parquet:"customer_id"`
	PassID     string `parquet:"pass_id"`
	OccurredAt int64  `parquet:"occurred_at"`
}

type statusCols struct {
	CustomerID   string `parquet:"customer_id"`
	Version      int64  `parquet:"version"`
	WalletStatus string `parquet:"wallet_status"`
}

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
	err := parquet.ReadDataset(e.Dir, parquet.EventsDataset, day(q.From), day(q.To), func(rows []dailyCols) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			if r.OccurredAt < from || r.OccurredAt >= to || r.Type == "observed" {
				continue
			}
			k := key{d: uint32(r.OccurredAt / 86_400_000), p: r.Platform}
			switch q.By {
			case "passType":
				k.b = r.PassType
			case "medium":
				k.b = r.Medium
			case "source":
				k.b = r.Source
			}
			c := counts[k]
			if r.Type == "installed" {
				c[0]++
			} else {
				c[1]++
			}
			counts[k] = c
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

func (e *Embedded) status(ctx context.Context) ([]Row, error) {
	type cur struct {
		v int64
		w string
	}
	latest := map[string]cur{}
	err := parquet.ReadDataset(e.Dir, parquet.StatusDataset, "", "", func(rows []statusCols) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			if c, ok := latest[r.CustomerID]; !ok || r.Version > c.v {
				latest[r.CustomerID] = cur{r.Version, r.WalletStatus}
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
	err := parquet.ReadDataset(e.Dir, parquet.EventsDataset, "", day(time.UnixMilli(untilMs).Add(24*time.Hour)), func(rows []registerCols) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			if r.OccurredAt >= untilMs || r.Type == "observed" {
				continue
			}
			h.Reset()
			h.WriteString(r.CustomerID)
			h.WriteByte(0)
			h.WriteString(r.PassID)
			h.WriteByte(0)
			h.WriteString(r.Platform)
			k := h.Sum64()
			reg := regs[k]
			if reg == nil {
				reg = &register{platform: r.Platform}
				regs[k] = reg
			}
			un := int64(0)
			if r.Type == "uninstalled" {
				un = 1
			}
			reg.keys = append(reg.keys, r.OccurredAt*2+un)
			if un == 0 && r.OccurredAt >= fromMs && r.OccurredAt < toInstallMs {
				reg.installs = append(reg.installs, r.OccurredAt)
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
