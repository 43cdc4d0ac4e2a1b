package walletsync

import (
	"crypto/sha256"
	"encoding/binary"
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
//
// The ids live in an open-addressing table rather than a Go map: the keys are
// already uniform hash bytes, so a slot index is a mask away, and a lookup
// that misses inserts in the slot it ended on. It is one cache miss an event
// where a map of 16-byte keys costs two hashings and more.
type Deduper struct {
	window int64
	slots  []idSlot // a power of two long; the zero key marks an empty slot
	n      int
	// The all-zero key cannot be stored in a slot; SHA-256 gives it with
	// probability 2^-128, but correctness does not rest on that.
	zeroSeen bool
	zeroAt   int64
}

type idSlot struct {
	key IDKey
	at  int64 // first seen at
}

// DefaultDedupeWindow is SPEC §2's default.
const DefaultDedupeWindow = 7 * 24 * time.Hour

const minSlots = 1024

// NewDeduper returns a Deduper remembering ids for window (0 = forever).
func NewDeduper(window time.Duration) *Deduper {
	return &Deduper{window: window.Milliseconds(), slots: make([]idSlot, minSlots)}
}

// Seen reports whether id is a duplicate at time now, and remembers it if not.
func (d *Deduper) Seen(id string, now int64) bool {
	return d.SeenKey(KeyOf(id), now)
}

func (d *Deduper) live(at, now int64) bool { return d.window == 0 || now-at < d.window }

// find returns the slot holding k, or the empty slot where it would go.
func (d *Deduper) find(k IDKey) *idSlot {
	mask := uint64(len(d.slots) - 1)
	i := binary.LittleEndian.Uint64(k[:8]) & mask
	for {
		s := &d.slots[i]
		if s.key == k || s.key == (IDKey{}) {
			return s
		}
		i = (i + 1) & mask
	}
}

// SeenKey is Seen for an id already hashed.
func (d *Deduper) SeenKey(k IDKey, now int64) bool {
	if k == (IDKey{}) {
		dup := d.zeroSeen && d.live(d.zeroAt, now)
		if !dup {
			d.zeroSeen, d.zeroAt = true, now
		}
		return dup
	}
	s := d.find(k)
	if s.key == k {
		if d.live(s.at, now) {
			return true
		}
		// Past its window: it counts as new again, from now.
		s.at = now
		return false
	}
	d.insert(s, k, now)
	return false
}

func (d *Deduper) insert(s *idSlot, k IDKey, at int64) {
	// Grow at a load of 3/4, where linear probing stays short.
	if (d.n+1)*4 > len(d.slots)*3 {
		d.resize(len(d.slots) * 2)
		s = d.find(k)
	}
	s.key, s.at = k, at
	d.n++
}

func (d *Deduper) resize(size int) {
	old := d.slots
	d.slots = make([]idSlot, size)
	mask := uint64(size - 1)
	for _, s := range old {
		if s.key == (IDKey{}) {
			continue
		}
		i := binary.LittleEndian.Uint64(s.key[:8]) & mask
		for d.slots[i].key != (IDKey{}) {
			i = (i + 1) & mask
		}
		d.slots[i] = s
	}
}

// Remember records k as first seen at; it is how persisted state is loaded.
// An id already known keeps the earlier time.
func (d *Deduper) Remember(k IDKey, at int64) {
	if k == (IDKey{}) {
		if !d.zeroSeen || at < d.zeroAt {
			d.zeroSeen, d.zeroAt = true, at
		}
		return
	}
	s := d.find(k)
	if s.key == k {
		s.at = min(s.at, at)
		return
	}
	d.insert(s, k, at)
}

// Expire forgets ids first seen a window or more before now and returns how
// many it forgot. Callers run it now and then (say, every few minutes); an
// id past its window is already no longer reported by Seen. It rebuilds the
// table, which is what deleting from linear probing needs anyway, and shrinks
// it when most ids are gone.
func (d *Deduper) Expire(now int64) int {
	if d.window == 0 {
		return 0
	}
	gone := 0
	if d.zeroSeen && !d.live(d.zeroAt, now) {
		d.zeroSeen = false
		gone++
	}
	for i := range d.slots {
		if s := &d.slots[i]; s.key != (IDKey{}) && !d.live(s.at, now) {
			s.key = IDKey{}
			d.n--
			gone++
		}
	}
	size := len(d.slots)
	for size > minSlots && d.n*4 < size {
		size /= 2
	}
	d.resize(size)
	return gone
}

// Range calls fn for every remembered id, for persisting the state.
func (d *Deduper) Range(fn func(k IDKey, firstSeen int64)) {
	if d.zeroSeen {
		fn(IDKey{}, d.zeroAt)
	}
	for _, s := range d.slots {
		if s.key != (IDKey{}) {
			fn(s.key, s.at)
		}
	}
}

// Len is how many ids are remembered.
func (d *Deduper) Len() int {
	if d.zeroSeen {
		return d.n + 1
	}
	return d.n
}
