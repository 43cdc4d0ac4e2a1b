package walletsync_test

import (
	"encoding/json"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/wire"
)

// benchLines is the realistic stream of issue 2: 1M lines of ~200-byte
// events over 100k customers, 10% duplicates, 20% out of order.
var benchLines = sync.OnceValue(func() [][]byte { return synth.Lines(synth.Default(1_000_000)) })

func reportRate(b *testing.B, perOp int, unit string) {
	b.ReportMetric(float64(perOp)*float64(b.N)/b.Elapsed().Seconds(), unit)
}

func avgLen(lines [][]byte) float64 {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	return float64(n) / float64(len(lines))
}

// stdEvent is the same contract decoded the plain way, with encoding/json
// and time.Parse: the baseline the purpose-made decoder is measured against.
type stdEvent struct {
	EventID      string  `json:"eventId"`
	Type         string  `json:"type"`
	Platform     string  `json:"platform"`
	CustomerID   string  `json:"customerId"`
	PassID       *string `json:"passId"`
	PassType     string  `json:"passType"`
	OccurredAt   string  `json:"occurredAt"`
	Installed    *bool   `json:"installed"`
	InstalledAt  string  `json:"installedAt"`
	Source       string  `json:"source"`
	Registration *struct {
		Medium      string   `json:"medium"`
		Origin      string   `json:"origin"`
		UserAgent   string   `json:"userAgent"`
		Tags        []string `json:"tags"`
		ActiveCount *int64   `json:"activeCount"`
		TotalCount  *int64   `json:"totalCount"`
	} `json:"registration"`
}

func stdParse(line []byte) (walletsync.Event, error) {
	var s stdEvent
	if err := json.Unmarshal(line, &s); err != nil {
		return walletsync.Event{}, err
	}
	e := walletsync.Event{ID: s.EventID, CustomerID: s.CustomerID, PassType: s.PassType, Source: s.Source}
	if s.PassID != nil {
		e.PassID = *s.PassID
	}
	switch s.Type {
	case "installed":
		e.Type = walletsync.TypeInstalled
	case "uninstalled":
		e.Type = walletsync.TypeUninstalled
	case "observed":
		e.Type = walletsync.TypeObserved
	}
	switch s.Platform {
	case "apple":
		e.Platform = walletsync.PlatformApple
	case "google":
		e.Platform = walletsync.PlatformGoogle
	}
	t, err := time.Parse(time.RFC3339Nano, s.OccurredAt)
	if err != nil {
		return e, err
	}
	e.OccurredAt = t.UnixMilli()
	if e.Type == walletsync.TypeObserved {
		if s.Installed == nil {
			return e, errors.New("installed required")
		}
		e.Installed = *s.Installed
		if s.InstalledAt != "" {
			t, err := time.Parse(time.RFC3339Nano, s.InstalledAt)
			if err != nil {
				return e, err
			}
			e.InstalledAt = t.UnixMilli()
		}
	}
	return e, e.Validate()
}

func BenchmarkDecode(b *testing.B) {
	lines := benchLines()
	b.Logf("stream: %d lines, %.0f bytes a line on average", len(lines), avgLen(lines))
	for _, c := range []struct {
		name  string
		parse func([]byte) (walletsync.Event, error)
	}{{"walletsync", wire.ParseEvent}, {"walletsync_decoder", new(wire.Decoder).Parse}, {"walletsync_lean", leanParse(new(wire.Decoder))},
		{"walletsync_general_path", wire.ParseEventGeneral}, {"encoding_json_baseline", stdParse}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(avgLen(lines)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.parse(lines[i]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(lines) {
					i = 0
				}
			}
			reportRate(b, 1, "events/s")
		})
	}
}

// leanParse is the processor's decode: the fold's fields only, the rest
// checked in place.
func leanParse(d *wire.Decoder) func([]byte) (walletsync.Event, error) {
	return func(b []byte) (walletsync.Event, error) {
		e, _, err := d.ParseLean(b)
		return e, err
	}
}

