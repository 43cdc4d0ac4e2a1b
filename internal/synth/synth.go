// Package synth generates realistic canonical event streams for benchmarks,
// tests and demos: many customers, several passes, both platforms, installs,
// uninstalls, quick reinstalls, backfill observations, duplicates and
// out-of-order delivery.
package synth

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/wire"
)

// Config shapes a stream. Zero fields take the defaults of Default.
type Config struct {
	Customers   int     // distinct customers
	Events      int     // lines to produce, duplicates included
	DupRate     float64 // share of lines that repeat an earlier event
	ReorderRate float64 // share of events delivered late
	Seed        uint64
	Start       time.Time // first event time
	// Lifecycle adds the events of issue 18: a pass's first event is
	// preceded by its issued event, and one uninstall in five is a device
	// removal (another device still holds the pass) followed by the real
	// uninstall. Off, the stream is the benchmark stream of issue 2, event
	// for event.
	Lifecycle bool
}

// Default is the benchmark stream of issue 2: 100k customers, 10%
// duplicates, 20% out of order.
func Default(events int) Config {
	return Config{Customers: 100_000, Events: events, DupRate: 0.10, ReorderRate: 0.20, Seed: 1,
		Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

var (
	passTypes = []string{"loyalty", "coupon", "eventTicket", "giftCard"}
	mediums   = []string{"email", "sms", "qr", "web", "app"}
	sources   = []string{"webhook", "connector"}
)

// Events returns the stream as events; Lines marshals them.
func Events(cfg Config) []walletsync.Event {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	start := cfg.Start.UnixMilli()
	if cfg.Start.IsZero() {
		start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	}
	customers := max(cfg.Customers, 1)
	unique := max(int(float64(cfg.Events)*(1-cfg.DupRate)), 1)
	out := make([]walletsync.Event, 0, cfg.Events)

	// Each customer's registers toggle in time order; the stream then
	// interleaves customers, so it is sorted by time before reordering.
	type reg struct {
		installed bool
		at        int64
	}
	regs := make(map[[3]int]*reg)
	issued := make(map[[2]int]bool)
	life := rand.New(rand.NewPCG(cfg.Seed^0x5bd1e995, cfg.Seed)) // apart, so the stream without Lifecycle stays as it was
	t := start
	for i := 0; len(out) < unique; i++ {
		c := rng.IntN(customers)
		pass := 0
		if rng.IntN(4) == 0 {
			pass = 1 + rng.IntN(2)
		}
		plat := walletsync.PlatformApple
		if rng.IntN(5) < 2 {
			plat = walletsync.PlatformGoogle
		}
		k := [3]int{c, pass, int(plat)}
		r := regs[k]
		if r == nil {
			r = &reg{}
			regs[k] = r
		}
		// Time advances on average a few hundred ms an event; ties in the
		// same millisecond happen.
		t += int64(rng.IntN(600))
		e := walletsync.Event{
			ID:         "evt-" + strconv.FormatInt(int64(i), 10) + "-" + strconv.FormatUint(rng.Uint64()&0xffffffffff, 36),
			Platform:   plat,
			CustomerID: "cust-" + strconv.Itoa(1_000_000+c),
			PassID:     "pass-" + strconv.Itoa(c) + "-" + strconv.Itoa(pass),
			PassType:   passTypes[pass%len(passTypes)],
			OccurredAt: t,
			Source:     sources[rng.IntN(len(sources))],
		}
		if cfg.Lifecycle && !issued[[2]int{c, pass}] {
			issued[[2]int{c, pass}] = true
			is := e
			is.ID, is.Type, is.Platform, is.Source, is.OccurredAt = e.ID+"-issued", walletsync.TypeIssued, 0, "webhook", max(start, t-int64(life.IntN(3_600_000)))
			out = append(out, is)
		}
		switch {
		case rng.IntN(20) == 0:
			// A backfill observation, mostly agreeing, sometimes drift.
			e.Type = walletsync.TypeObserved
			e.Source = "backfill"
			e.Installed = r.installed
			if rng.IntN(5) == 0 {
				e.Installed = !e.Installed
			}
			if e.Installed && r.at != 0 {
				e.InstalledAt = r.at
			}
		case r.installed:
			e.Type = walletsync.TypeUninstalled
			r.installed = false
			if cfg.Lifecycle && life.IntN(5) == 0 {
				removal := e
				removal.ID += "-device"
				removal.OccurredAt -= 1 + int64(life.IntN(1000))
				removal.Registration = &walletsync.Registration{ActiveCount: 1, TotalCount: 2, HasActiveCount: true, HasTotalCount: true}
				out = append(out, removal)
			}
		default:
			e.Type = walletsync.TypeInstalled
			e.Registration = &walletsync.Registration{Medium: mediums[rng.IntN(len(mediums))], Tags: []string{"spring"}}
			r.installed, r.at = true, t
		}
		out = append(out, e)
	}
	// Late delivery: a share of events is delivered up to 1,000 places
	// after its turn; the rest keep their order.
	type slot struct {
		at int
		e  walletsync.Event
	}
	delayed := make([]slot, len(out))
	for i := range out {
		at := i
		if rng.Float64() < cfg.ReorderRate {
			at += 1 + rng.IntN(1000)
		}
		delayed[i] = slot{at, out[i]}
	}
	slices.SortStableFunc(delayed, func(a, b slot) int { return cmp.Compare(a.at, b.at) })
	for i := range delayed {
		out[i] = delayed[i].e
	}
	// Duplicates: redeliveries of a recent event.
	for len(out) < cfg.Events {
		i := len(out) - 1 - rng.IntN(min(len(out), 5000))
		out = append(out, out[i])
		last := len(out) - 1
		k := last - rng.IntN(min(last, 50)+1)
		out[k], out[last] = out[last], out[k]
	}
	return out
}

// Lines returns the stream as NDJSON lines (without newlines).
func Lines(cfg Config) [][]byte {
	evs := Events(cfg)
	lines := make([][]byte, len(evs))
	for i := range evs {
		lines[i] = wire.AppendEvent(nil, &evs[i])
	}
	return lines
}

// Random draws distinct events over few customers, passes and
// instants, so that same-register collisions and same-millisecond ties are
// common; some are issued events, some carry device counts (and so are
// device removals).
func Random(rng *rand.Rand, n int) []walletsync.Event {
	base := int64(1772359200000) // 2026-03-01T10:00:00Z
	passes := []string{"", "loyalty", "coupon"}
	evs := make([]walletsync.Event, n)
	for i := range evs {
		e := walletsync.Event{
			ID:         fmt.Sprintf("e%03d", rng.IntN(1000)*1000+i), // unique, but in no time order
			CustomerID: fmt.Sprintf("c%d", rng.IntN(4)),
			PassID:     passes[rng.IntN(len(passes))],
			Platform:   walletsync.Platform(1 + rng.IntN(2)),
			OccurredAt: base + int64(rng.IntN(12))*1000,
			Type:       walletsync.EventType(1 + rng.IntN(3)),
		}
		if rng.IntN(8) == 0 {
			e.Type = walletsync.TypeIssued
			if rng.IntN(2) == 0 {
				e.Platform = 0 // optional on an issued event
			}
		}
		switch e.Type {
		case walletsync.TypeObserved:
			e.Installed = rng.IntN(2) == 0
			if e.Installed && rng.IntN(2) == 0 {
				e.InstalledAt = e.OccurredAt - int64(rng.IntN(5))*1000
			}
		case walletsync.TypeInstalled, walletsync.TypeUninstalled:
			// Device counts (after the event), some partial: a third of
			// the uninstalls with both counts are device removals.
			if rng.IntN(2) == 0 {
				active := int64(rng.IntN(3))
				e.Registration = &walletsync.Registration{ActiveCount: active, TotalCount: active + int64(rng.IntN(2)),
					HasActiveCount: rng.IntN(5) > 0, HasTotalCount: rng.IntN(5) > 0}
			}
		}
		evs[i] = e
	}
	return evs
}
