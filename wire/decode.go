package wire

import (
	"encoding/binary"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/walletsync/walletsync"
)

// ParseEvent decodes one canonical event from JSON and validates it
// (SPEC §1). Every failure is a *ValidationError.
//
// It is a purpose-made decoder for one flat object rather than
// encoding/json: it allocates only the strings it keeps, and it is strict
// where the contract is (exact, case-sensitive field names; invalid UTF-8 in
// a field rejects the event instead of being replaced). Unknown fields are
// skipped but must still be valid JSON. A field given twice keeps its last
// value, as encoding/json does.
func ParseEvent(data []byte) (walletsync.Event, error) {
	d := decoder{data: data}
	if e, ok := d.canonical(); ok {
		return e, nil
	}
	d = decoder{data: data}
	return d.parse()
}

// Decoder is ParseEvent with memory: it shares one copy of each value of the
// low-cardinality fields (passType, source, registration medium and tags)
// between the events it decodes, which saves allocations on every event of a
// stream and memory wherever events are kept. Not safe for concurrent use.
type Decoder struct {
	d      decoder
	intern internTable
}

// internTable is the Decoder's shared values: a map, and in front of it a
// small cache of recent values by length and end bytes, which answers most
// lookups of a stream's few distinct values with one comparison.
type internTable struct {
	m      map[string]string
	recent [64]string
}

func (t *internTable) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	h := (uint(len(b))*37 + uint(b[0])*7 + uint(b[len(b)-1])) & 63
	if s := t.recent[h]; s == string(b) {
		return s
	}
	s, ok := t.m[string(b)]
	if !ok {
		s = string(b)
		if t.m == nil {
			t.m = make(map[string]string)
		}
		if len(t.m) < maxInterned {
			t.m[s] = s
		}
	}
	t.recent[h] = s
	return s
}

// maxInterned bounds the shared values, so that a stream of unique values
// costs no more than ParseEvent.
const (
	maxInterned    = 4096
	maxInternedLen = 64
)

// Parse is ParseEvent.
func (dec *Decoder) Parse(data []byte) (walletsync.Event, error) {
	e, _, err := dec.ParseCanonical(data)
	return e, err
}

func (d *decoder) parse() (walletsync.Event, error) {
	e, err := d.event()
	if err != nil {
		return walletsync.Event{}, err
	}
	return e, nil
}

// maxDepth bounds nesting inside skipped values, so that hostile input costs
// neither stack nor time.
const maxDepth = 64

type decoder struct {
	data []byte
	pos  int
	// fieldErr is the first wrong-typed or malformed known field. It is
	// reported only once the whole object is known to be valid JSON, so a
	// syntax error always wins and the reason does not depend on luck.
	fieldErr *walletsync.ValidationError
	scratch  []byte
	intern   *internTable // nil: no interning
	lean     bool         // canonical: check what the fold does not read, keep none of it
	nonASCII bool         // the last string read has bytes ≥ 0x80 or escapes
	waiting  bool         // a waiting event (ParseWaiting): its customerId is empty
}

func (d *decoder) syntax(msg string) *walletsync.ValidationError {
	if d.pos >= len(d.data) {
		return walletsync.Invalid("json", msg+" at end of input")
	}
	return walletsync.Invalid("json", msg+" at offset "+strconv.Itoa(d.pos))
}

func (d *decoder) fieldError(field, reason string) {
	if d.fieldErr == nil {
		d.fieldErr = walletsync.Invalid(field, reason)
	}
}

func (d *decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// object reads an object, calling field with each field name and pos at
// its value, which field must consume. The name is valid until the next
// string is read.
func (d *decoder) object(field func(key []byte) error) error {
	d.ws()
	if d.pos >= len(d.data) || d.data[d.pos] != '{' {
		return d.syntax("invalid JSON: expected an object")
	}
	d.pos++
	d.ws()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return nil
	}
	for {
		d.ws()
		key, ok := d.rawString()
		if !ok {
			return d.syntax("invalid JSON: expected a field name")
		}
		d.ws()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return d.syntax("invalid JSON: expected ':'")
		}
		d.pos++
		d.ws()
		if err := field(key); err != nil {
			return err
		}
		if end, err := d.after('}', "object"); end || err != nil {
			return err
		}
	}
}

// array reads the array whose '[' is at pos, calling elem with pos at
// each element, which elem must consume.
func (d *decoder) array(elem func() error) error {
	d.pos++
	d.ws()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		return nil
	}
	for {
		d.ws()
		if err := elem(); err != nil {
			return err
		}
		if end, err := d.after(']', "array"); end || err != nil {
			return err
		}
	}
}