func decodedStream(b *testing.B) []walletsync.Event {
	lines := benchLines()
	evs := make([]walletsync.Event, len(lines))
	for i, l := range lines {
		var err error
		if evs[i], err = wire.ParseEvent(l); err != nil {
			b.Fatal(err)
		}
	}
	return evs
}

func BenchmarkDedupe(b *testing.B) {
	evs := decodedStream(b)
	b.ReportAllocs()
	for b.Loop() {
		d := walletsync.NewDeduper(walletsync.DefaultDedupeWindow)
		for i := range evs {
			d.Seen(evs[i].ID, evs[i].OccurredAt)
		}
	}
	reportRate(b, len(evs), "events/s")
}

func BenchmarkFold(b *testing.B) {
	evs := decodedStream(b)
	// Dedupe once up front: this measures the fold alone.
	d := walletsync.NewDeduper(0)
	uniq := evs[:0:0]
	for _, e := range evs {
		if !d.Seen(e.ID, 0) {
			uniq = append(uniq, e)
		}
	}
	b.ReportAllocs()
	changes := 0
	for b.Loop() {
		f := walletsync.NewFold()
		changes = 0
		for i := range uniq {
			if _, ch := f.Apply(&uniq[i]); ch {
				changes++
			}
		}
	}
	reportRate(b, len(uniq), "events/s")
	b.ReportMetric(float64(changes)/float64(len(uniq)), "changes/event")
}

// BenchmarkDecodeDedupeFold is the goal of issue 2: decode + validate +
// dedupe + fold on one core, ≥ 1,000,000 events/s. The baseline sub-benchmark
// does the same with encoding/json.
func BenchmarkDecodeDedupeFold(b *testing.B) {
	lines := benchLines()
	for _, c := range []struct {
		name  string
		parse func([]byte) (walletsync.Event, error)
	}{{"walletsync", new(wire.Decoder).Parse}, {"encoding_json_baseline", stdParse}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f := walletsync.NewFold()
				d := walletsync.NewDeduper(walletsync.DefaultDedupeWindow)
				for _, l := range lines {
					ev, err := c.parse(l)
					if err != nil {
						b.Fatal(err)
					}
					if !d.Seen(ev.ID, ev.OccurredAt) {
						f.Apply(&ev)
					}
				}
			}
			reportRate(b, len(lines), "events/s")
		})
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkStateBytes measures the fold state: bytes per customer with one
// pass on one platform (goal ≤ 300), and per extra register. It is a
// benchmark, not a test, so it reports rather than asserts.
func BenchmarkStateBytes(b *testing.B) {
	const n = 200_000
	mk := func(c, pass int, plat walletsync.Platform) walletsync.Event {
		return walletsync.Event{
			ID: "evt-" + strconv.Itoa(c*10+pass) + "-0123456789", Type: walletsync.TypeInstalled, Platform: plat,
			CustomerID: "cust-" + strconv.Itoa(1_000_000+c), PassID: "pass-" + strconv.Itoa(c) + "-" + strconv.Itoa(pass),
			OccurredAt: walletsync.MinTime + int64(c),
		}
	}
	for _, c := range []struct {
		name string
		regs int
	}{{"one_register", 1}, {"four_registers", 4}} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				// Events are made one at a time so that the heap grows by
				// the fold state alone (plus the strings it keeps).
				before := heapInUse()
				f := walletsync.NewFold()
				for i := range n {
					for r := range c.regs {
						e := mk(i, r/2, walletsync.Platform(1+r%2))
						f.Apply(&e)
					}
				}
				per = float64(heapInUse()-before) / n
				runtime.KeepAlive(f)
			}
			b.ReportMetric(per, "bytes/customer")
			b.ReportMetric(per/float64(c.regs), "bytes/register")
		})
	}
}
