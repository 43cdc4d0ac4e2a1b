package walletsync

import (
	"crypto/sha256"
	"time"
)

// IDKey is the fixed-size identity of an eventId kept by a Deduper.
type IDKey [16]byte

// KeyOf hashes an eventId. SHA-256 rather than a fast non-cryptographic hash
// because eventIds come from outside: nobody can craft two ids that collide
// and so get a real event dropped as a duplicate. 16 bytes keep a key the
// same size whatever the id's length (up to 128 bytes), and the key is stable
// across processes, so dedupe state can be persisted.
func KeyOf(id string) IDKey {
	sum := sha256.Sum256([]byte(id))
	var k IDKey
	copy(k[:], sum[:16])
	return k
}

// Deduper applies SPEC §2: the first record of an eventId is the event, every
// later one a duplicate. It remembers an id for Window after it was first
// seen (zero: forever, as a file fold needs). Times are Unix milliseconds of
// the caller's clock; it keeps no clock of its own so that it stays pure and
// testable. Not safe for concurrent use.
type Deduper struct {
	window int64
	seen   map[IDKey]int64 // first seen at
}

// DefaultDedupeWindow is SPEC §2's default.
const DefaultDedupeWindow = 7 * 24 * time.Hour

// NewDeduper returns a Deduper remembering ids for window (0 = forever).
func NewDeduper(window time.Duration) *Deduper {
	return &Deduper{window: window.Milliseconds(), seen: make(map[IDKey]int64)}
}

// Seen reports whether id is a duplicate at time now, and remembers it if not.
func (d *Deduper) Seen(id string, now int64) bool {
	return d.SeenKey(KeyOf(id), now)
}

// SeenKey is Seen for an id already hashed.
func (d *Deduper) SeenKey(k IDKey, now int64) bool {
	if at, ok := d.seen[k]; ok && (d.window == 0 || now-at < d.window) {
		return true
	}
	d.seen[k] = now
	return false
}

// Remember records k as first seen at; it is how persisted state is loaded.
// An id already known keeps the earlier time.
func (d *Deduper) Remember(k IDKey, at int64) {
	if old, ok := d.seen[k]; !ok || at < old {
		d.seen[k] = at
	}
}

// Expire forgets ids first seen a window or more before now and returns how
// many it forgot. Callers run it now and then (say, every few minutes); an
// id past its window is already no longer reported by Seen.
func (d *Deduper) Expire(now int64) int {
	if d.window == 0 {
		return 0
	}
	n := 0
	for k, at := range d.seen {
		if now-at >= d.window {
			delete(d.seen, k)
			n++
		}
	}
	return n
}

// Len is how many ids are remembered.
func (d *Deduper) Len() int { return len(d.seen) }
