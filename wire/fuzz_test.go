package wire_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/wire"
)

// FuzzParseEvent: no input panics; whatever is accepted is valid JSON, valid
// by SPEC §1 and survives a round trip through its canonical form; and a
// syntax rejection agrees with encoding/json's own validator. Seeds are every
// line of the golden fixtures plus testdata/fuzz/FuzzParseEvent.
func FuzzParseEvent(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.ndjson")
	for _, name := range files {
		if strings.HasSuffix(name, ".expected.ndjson") {
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l)
		}
	}
	// Canonical lines, as ingest writes them, for the decoder's fast path.
	for _, l := range synth.Lines(synth.Default(40))[:8] {
		f.Add(l)
	}
	f.Add([]byte(`{"eventId":"é","type":"observed","platform":"google","customerId":"c","passId":"p","passType":"t","occurredAt":"2026-03-01T10:00:00.123Z","installed":true,"installedAt":"2026-03-01T09:00:00.000Z","source":"s","registration":{"medium":"m","origin":"o","userAgent":"u","tags":["a",""],"activeCount":0,"totalCount":12}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := wire.ParseEvent(data)
		checkCanonicalPath(t, data, ev, err)
		if err != nil {
			ve, ok := err.(*walletsync.ValidationError)
			if !ok {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			if ve.Field == "json" && json.Valid(data) &&
				!strings.Contains(ve.Reason, "nested too deeply") && !strings.Contains(ve.Reason, "expected an object") {
				t.Fatalf("rejected valid JSON %q as %q", data, ve.Reason)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("accepted an event that fails Validate: %v", err)
		}
		out := wire.AppendEvent(nil, &ev)
		back, err := wire.ParseEvent(out)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(ev, back) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, back)
		}
	})
}

// checkCanonicalPath holds the fast path of the decoder to the general
// one: the same event or the same error, whichever path answered; input it
// calls canonical is exactly AppendEvent's output; and it takes every
// canonical input without escapes (those are left to the general path).
func checkCanonicalPath(t *testing.T, data []byte, ev walletsync.Event, err error) {
	t.Helper()
	gev, gerr := wire.ParseEventGeneral(data)
	if (err == nil) != (gerr == nil) || (err != nil && err.Error() != gerr.Error()) || (err == nil && !reflect.DeepEqual(ev, gev)) {
		t.Fatalf("%q: ParseEvent %+v, %v; general decoder %+v, %v", data, ev, err, gev, gerr)
	}
	cev, canonical, cerr := new(wire.Decoder).ParseCanonical(data)
	if (cerr == nil) != (gerr == nil) || (cerr == nil && !reflect.DeepEqual(cev, gev)) {
		t.Fatalf("%q: ParseCanonical %+v, %v; general decoder %+v, %v", data, cev, cerr, gev, gerr)
	}
	lev, leanCanonical, lerr := new(wire.Decoder).ParseLean(data)
	want := gev
	if leanCanonical {
		want.PassType, want.Source, want.Registration = "", "", nil
	}
	if (lerr == nil) != (gerr == nil) || leanCanonical != canonical || (lerr == nil && !reflect.DeepEqual(lev, want)) {
		t.Fatalf("%q: ParseLean %+v, %v, %v; general decoder %+v, %v", data, lev, leanCanonical, lerr, gev, gerr)
	}
	if gerr != nil {
		if canonical {
			t.Fatalf("%q: rejected (%v) but called canonical", data, gerr)
		}
		return
	}
	isCanonical := bytes.Equal(wire.AppendEvent(nil, &gev), data)
	if canonical && !isCanonical {
		t.Fatalf("%q called canonical; AppendJSON writes %s", data, wire.AppendEvent(nil, &gev))
	}
	if isCanonical && !canonical && !bytes.Contains(data, []byte{'\\'}) {
		t.Fatalf("%q is canonical, but the fast path did not take it", data)
	}
}

// FuzzParseTime: whatever ParseTime accepts, the time package reads as the
// same instant (to the millisecond, truncating), and it formats back to it.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-03-01T10:00:00Z", "2026-03-01T12:00:00.500999+01:00", "2024-02-29T23:59:59.9999999999-11:59", "2026-02-30T00:00:00Z", "2000-01-01T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := wire.ParseTime([]byte(s))
		if err != nil {
			return
		}
		if ms < walletsync.MinTime || ms >= walletsync.MaxTime {
			t.Fatalf("%q gave %d, outside the range", s, ms)
		}
		frac := ""
		if i := strings.IndexByte(s, '.'); i >= 0 {
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			frac = s[i:j]
		}
		if len(frac) <= 10 { // the time package reads at most nine digits
			tm, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("ParseTime accepted %q, time.Parse says %v", s, err)
			}
			if got := tm.UnixNano() / 1e6; tm.UnixNano() < 0 || got != ms {
				t.Fatalf("%q: ParseTime %d, time.Parse %d", s, ms, got)
			}
		}
		back, err := wire.ParseTime([]byte(wire.FormatTime(ms)))
		if err != nil || back != ms {
			t.Fatalf("%q: format/parse round trip gave %d, %v", s, back, err)
		}
	})
}

// FuzzParseRetentionChanges: no header value panics, and whatever is
// accepted encodes back to the same text (the sink stores exactly what the
// processor meant, or nothing).
func FuzzParseRetentionChanges(f *testing.F) {
	for _, s := range []string{"", "1772359200000,1,1,1,1", "1772359200000,0,-1,0,-1;1772359300000,1,1,1,1", "1,2,3", "-5,0,0,0,0", "1,1,1,1,1;"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := wire.ParseRetentionChanges(b)
		if err != nil {
			return
		}
		if back := wire.AppendRetentionChanges(nil, rc); !bytes.Equal(back, b) {
			again, err := wire.ParseRetentionChanges(back)
			if err != nil || !reflect.DeepEqual(again, rc) {
				t.Fatalf("%q parsed to %+v, which encodes to %q and parses to %+v, %v", b, rc, back, again, err)
			}
		}
	})
}

// FuzzParseStatus: a status record ParseStatus accepts is written back by
// Status.AppendJSON into one it reads as the same status.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{
		`{"customerId":"c-42","walletStatus":"both","appleWalletInstalledAt":"2026-01-03T09:00:00.000Z","googleWalletInstalledAt":"2026-01-05T18:30:12.250Z","walletLastChangedAt":"2026-01-05T18:30:12.250Z","walletLastEvent":"installed","version":7}`,
		`{"customerId":"c","walletStatus":"none","appleWalletInstalledAt":null,"googleWalletInstalledAt":null,"walletLastChangedAt":"2026-01-05T18:30:12Z","walletLastEvent":"uninstalled","version":2,"registers":[]}`,
		`{"customerId":"c","walletStatus":"apple"}`, `{}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := wire.ParseStatus(b)
		if err != nil {
			return
		}
		back := wire.AppendStatus(nil, &s, true)
		again, err := wire.ParseStatus(back)
		if err != nil || again != s {
			t.Fatalf("%s read as %+v, written as %s, read back as %+v (%v)", b, s, back, again, err)
		}
	})
}
