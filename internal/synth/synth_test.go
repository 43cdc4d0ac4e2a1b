package synth

import (
	"testing"

	"github.com/walletsync/walletsync/wire"
)

// The benchmark stream must be what it claims: valid events of about 200
// bytes, with the configured share of duplicates and late events.
func TestDefaultStreamShape(t *testing.T) {
	cfg := Default(50_000)
	cfg.Customers = 5_000
	lines := Lines(cfg)
	if len(lines) != 50_000 {
		t.Fatalf("%d lines", len(lines))
	}
	seen := map[string]bool{}
	dups, late, size := 0, 0, 0
	var prev int64
	for _, l := range lines {
		size += len(l)
		e, err := wire.ParseEvent(l)
		if err != nil {
			t.Fatalf("invalid line %s: %v", l, err)
		}
		if seen[e.ID] {
			dups++
			continue
		}
		seen[e.ID] = true
		// A late event lands among later ones: it is older than the event
		// delivered just before it.
		if e.OccurredAt < prev {
			late++
		}
		prev = e.OccurredAt
	}
	avg := size / len(lines)
	if avg < 150 || avg > 260 {
		t.Errorf("average line %d bytes, want about 200", avg)
	}
	if r := float64(dups) / float64(len(lines)); r < 0.09 || r > 0.11 {
		t.Errorf("duplicate share %.3f, want 0.10", r)
	}
	if r := float64(late) / float64(len(lines)); r < 0.15 || r > 0.25 {
		t.Errorf("late share %.3f, want about 0.20", r)
	}
}
