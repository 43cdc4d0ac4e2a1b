package walletsync_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/wire"
)

// foldLines is the file fold of SPEC §2-3: parse, drop rejects, keep the
// first occurrence of every eventId, fold.
func foldLines(t testing.TB, data []byte) (*walletsync.Fold, []error) {
	t.Helper()
	fold := walletsync.NewFold()
	dd := walletsync.NewDeduper(0)
	var rejects []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		ev, err := wire.ParseEvent(sc.Bytes())
		if err != nil {
			rejects = append(rejects, err)
			continue
		}
		if !dd.Seen(ev.ID, 0) {
			fold.Apply(&ev)
		}
	}
	return fold, rejects
}

// statusFields are the fields a status line has: the six of round 1 and
// firstInstalledAt and passIssuedAt (SPEC §4, since issue 11).
var statusFields = []string{"customerId", "walletStatus", "appleWalletInstalledAt", "googleWalletInstalledAt", "walletLastChangedAt", "walletLastEvent",
	"firstInstalledAt", "passIssuedAt"}

// fieldsOf reduces NDJSON status lines to the given fields, in order.
func fieldsOf(t testing.TB, ndjson []byte, fields []string) []string {
	t.Helper()
	var out []string
	for _, l := range bytes.Split(bytes.TrimSpace(ndjson), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("bad status line %q: %v", l, err)
		}
		var parts []string
		for _, k := range fields {
			v, ok := m[k]
			if !ok {
				t.Fatalf("status line %q lacks %s", l, k)
			}
			b, _ := json.Marshal(v)
			parts = append(parts, k+"="+string(b))
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

// expectedFields are the status fields an expected file gives: the fixtures
// written before issue 11 give six, the later ones all eight.
func expectedFields(t testing.TB, want []byte) []string {
	var m map[string]any
	first, _, _ := bytes.Cut(bytes.TrimSpace(want), []byte("\n"))
	if len(first) == 0 {
		return statusFields
	}
	if err := json.Unmarshal(first, &m); err != nil {
		t.Fatalf("bad expected line %q: %v", first, err)
	}
	var fields []string
	for _, k := range statusFields {
		if _, ok := m[k]; ok {
			fields = append(fields, k)
		}
	}
	return fields
}

func TestGoldenFixtures(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".expected.ndjson") {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(in, ".ndjson") + ".expected.ndjson")
			if err != nil {
				t.Fatal(err)
			}
			fold, _ := foldLines(t, data)
			var got []byte
			for _, s := range fold.Statuses() {
				got = wire.AppendStatus(got, &s, true)
				got = append(got, '\n')
			}
			fields := expectedFields(t, want)
			g, w := fieldsOf(t, got, fields), fieldsOf(t, want, fields)
			// Every status has all eight fields, whatever the fixture gives.
			fieldsOf(t, got, statusFields)
			if strings.Join(g, "\n") != strings.Join(w, "\n") {
				t.Errorf("fold of %s:\n got %s\nwant %s", in, strings.Join(g, "\n     "), strings.Join(w, "\n     "))
			}
		})
	}
	if n < 10 {
		t.Fatalf("found %d golden fixtures, want at least 10: is testdata/golden in place?", n)
	}
}

// The rejects fixture has one line per rejection rule; each must be
// rejected with its own reason, and the one good line kept.
func TestGoldenRejectReasons(t *testing.T) {
	data, err := os.ReadFile("testdata/golden/09-rejects.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	_, rejects := foldLines(t, data)
	want := []string{
		"invalid JSON: expected an object at offset 0",
		"customerId: required, must not be empty",
		`type: must be "installed", "uninstalled", "observed" or "issued", got "Pass:Installed"`,
		`platform: must be "apple" or "google", got "samsung"`,
		`occurredAt: not an RFC 3339 timestamp with a T, seconds and a zone (Z or ±hh:mm): "2026-01-01T00:00:00"`,
		"occurredAt: must be a string, got a number",
		`occurredAt: outside [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z): "1970-01-01T00:00:00Z"`,
		`installed: required when type is "observed"`,
		"installedAt: 2026-01-02T00:00:00.000Z is after occurredAt 2026-01-01T00:00:00.000Z",
		"customerId: required, must not be empty",
		`occurredAt: no such calendar date: "2026-02-30T00:00:00Z"`,
	}
	if len(rejects) != len(want) {
		t.Fatalf("got %d rejects, want %d: %v", len(rejects), len(want), rejects)
	}
	for i := range want {
		if rejects[i].Error() != want[i] {
			t.Errorf("reject %d: got %q, want %q", i+1, rejects[i], want[i])
		}
	}
}
