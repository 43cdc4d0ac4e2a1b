package wire

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/walletsync/walletsync"
)

// ParseCanonical is Parse that also reports whether data is canonical:
// byte for byte what AppendEvent writes for the event. Ingest writes every
// event that way, so a processor passes such input on as its clean record
// without encoding it again.
func (dec *Decoder) ParseCanonical(data []byte) (walletsync.Event, bool, error) {
	return dec.parseCanonical(data, false)
}

// ParseLean is ParseCanonical for a caller that keeps the input whenever it
// is canonical, as a processor does for its clean record: the event it then
// returns holds only what the fold reads (eventId, type, platform,
// customerId, passId and the times); passType, source and registration are
// checked but not copied, and left empty. Input that is not canonical is
// decoded whole.
func (dec *Decoder) ParseLean(data []byte) (walletsync.Event, bool, error) {
	return dec.parseCanonical(data, true)
}

func (dec *Decoder) parseCanonical(data []byte, lean bool) (walletsync.Event, bool, error) {
	dec.d = decoder{data: data, scratch: dec.d.scratch[:0], intern: &dec.intern, lean: lean}
	if e, ok := dec.d.canonical(); ok {
		return e, true, nil
	}
	dec.d = decoder{data: data, scratch: dec.d.scratch[:0], intern: &dec.intern}
	e, err := dec.d.parse()
	return e, false, err
}

// canonical reads the one layout AppendEvent writes: fields in its order,
// no whitespace, no escapes, times in the output form, absent optional
// fields left out. It is the fast path of every decode, as that is what
// ingest writes; anything else, or any doubt, returns !ok, and the general
// decoder reads the input and gives the reasons for rejecting it.
func (d *decoder) canonical() (e walletsync.Event, ok bool) {
	b := d.data
	p, ok := prefix(b, 0, `{"eventId":"`)
	var s []byte
	if s, p, ok = d.canonString(b, p, ok); !ok {
		return e, false
	}
	e.ID = string(s)
	if p, ok = prefix(b, p, `,"type":"`); !ok {
		return e, false
	}
	switch {
	case hasPrefix(b, p, `installed"`):
		e.Type, p = walletsync.TypeInstalled, p+len(`installed"`)
	case hasPrefix(b, p, `uninstalled"`):
		e.Type, p = walletsync.TypeUninstalled, p+len(`uninstalled"`)
	case hasPrefix(b, p, `observed"`):
		e.Type, p = walletsync.TypeObserved, p+len(`observed"`)
	case hasPrefix(b, p, `issued"`):
		e.Type, p = walletsync.TypeIssued, p+len(`issued"`)
	default:
		return e, false
	}
	// An issued event's platform is optional; every other event has one.
	if e.Type != walletsync.TypeIssued || hasPrefix(b, p, `,"platform":"`) {
		if p, ok = prefix(b, p, `,"platform":"`); !ok {
			return e, false
		}
		switch {
		case hasPrefix(b, p, `apple"`):
			e.Platform, p = walletsync.PlatformApple, p+len(`apple"`)
		case hasPrefix(b, p, `google"`):
			e.Platform, p = walletsync.PlatformGoogle, p+len(`google"`)
		default:
			return e, false
		}
	}
	p, ok = prefix(b, p, `,"customerId":"`)
	if s, p, ok = d.canonString(b, p, ok); !ok {
		return e, false
	}
	e.CustomerID = string(s)
	if hasPrefix(b, p, `,"passId":"`) {
		if s, p, ok = d.canonString(b, p+len(`,"passId":"`), true); !ok || len(s) == 0 {
			return e, false
		}
		e.PassID = string(s)
	}
	if hasPrefix(b, p, `,"passType":"`) {
		if s, p, ok = d.canonString(b, p+len(`,"passType":"`), true); !ok || len(s) == 0 || len(s) > walletsync.MaxPassTypeLen {
			return e, false
		}
		if !d.lean {
			e.PassType = d.share(s)
		}
	}
	p, ok = prefix(b, p, `,"occurredAt":"`)
	if e.OccurredAt, p, ok = canonTime(b, p, ok); !ok {
		return e, false
	}
	if e.Type == walletsync.TypeObserved {
		switch {
		case hasPrefix(b, p, `,"installed":true`):
			e.Installed, p = true, p+len(`,"installed":true`)
		case hasPrefix(b, p, `,"installed":false`):
			p += len(`,"installed":false`)
		default:
			return e, false
		}
		if hasPrefix(b, p, `,"installedAt":"`) {
			if e.InstalledAt, p, ok = canonTime(b, p+len(`,"installedAt":"`), true); !ok || e.InstalledAt == 0 {
				return e, false
			}
		}
	}
	if hasPrefix(b, p, `,"source":"`) {
		if s, p, ok = d.canonString(b, p+len(`,"source":"`), true); !ok || len(s) == 0 {
			return e, false
		}
		if !d.lean {
			e.Source = d.share(s)
		}
	}
	if hasPrefix(b, p, `,"registration":{`) {
		p += len(`,"registration":{`)
		if d.lean {
			// Checked into a Registration on the stack.
			var lean walletsync.Registration
			p, ok = d.canonRegistration(b, p, &lean)
		} else {
			r := &walletsync.Registration{}
			p, ok = d.canonRegistration(b, p, r)
			e.Registration = r
		}
		if !ok {
			return e, false
		}
	}
	if p != len(b)-1 || b[p] != '}' {
		return e, false
	}
	if e.Validate() != nil {
		return e, false
	}
	return e, true
}

