package wire_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/wire"
)

const good = `{"eventId":"e1","type":"installed","platform":"apple","customerId":"c-1","occurredAt":"2026-03-01T10:00:00Z"}`

// with replaces or adds fields of the good event; a nil value removes one.
func with(fields map[string]any) string {
	var m map[string]any
	_ = json.Unmarshal([]byte(good), &m)
	for k, v := range fields {
		if v == nil {
			delete(m, k)
		} else if r, ok := v.(json.RawMessage); ok && string(r) == "null" {
			m[k] = nil
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

var null = json.RawMessage("null")

func TestParseEventRejections(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	obs := map[string]any{"type": "observed", "installed": true}
	merge := func(a, b map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range a {
			m[k] = v
		}
		for k, v := range b {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name, in, field, reason string
	}{
		// JSON syntax
		{"empty", ``, "json", "invalid JSON: expected an object at end of input"},
		{"not json", `not json`, "json", "invalid JSON: expected an object at offset 0"},
		{"array", `[1]`, "json", "invalid JSON: expected an object at offset 0"},
		{"truncated", good[:40], "json", "invalid JSON: expected a field name at end of input"},
		{"trailing", good + `{}`, "json", "invalid JSON: trailing data after the object at offset 109"},
		{"trailing comma", strings.TrimSuffix(good, "}") + `,}`, "json", "invalid JSON: expected a field name at offset 109"},
		{"bad escape", `{"eventId":"a\q"}`, "json", "invalid JSON: bad string at offset 15"},
		{"control char", "{\"eventId\":\"a\tb\"}", "json", "invalid JSON: bad string at offset 13"},
		{"bad number in unknown", `{"x":01}`, "json", "invalid JSON: expected ',' or '}' at offset 6"},
		{"bad literal", `{"x":tru}`, "json", "invalid JSON: unexpected character 't' at offset 5"},
		{"too deep", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "json", "invalid JSON: nested too deeply at offset 70"},
		// eventId
		{"eventId missing", with(map[string]any{"eventId": nil}), "eventId", "required, must not be empty"},
		{"eventId null", with(map[string]any{"eventId": null}), "eventId", "required, must not be empty"},
		{"eventId empty", with(map[string]any{"eventId": ""}), "eventId", "required, must not be empty"},
		{"eventId too long", with(map[string]any{"eventId": long(129)}), "eventId", "must be 1–128 bytes, got 129"},
		{"eventId number", with(map[string]any{"eventId": 7}), "eventId", "must be a string, got a number"},
		// type
		{"type missing", with(map[string]any{"type": nil}), "type", `required: "installed", "uninstalled", "observed" or "issued"`},
		{"type unknown", with(map[string]any{"type": "Pass:Installed"}), "type", `must be "installed", "uninstalled", "observed" or "issued", got "Pass:Installed"`},
		{"type case", with(map[string]any{"type": "Installed"}), "type", `must be "installed", "uninstalled", "observed" or "issued", got "Installed"`},
		{"type bool", with(map[string]any{"type": true}), "type", "must be a string, got a boolean"},
		// platform
		{"platform missing", with(map[string]any{"platform": nil}), "platform", `required: "apple" or "google"`},
		{"platform unknown", with(map[string]any{"platform": "samsung"}), "platform", `must be "apple" or "google", got "samsung"`},
		{"platform object", with(map[string]any{"platform": map[string]any{}}), "platform", "must be a string, got an object"},
		// customerId
		{"customerId missing", with(map[string]any{"customerId": nil}), "customerId", "required, must not be empty"},
		{"customerId empty", with(map[string]any{"customerId": ""}), "customerId", "required, must not be empty"},
		{"customerId too long", with(map[string]any{"customerId": long(257)}), "customerId", "must be 1–256 bytes, got 257"},
		{"customerId bad utf8", strings.Replace(good, `"c-1"`, "\"c-\xff\"", 1), "customerId", "invalid UTF-8"},
		// passId, passType
		{"passId too long", with(map[string]any{"passId": long(129)}), "passId", "must be 0–128 bytes, got 129"},
		{"passId array", with(map[string]any{"passId": []int{1}}), "passId", "must be a string, got an array"},
		{"passType too long", with(map[string]any{"passType": long(65)}), "passType", "must be 0–64 bytes, got 65"},
		// occurredAt
		{"occurredAt missing", with(map[string]any{"occurredAt": nil}), "occurredAt", "required"},
		{"occurredAt no zone", with(map[string]any{"occurredAt": "2026-01-01T00:00:00"}), "occurredAt", `not an RFC 3339 timestamp with a T, seconds and a zone (Z or ±hh:mm): "2026-01-01T00:00:00"`},
		{"occurredAt number", with(map[string]any{"occurredAt": 1767225600000}), "occurredAt", "must be a string, got a number"},
		{"occurredAt 1970", with(map[string]any{"occurredAt": "1970-01-01T00:00:00Z"}), "occurredAt", `outside [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z): "1970-01-01T00:00:00Z"`},
		{"occurredAt 2100", with(map[string]any{"occurredAt": "2100-01-01T00:00:00Z"}), "occurredAt", `outside [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z): "2100-01-01T00:00:00Z"`},
		{"occurredAt feb 30", with(map[string]any{"occurredAt": "2026-02-30T00:00:00Z"}), "occurredAt", `no such calendar date: "2026-02-30T00:00:00Z"`},
		{"occurredAt hour 24", with(map[string]any{"occurredAt": "2026-02-03T24:00:00Z"}), "occurredAt", `hour, minute, second or zone offset out of range: "2026-02-03T24:00:00Z"`},
		// observed
		{"observed without installed", with(map[string]any{"type": "observed"}), "installed", `required when type is "observed"`},
		{"observed installed null", with(map[string]any{"type": "observed", "installed": null}), "installed", `required when type is "observed"`},
		{"observed installed string", with(map[string]any{"type": "observed", "installed": "true"}), "installed", "must be true or false, got a string"},
		{"installedAt after occurredAt", with(merge(obs, map[string]any{"installedAt": "2026-03-01T10:00:00.001Z"})), "installedAt", "2026-03-01T10:00:00.001Z is after occurredAt 2026-03-01T10:00:00.000Z"},
		{"installedAt malformed", with(merge(obs, map[string]any{"installedAt": "yesterday"})), "installedAt", `not an RFC 3339 timestamp with a T, seconds and a zone (Z or ±hh:mm): "yesterday"`},
		{"installedAt out of range", with(merge(obs, map[string]any{"installedAt": "1999-01-01T00:00:00Z"})), "installedAt", `outside [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z): "1999-01-01T00:00:00Z"`},
		// optional fields with the wrong type
		{"source number", with(map[string]any{"source": 1}), "source", "must be a string, got a number"},
		{"registration string", with(map[string]any{"registration": "email"}), "registration", "must be an object, got a string"},
		{"registration medium", with(map[string]any{"registration": map[string]any{"medium": 3}}), "registration.medium", "must be a string, got a number"},
		{"registration tags", with(map[string]any{"registration": map[string]any{"tags": "a"}}), "registration.tags", "must be an array of strings, got a string"},
		{"registration tag", with(map[string]any{"registration": map[string]any{"tags": []any{"a", 1}}}), "registration.tags", "must be an array of strings, got an element that is a number"},
		{"registration count fraction", with(map[string]any{"registration": map[string]any{"activeCount": 1.5}}), "registration.activeCount", `must be a non-negative integer, got "1.5"`},
		{"registration count negative", with(map[string]any{"registration": map[string]any{"totalCount": -1}}), "registration.totalCount", `must be a non-negative integer, got "-1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := wire.ParseEvent([]byte(c.in))
			var ve *walletsync.ValidationError
			if err == nil {
				t.Fatalf("accepted %s", c.in)
			}
			if !errorsAs(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			if ve.Field != c.field || ve.Reason != c.reason {
				t.Errorf("ParseEvent(%s)\n got field %q reason %q\nwant field %q reason %q", c.in, ve.Field, ve.Reason, c.field, c.reason)
			}
		})
	}
}

func errorsAs(err error, ve **walletsync.ValidationError) bool {
	v, ok := err.(*walletsync.ValidationError)
	*ve = v
	return ok
}

func TestParseEventAccepts(t *testing.T) {
	full := `{"eventId":"e\u00e9\"1","type":"observed","platform":"google","customerId":"Zo\u00e9 😀","passId":"p-1",
		"passType":"loyalty","occurredAt":"2026-03-01T12:00:00.123456+01:00","installed":true,
		"installedAt":"2026-02-01T00:00:00Z","source":"backfill","extra":{"a":[1,2.5e-3,{"b":null}],"c":"\ud83d\ude00"},
		"registration":{"medium":"email","origin":"https://x/y","userAgent":"UA","tags":["a","b"],"activeCount":2,"totalCount":5,"more":[true,false]}}`
	ev, err := wire.ParseEvent([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want := walletsync.Event{
		ID: "eé\"1", Type: walletsync.TypeObserved, Platform: walletsync.PlatformGoogle, CustomerID: "Zoé 😀",
		PassID: "p-1", PassType: "loyalty", OccurredAt: 1772362800123, Installed: true, InstalledAt: 1769904000000,
		Source: "backfill", Registration: &walletsync.Registration{Medium: "email", Origin: "https://x/y", UserAgent: "UA",
			Tags: []string{"a", "b"}, ActiveCount: 2, TotalCount: 5, HasActiveCount: true, HasTotalCount: true},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("got  %+v %+v\nwant %+v %+v", ev, ev.Registration, want, want.Registration)
	}

	for name, c := range map[string]struct {
		in    string
		check func(walletsync.Event) bool
	}{
		"passId null is absent":        {with(map[string]any{"passId": null}), func(e walletsync.Event) bool { return e.PassID == "" }},
		"passId empty is absent":       {with(map[string]any{"passId": ""}), func(e walletsync.Event) bool { return e.PassID == "" }},
		"installed ignored on install": {with(map[string]any{"installed": false, "installedAt": "garbage-is-still-checked-if-a-time"}), nil},
		"last duplicate key wins":      {strings.Replace(good, `"platform":"apple"`, `"platform":"samsung","platform":"apple"`, 1), func(e walletsync.Event) bool { return e.Platform == walletsync.PlatformApple }},
		"escaped field name":           {strings.Replace(good, `"eventId"`, `"event\u0049d"`, 1), func(e walletsync.Event) bool { return e.ID == "e1" }},
		"whitespace around":            {" \t" + strings.ReplaceAll(good, ",", " ,\n ") + " \r\n", func(e walletsync.Event) bool { return e.CustomerID == "c-1" }},
		"uninstall":                    {with(map[string]any{"type": "uninstalled"}), func(e walletsync.Event) bool { return e.Type == walletsync.TypeUninstalled }},
		"lone surrogate replaced":      {strings.Replace(good, `"c-1"`, `"c\ud800x"`, 1), func(e walletsync.Event) bool { return e.CustomerID == "c\uFFFDx" }},
		"registration null":            {with(map[string]any{"registration": null}), func(e walletsync.Event) bool { return e.Registration == nil }},
		"observed false no installedAt": {with(map[string]any{"type": "observed", "installed": false}), func(e walletsync.Event) bool {
			return e.Type == walletsync.TypeObserved && !e.Installed && e.InstalledAt == 0
		}},
	} {
		ev, err := wire.ParseEvent([]byte(c.in))
		if name == "installed ignored on install" {
			// installedAt on a non-observed event is ignored only if it is
			// well formed: a malformed time is still a malformed record.
			if err == nil {
				t.Errorf("%s: accepted a malformed installedAt", name)
			}
			ev, err = wire.ParseEvent([]byte(with(map[string]any{"installed": false, "installedAt": "2026-01-01T00:00:00Z"})))
			if err != nil || ev.Installed || ev.InstalledAt != 0 {
				t.Errorf("%s: got %+v, %v", name, ev, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !c.check(ev) {
			t.Errorf("%s: got %+v", name, ev)
		}
	}
}

// AppendJSON is the canonical form: it parses back to the same event, and
// encoding/json reads it too.
func TestEventJSONRoundTrip(t *testing.T) {
	lines := []string{good,
		`{"eventId":"o","type":"observed","platform":"google","customerId":"a\"b\\c\u0001\n","passId":"p","passType":"t","occurredAt":"2026-03-01T10:00:00.5Z","installed":false,"source":"backfill","registration":{"tags":[],"totalCount":0}}`,
	}
	for _, l := range lines {
		ev, err := wire.ParseEvent([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		out := wire.AppendEvent(nil, &ev)
		if !json.Valid(out) {
			t.Fatalf("AppendJSON gave invalid JSON %s", out)
		}
		back, err := wire.ParseEvent(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(ev, back) {
			t.Errorf("round trip changed the event:\n%+v\n%+v", ev, back)
		}
	}
}

// The decoder's fast path takes what ingest writes, and answers as the
// general decoder does on everything else.
func TestCanonicalFastPath(t *testing.T) {
	var canonical [][]byte
	canonical = append(canonical, synth.Lines(synth.Default(20_000))...)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, e := range synth.Random(rng, 2000) {
		canonical = append(canonical, wire.AppendEvent(nil, &e))
	}
	full := walletsync.Event{ID: "é-1", Type: walletsync.TypeObserved, Platform: walletsync.PlatformGoogle, CustomerID: "Zoë <zoe@example.com>",
		PassID: "p/1", PassType: "gift card", OccurredAt: 1772359200123, Installed: true, InstalledAt: 1772359100000, Source: "backfill",
		Registration: &walletsync.Registration{Medium: "qr", Origin: "https://x.example/a?b=c", UserAgent: "Mozilla/5.0 (iPhone)",
			Tags: []string{"", "a", "日本"}, ActiveCount: 0, TotalCount: 9223372036854775807, HasActiveCount: true, HasTotalCount: true}}
	for _, r := range []*walletsync.Registration{full.Registration, {}, {Tags: []string{}}, {TotalCount: 3, HasTotalCount: true}, {UserAgent: "u"}} {
		e := full
		e.Registration = r
		canonical = append(canonical, wire.AppendEvent(nil, &e))
	}
	e := full
	e.Installed, e.InstalledAt, e.Registration, e.Source, e.PassType, e.PassID = false, 0, nil, "", "", ""
	canonical = append(canonical, wire.AppendEvent(nil, &e))
	dec := new(wire.Decoder)
	for _, line := range canonical {
		ev, ok, err := dec.ParseCanonical(line)
		if err != nil || !ok {
			t.Fatalf("%s: canonical %v, %v", line, ok, err)
		}
		checkCanonicalPath(t, line, ev, err)
	}

	// Not canonical: the same event (or error) through the general path.
	base := string(wire.AppendEvent(nil, &full))
	for _, in := range []string{
		" " + base, base + "\n", strings.Replace(base, `,"type"`, ` ,"type"`, 1),
		strings.Replace(base, `.123Z`, `.123+00:00`, 1), strings.Replace(base, `00.123Z`, `00.1230Z`, 1),
		strings.Replace(base, `"p/1"`, `"p\/1"`, 1), strings.Replace(base, `"é-1"`, `"\u00e9-1"`, 1),
		strings.Replace(base, `"totalCount":9223372036854775807`, `"totalCount":9223372036854775808`, 1),
		strings.Replace(base, `"activeCount":0`, `"activeCount":-0`, 1),
		strings.Replace(base, `"passId":"p/1"`, `"passId":""`, 1), strings.Replace(base, `,"passId":"p/1"`, ``, 1),
		strings.Replace(base, `"source":"backfill"`, `"source":"backfill","source":"x"`, 1),
		strings.Replace(base, `"installed":true`, `"installed":false`, 1), // installedAt on a not-installed observation: allowed
		strings.Replace(base, `"observed"`, `"installed"`, 1),             // installed fields on an install: ignored
		strings.Replace(base, `2026-03-01T10:00:00.123Z`, `2126-03-01T10:00:00.123Z`, 1),
		strings.Replace(base, `"qr"`, "\"q\xffr\"", 1), strings.Replace(base, `"gift card"`, "\"gift\tcard\"", 1),
		strings.Replace(base, `"tags":["","a","日本"]`, `"tags":["",]`, 1),
		base[:len(base)-1], base + "}",
	} {
		ev, err := wire.ParseEvent([]byte(in))
		checkCanonicalPath(t, []byte(in), ev, err)
	}
}

func TestHolderRoundTrip(t *testing.T) {
	h := wire.Holder{PassID: "p\"1\u00e9", CustomerID: "anna@example.com", At: 1_772_000_000_123, Source: "backfill"}
	b := wire.AppendHolder(nil, &h)
	got, err := wire.ParseHolder(b)
	if err != nil || got != h {
		t.Fatalf("%s: %+v %v", b, got, err)
	}
	for _, bad := range []string{`{}`, `{"passId":"p","customerId":"c","at":"yesterday"}`, `{"passId":"p","at":"2026-01-01T00:00:00Z"}`, `nope`} {
		if _, err := wire.ParseHolder([]byte(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
	if p, id, w := wire.SplitPassKey(wire.WaitingKey("pass", "ev\x00x")); p != "pass" || id != "ev\x00x" || !w {
		t.Errorf("waiting key split into %q %q %v", p, id, w)
	}
	if p, _, w := wire.SplitPassKey(wire.HolderKey("pass")); p != "pass" || w {
		t.Errorf("holder key split into %q %v", p, w)
	}
}

func TestWaitingRoundTrip(t *testing.T) {
	e := walletsync.Event{ID: "e1", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformGoogle, PassID: "p", OccurredAt: 1_772_000_000_000, Source: "webhook"}
	got, err := wire.ParseWaiting(wire.AppendWaiting(nil, &e))
	if err != nil || got.ID != e.ID || got.PassID != "p" || got.CustomerID != "" || got.Type != e.Type {
		t.Fatalf("%+v %v", got, err)
	}
	e.PassID = ""
	if _, err := wire.ParseWaiting(wire.AppendWaiting(nil, &e)); err == nil {
		t.Error("a waiting event without a pass parsed")
	}
	e.PassID, e.CustomerID = "p", "c"
	if _, err := wire.ParseWaiting(wire.AppendEvent(nil, &e)); err == nil {
		t.Error("a waiting event with a customer parsed")
	}
}
