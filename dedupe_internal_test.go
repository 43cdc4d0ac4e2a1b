package walletsync

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// The id table against a plain map model, through growth, expiry, shrinking
// and the all-zero key, which cannot live in a slot.
func TestDeduperAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	const window = 1000
	d := &Deduper{window: window, slots: make([]idSlot, minSlots)}
	model := map[IDKey]int64{}
	keyOf := func(i int) IDKey {
		if i == 0 {
			return IDKey{}
		}
		return KeyOf(strconv.Itoa(i))
	}
	now := int64(0)
	for step := range 300_000 {
		now += int64(rng.IntN(3))
		k := keyOf(rng.IntN(20_000))
		switch op := rng.IntN(100); {
		case op < 90:
			at, ok := model[k]
			want := ok && now-at < window
			if !want {
				model[k] = now
			}
			if got := d.SeenKey(k, now); got != want {
				t.Fatalf("step %d: SeenKey = %v, model says %v", step, got, want)
			}
		case op < 99:
			at := now - int64(rng.IntN(2*window))
			if old, ok := model[k]; !ok || at < old {
				model[k] = at
			}
			d.Remember(k, at)
		default:
			gone := 0
			for mk, at := range model {
				if now-at >= window {
					delete(model, mk)
					gone++
				}
			}
			if got := d.Expire(now); got != gone {
				t.Fatalf("step %d: Expire forgot %d, model %d", step, got, gone)
			}
			if d.Len() != len(model) {
				t.Fatalf("step %d: Len %d, model %d", step, d.Len(), len(model))
			}
			seen := 0
			d.Range(func(k IDKey, at int64) {
				seen++
				if model[k] != at {
					t.Fatalf("Range gave %x at %d, model %d", k, at, model[k])
				}
			})
			if seen != len(model) {
				t.Fatalf("Range gave %d ids, model %d", seen, len(model))
			}
		}
	}
	if len(d.slots) <= minSlots {
		t.Fatalf("the table never grew (%d slots): the test did not exercise resizing", len(d.slots))
	}
}