// after consumes the ',' or the closing byte that follows a value in an
// object or array, and reports whether it was the closing one.
func (d *decoder) after(closing byte, what string) (closed bool, err error) {
	d.ws()
	if d.pos >= len(d.data) {
		return false, d.syntax("invalid JSON: unterminated " + what)
	}
	switch d.data[d.pos] {
	case closing:
		d.pos++
		return true, nil
	case ',':
		d.pos++
		return false, nil
	}
	return false, d.syntax("invalid JSON: expected ',' or '" + string(closing) + "'")
}

// document reads the whole input as one object (object), with nothing but
// whitespace after it.
func (d *decoder) document(field func(key []byte) error) error {
	if err := d.object(field); err != nil {
		return err
	}
	d.ws()
	if d.pos != len(d.data) {
		return d.syntax("invalid JSON: trailing data after the object")
	}
	return nil
}

func (d *decoder) event() (walletsync.Event, error) {
	var (
		e           walletsync.Event
		typeErr     string // set when type is present but not a known value
		platErr     string
		installed   = -1 // -1 absent, 0 false, 1 true
		installedAt int64
	)
	err := d.document(func(key []byte) (err error) {
		switch string(key) {
		case "eventId":
			e.ID, err = d.stringField("eventId")
		case "type":
			var b []byte
			b, _, err = d.bytesField("type")
			switch e.Type, typeErr = 0, ""; string(b) {
			case "installed":
				e.Type = walletsync.TypeInstalled
			case "uninstalled":
				e.Type = walletsync.TypeUninstalled
			case "observed":
				e.Type = walletsync.TypeObserved
			case "issued":
				e.Type = walletsync.TypeIssued
			default:
				if b != nil {
					typeErr = walletsync.QuoteValue(string(b))
				}
			}
		case "platform":
			var b []byte
			b, _, err = d.bytesField("platform")
			switch e.Platform, platErr = 0, ""; string(b) {
			case "apple":
				e.Platform = walletsync.PlatformApple
			case "google":
				e.Platform = walletsync.PlatformGoogle
			default:
				if b != nil {
					platErr = walletsync.QuoteValue(string(b))
				}
			}
		case "customerId":
			e.CustomerID, err = d.stringField("customerId")
		case "passId":
			e.PassID, err = d.stringField("passId")
		case "passType":
			e.PassType, err = d.sharedField("passType")
		case "source":
			e.Source, err = d.sharedField("source")
		case "occurredAt":
			e.OccurredAt, err = d.timeField("occurredAt")
		case "installedAt":
			installedAt, err = d.timeField("installedAt")
		case "installed":
			installed, err = d.boolField("installed")
		case "registration":
			e.Registration, err = d.registration()
		default:
			err = d.skip(0)
		}
		return err
	})
	if err != nil {
		return e, err
	}
	if d.fieldErr != nil {
		return e, d.fieldErr
	}

	// Fields are checked in the order of SPEC §1 so that the reason for an
	// event with several faults is stable; Validate repeats the cheap checks.
	if err := walletsync.CheckLength("eventId", e.ID, 1, walletsync.MaxEventIDLen); err != nil {
		return e, err
	}
	if typeErr != "" {
		return e, walletsync.Invalid("type", `must be "installed", "uninstalled", "observed" or "issued", got `+typeErr)
	}
	if e.Type == 0 {
		return e, walletsync.Invalid("type", `required: "installed", "uninstalled", "observed" or "issued"`)
	}
	if platErr != "" {
		return e, walletsync.Invalid("platform", `must be "apple" or "google", got `+platErr)
	}
	if e.Type == walletsync.TypeObserved {
		if installed < 0 {
			return e, walletsync.Invalid("installed", `required when type is "observed"`)
		}
		e.Installed = installed == 1
		e.InstalledAt = installedAt
	}
	// installed and installedAt mean nothing on installed/uninstalled events;
	// they are ignored there like any unknown field.
	if d.waiting {
		return e, e.ValidateWaiting()
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	return e, nil
}

// SWAR constants: eight bytes of a string are tested at once for a quote, a
// backslash, a control character or a non-ASCII byte, the only bytes that
// need a closer look.
const (
	swarLo = 0x0101010101010101
	swarHi = 0x8080808080808080
)

func swarSpecial(x uint64) uint64 {
	q := x ^ (swarLo * '"')
	b := x ^ (swarLo * '\\')
	return ((q - swarLo) &^ q & swarHi) | ((b - swarLo) &^ b & swarHi) | ((x - swarLo*0x20) &^ x & swarHi) | (x & swarHi)
}

// rawString reads a JSON string and returns its raw bytes between the quotes
// when it has no escapes, or its unescaped form (in d.scratch) when it has.
// d.nonASCII tells whether the result needs a UTF-8 check.
func (d *decoder) rawString() ([]byte, bool) {
	if d.pos >= len(d.data) || d.data[d.pos] != '"' {
		return nil, false
	}
	d.pos++
	start := d.pos
	d.nonASCII = false
	for {
		for d.pos+8 <= len(d.data) && swarSpecial(binary.LittleEndian.Uint64(d.data[d.pos:])) == 0 {
			d.pos += 8
		}
		if d.pos >= len(d.data) {
			return nil, false
		}
		c := d.data[d.pos]
		switch {
		case c == '"':
			s := d.data[start:d.pos]
			d.pos++
			return s, true
		case c == '\\':
			d.nonASCII = true // the unescaped form is checked whole
			return d.escapedString(start)
		case c < 0x20:
			return nil, false
		case c >= 0x80:
			d.nonASCII = true
		}
		d.pos++
	}
}

func (d *decoder) escapedString(start int) ([]byte, bool) {
	buf := append(d.scratch[:0], d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			d.scratch = buf
			return buf, true
		case c < 0x20:
			return nil, false
		case c != '\\':
			buf = append(buf, c)
			d.pos++
			continue
		}
		if d.pos+1 >= len(d.data) {
			return nil, false
		}
		esc := d.data[d.pos+1]
		d.pos += 2
		switch esc {
		case '"', '\\', '/':
			buf = append(buf, esc)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
					save := d.pos
					d.pos += 2
					var ok2 bool
					if r2, ok2 = d.hex4(); !ok2 {
						return nil, false
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
					} else {
						// Not a pair: the lone surrogate becomes U+FFFD, as
						// encoding/json does, and the second escape is read
						// on its own.
						d.pos = save
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, false
		}
	}
	return nil, false
}

func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

func (d *decoder) isNull() bool {
	if len(d.data)-d.pos >= 4 && string(d.data[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// bytesField reads a string-or-null field without allocating; the bytes are
// valid until the next string is read.
func (d *decoder) bytesField(field string) ([]byte, bool, error) {
	if d.isNull() {
		return nil, false, nil
	}
	if d.pos < len(d.data) && d.data[d.pos] == '"' {
		b, ok := d.rawString()
		if !ok {
			return nil, false, d.syntax("invalid JSON: bad string")
		}
		if d.nonASCII && !utf8.Valid(b) {
			d.fieldError(field, "invalid UTF-8")
		}
		return b, true, nil
	}
	d.fieldError(field, "must be a string, got "+d.kind())
	return nil, false, d.skip(0)
}

func (d *decoder) stringField(field string) (string, error) {
	b, ok, err := d.bytesField(field)
	if !ok || err != nil {
		return "", err
	}
	return string(b), nil
}

// sharedField is stringField for low-cardinality fields, interned when the
// decoder has a table.
func (d *decoder) sharedField(field string) (string, error) {
	b, ok, err := d.bytesField(field)
	if !ok || err != nil {
		return "", err
	}
	return d.share(b), nil
}

func (d *decoder) timeField(field string) (int64, error) {
	b, ok, err := d.bytesField(field)
	if !ok || err != nil {
		return 0, err
	}
	t, terr := ParseTime(b)
	if terr != nil {
		d.fieldError(field, terr.Error()+": "+walletsync.QuoteValue(string(b)))
		return 0, nil
	}
	return t, nil
}

func (d *decoder) boolField(field string) (int, error) {
	rest := d.data[d.pos:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		d.pos += 4
		return 1, nil
	case len(rest) >= 5 && string(rest[:5]) == "false":
		d.pos += 5
		return 0, nil
	case d.isNull():
		return -1, nil
	}
	d.fieldError(field, "must be true or false, got "+d.kind())
	return -1, d.skip(0)
}

func (d *decoder) intField(field string) (int64, bool, error) {
	if d.isNull() {
		return 0, false, nil
	}
	start := d.pos
	if err := d.skip(0); err != nil {
		return 0, false, err
	}
	raw := d.data[start:d.pos]
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		d.fieldError(field, "must be a non-negative integer, got "+walletsync.QuoteValue(string(raw)))
		return 0, false, nil
	}
	return n, true, nil
}

func (d *decoder) registration() (*walletsync.Registration, error) {
	if d.isNull() {
		return nil, nil
	}
	if d.pos >= len(d.data) || d.data[d.pos] != '{' {
		d.fieldError("registration", "must be an object, got "+d.kind())
		return nil, d.skip(0)
	}
	r := &walletsync.Registration{}
	err := d.object(func(key []byte) (err error) {
		switch string(key) {
		case "medium":
			r.Medium, err = d.sharedField("registration.medium")
		case "origin":
			r.Origin, err = d.stringField("registration.origin")
		case "userAgent":
			r.UserAgent, err = d.stringField("registration.userAgent")
		case "activeCount":
			r.ActiveCount, r.HasActiveCount, err = d.intField("registration.activeCount")
		case "totalCount":
			r.TotalCount, r.HasTotalCount, err = d.intField("registration.totalCount")
		case "tags":
			r.Tags, err = d.tags()
		default:
			err = d.skip(1)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (d *decoder) tags() ([]string, error) {
	if d.isNull() {
		return nil, nil
	}
	if d.pos >= len(d.data) || d.data[d.pos] != '[' {
		d.fieldError("registration.tags", "must be an array of strings, got "+d.kind())
		return nil, d.skip(1)
	}
	tags := []string{}
	err := d.array(func() error {
		if d.pos < len(d.data) && d.data[d.pos] == '"' {
			s, err := d.sharedField("registration.tags")
			tags = append(tags, s)
			return err
		}
		d.fieldError("registration.tags", "must be an array of strings, got an element that is "+d.kind())
		return d.skip(2)
	})
	if err != nil {
		return nil, err
	}
	return tags, nil
}

// kind names the JSON type of the value at pos, for error messages.
func (d *decoder) kind() string {
	if d.pos >= len(d.data) {
		return "nothing"
	}
	switch c := d.data[d.pos]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return "an invalid value"
}

// skip consumes one JSON value of any type, checking its syntax.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return d.syntax("invalid JSON: nested too deeply")
	}
	if d.pos >= len(d.data) {
		return d.syntax("invalid JSON: expected a value")
	}
	switch c := d.data[d.pos]; {
	case c == '"':
		if _, ok := d.rawString(); !ok {
			return d.syntax("invalid JSON: bad string")
		}
		return nil
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() error { return d.skip(depth + 1) })
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return d.syntax("invalid JSON: unexpected character " + strconv.QuoteRune(rune(d.data[d.pos])))
}

func (d *decoder) literal(lit string) error {
	if len(d.data)-d.pos >= len(lit) && string(d.data[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return nil
	}
	return d.syntax("invalid JSON: unexpected character " + strconv.QuoteRune(rune(d.data[d.pos])))
}

// number checks the JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() error {
	p := d.pos
	n := len(d.data)
	if p < n && d.data[p] == '-' {
		p++
	}
	switch {
	case p < n && d.data[p] == '0':
		p++
	case p < n && d.data[p] >= '1' && d.data[p] <= '9':
		for p < n && d.data[p] >= '0' && d.data[p] <= '9' {
			p++
		}
	default:
		d.pos = p
		return d.syntax("invalid JSON: bad number")
	}
	if p < n && d.data[p] == '.' {
		p++
		if p >= n || d.data[p] < '0' || d.data[p] > '9' {
			d.pos = p
			return d.syntax("invalid JSON: bad number")
		}
		for p < n && d.data[p] >= '0' && d.data[p] <= '9' {
			p++
		}
	}
	if p < n && (d.data[p] == 'e' || d.data[p] == 'E') {
		p++
		if p < n && (d.data[p] == '+' || d.data[p] == '-') {
			p++
		}
		if p >= n || d.data[p] < '0' || d.data[p] > '9' {
			d.pos = p
			return d.syntax("invalid JSON: bad number")
		}
		for p < n && d.data[p] >= '0' && d.data[p] <= '9' {
			p++
		}
	}
	d.pos = p
	return nil
}

// ParseEventGeneral is ParseEvent without its canonical fast path, for the
// tests that hold the two to the same answers and the benchmark that
// measures what the fast path saves.
func ParseEventGeneral(data []byte) (walletsync.Event, error) {
	d := decoder{data: data}
	return d.parse()
}