// canonRegistration reads the registration object after its '{', to and
// with its '}'.
func (d *decoder) canonRegistration(b []byte, p int, r *walletsync.Registration) (_ int, ok bool) {
	first := true
	// next consumes the separator and name of an optional field if it is
	// the one at p.
	next := func(name string) bool {
		q := p
		if !first {
			if q >= len(b) || b[q] != ',' {
				return false
			}
			q++
		}
		if !hasPrefix(b, q, name) {
			return false
		}
		p, first = q+len(name), false
		return true
	}
	var s []byte
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{`"medium":"`, &r.Medium}, {`"origin":"`, &r.Origin}, {`"userAgent":"`, &r.UserAgent}} {
		if next(f.name) {
			if s, p, ok = d.canonString(b, p, true); !ok || len(s) == 0 {
				return 0, false
			}
			switch {
			case d.lean:
			case f.dst == &r.Medium:
				*f.dst = d.share(s)
			default:
				*f.dst = string(s)
			}
		}
	}
	if next(`"tags":[`) {
		if !d.lean {
			r.Tags = []string{}
		}
		if p < len(b) && b[p] == ']' {
			p++
		} else {
			for {
				p, ok = prefix(b, p, `"`)
				if s, p, ok = d.canonString(b, p, ok); !ok {
					return 0, false
				}
				if !d.lean {
					r.Tags = append(r.Tags, d.share(s))
				}
				if p >= len(b) {
					return 0, false
				}
				p++
				if b[p-1] == ']' {
					break
				}
				if b[p-1] != ',' {
					return 0, false
				}
			}
		}
	}
	if next(`"activeCount":`) {
		if r.ActiveCount, p, ok = canonCount(b, p); !ok {
			return 0, false
		}
		r.HasActiveCount = true
	}
	if next(`"totalCount":`) {
		if r.TotalCount, p, ok = canonCount(b, p); !ok {
			return 0, false
		}
		r.HasTotalCount = true
	}
	if p >= len(b) || b[p] != '}' {
		return 0, false
	}
	return p + 1, true
}

func hasPrefix(b []byte, p int, lit string) bool {
	return len(b)-p >= len(lit) && string(b[p:p+len(lit)]) == lit
}

// prefix consumes lit at p; it passes a failure on, so that steps chain.
func prefix(b []byte, p int, lit string) (int, bool) {
	if !hasPrefix(b, p, lit) {
		return p, false
	}
	return p + len(lit), true
}

// canonString reads a string after its opening quote, through its closing
// one, as AppendJSONString writes it: valid UTF-8, and no escapes, which it
// writes only for characters a canonical string here seldom has (those
// take the general decoder).
func (d *decoder) canonString(b []byte, p int, ok bool) ([]byte, int, bool) {
	if !ok {
		return nil, p, false
	}
	start := p
	for p+8 <= len(b) && swarSpecial(binary.LittleEndian.Uint64(b[p:])) == 0 {
		p += 8
	}
	nonASCII := false
	for ; p < len(b); p++ {
		switch c := b[p]; {
		case c == '"':
			s := b[start:p]
			if nonASCII && !utf8.Valid(s) {
				return nil, p, false
			}
			return s, p + 1, true
		case c == '\\' || c < 0x20:
			return nil, p, false
		case c >= 0x80:
			nonASCII = true
		}
	}
	return nil, p, false
}

// canonTime reads a time in AppendTime's form and its closing quote.
func canonTime(b []byte, p int, ok bool) (int64, int, bool) {
	const n = len("2006-01-02T15:04:05.000Z")
	if !ok || len(b)-p < n+1 || b[p+n] != '"' {
		return 0, p, false
	}
	// ParseTime is strict (no field overflows into the next), so a time it
	// accepts with three decimals and Z is exactly what AppendTime writes.
	if b[p+19] != '.' || b[p+n-1] != 'Z' {
		return 0, p, false
	}
	t, err := ParseTime(b[p : p+n])
	if err != nil {
		return 0, p, false
	}
	return t, p + n + 1, true
}

// canonCount reads a count as strconv.AppendInt writes one ≥ 0.
func canonCount(b []byte, p int) (int64, int, bool) {
	start := p
	for p < len(b) && b[p] >= '0' && b[p] <= '9' {
		p++
	}
	if p == start || (b[start] == '0' && p-start > 1) {
		return 0, p, false
	}
	n, err := strconv.ParseInt(string(b[start:p]), 10, 64)
	return n, p, err == nil
}

// share is sharedField's interning for bytes already read.
func (d *decoder) share(b []byte) string {
	if d.intern == nil || len(b) > maxInternedLen {
		return string(b)
	}
	return d.intern.get(b)
}
