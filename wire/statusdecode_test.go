package wire_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/wire"
)

// The encoding/json readers the purpose-made ones replaced, kept as the
// oracle: on every record the processors write, and on the same records
// reordered, re-spaced and with unknown fields, both must agree.
type oracleRecord struct {
	CustomerID string `json:"customerId"`
	Version    uint64 `json:"version"`
	Registers  []struct {
		PassID   string `json:"passId"`
		Platform string `json:"platform"`
		E        *struct {
			EventID    string `json:"eventId"`
			Type       string `json:"type"`
			OccurredAt string `json:"occurredAt"`
		} `json:"e"`
		Installs *[]int64 `json:"installs"`
		O        *struct {
			EventID     string `json:"eventId"`
			Installed   bool   `json:"installed"`
			InstalledAt string `json:"installedAt"`
			OccurredAt  string `json:"occurredAt"`
		} `json:"o"`
	} `json:"registers"`
}

func oracleParseStateRecord(b []byte) (string, uint64, []walletsync.Register, bool) {
	var r oracleRecord
	if json.Unmarshal(b, &r) != nil || r.CustomerID == "" {
		return "", 0, nil, false
	}
	regs := make([]walletsync.Register, 0, len(r.Registers))
	for _, rj := range r.Registers {
		reg := walletsync.Register{PassID: rj.PassID}
		switch rj.Platform {
		case "apple":
			reg.Platform = walletsync.PlatformApple
		case "google":
			reg.Platform = walletsync.PlatformGoogle
		default:
			return "", 0, nil, false
		}
		if rj.E != nil {
			at, err := wire.ParseTime([]byte(rj.E.OccurredAt))
			if err != nil || rj.E.EventID == "" {
				return "", 0, nil, false
			}
			reg.LastEventID, reg.LastEventAt, reg.LastEventUninstalled = rj.E.EventID, at, rj.E.Type == "uninstalled"
			if rj.Installs == nil {
				reg.InstallsUnknown = true
			} else if len(*rj.Installs) > 0 {
				reg.Installs = *rj.Installs
			}
		}
		if rj.O != nil {
			at, err := wire.ParseTime([]byte(rj.O.OccurredAt))
			if err != nil || rj.O.EventID == "" {
				return "", 0, nil, false
			}
			reg.ObservationID, reg.ObservationAt, reg.ObservationInstalled = rj.O.EventID, at, rj.O.Installed
			if rj.O.InstalledAt != "" {
				if reg.ObservationInstalledAt, err = wire.ParseTime([]byte(rj.O.InstalledAt)); err != nil {
					return "", 0, nil, false
				}
			}
		}
		if reg.LastEventID == "" && reg.ObservationID == "" {
			return "", 0, nil, false
		}
		regs = append(regs, reg)
	}
	return r.CustomerID, r.Version, regs, true
}

func oracleParseStatus(b []byte) (walletsync.Status, bool) {
	var j struct {
		CustomerID                                      string `json:"customerId"`
		WalletStatus, Apple, Google, Changed, LastEvent *string
		Version                                         uint64 `json:"version"`
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &j) != nil || json.Unmarshal(b, &raw) != nil || j.CustomerID == "" {
		return walletsync.Status{}, false
	}
	str := func(k string) (*string, bool) {
		v, ok := raw[k]
		if !ok || string(v) == "null" {
			return nil, true
		}
		var s string
		return &s, json.Unmarshal(v, &s) == nil
	}
	s := walletsync.Status{CustomerID: j.CustomerID, Version: j.Version}
	w, ok := str("walletStatus")
	if !ok || w == nil {
		return s, false
	}
	switch *w {
	case "none":
	case "apple":
		s.Wallet = walletsync.WalletApple
	case "google":
		s.Wallet = walletsync.WalletGoogle
	case "both":
		s.Wallet = walletsync.WalletBoth
	default:
		return s, false
	}
	for k, dst := range map[string]*int64{"appleWalletInstalledAt": &s.AppleInstalledAt, "googleWalletInstalledAt": &s.GoogleInstalledAt, "walletLastChangedAt": &s.LastChangedAt,
		"firstInstalledAt": &s.FirstInstalledAt, "passIssuedAt": &s.PassIssuedAt} {
		v, ok := str(k)
		if !ok {
			return s, false
		}
		if v != nil {
			at, err := wire.ParseTime([]byte(*v))
			if err != nil {
				return s, false
			}
			*dst = at
		}
	}
	l, ok := str("walletLastEvent")
	if !ok {
		return s, false
	}
	if l != nil {
		switch *l {
		case "installed":
			s.LastEvent = walletsync.LastInstalled
		case "uninstalled":
			s.LastEvent = walletsync.LastUninstalled
		default:
			return s, false
		}
	}
	return s, true
}

func sameRegisters(a, b []walletsync.Register) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}

// variants are a record as the processors write it, and the same record as
// other writers could: keys in another order and indented, and with unknown
// fields at every level.
func variants(t *testing.T, rec []byte) [][]byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec, &m); err != nil {
		t.Fatalf("%s: %v", rec, err)
	}
	sorted, _ := json.MarshalIndent(m, " ", "\t")
	m["extra"] = []any{map[string]any{"x": nil}, 1.5e3, "é\u2028"}
	if regs, ok := m["registers"].([]any); ok {
		for _, r := range regs {
			r := r.(map[string]any)
			r["note"] = map[string]any{"deep": []any{true}}
			for _, k := range []string{"e", "o"} {
				if sub, ok := r[k].(map[string]any); ok {
					sub["seen"] = false
				}
			}
		}
	}
	extra, _ := json.Marshal(m)
	return [][]byte{rec, sorted, extra}
}

func TestStatusDecodersAgreeWithEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	n := 0
	for range 300 {
		evs := synth.Random(rng, 30)
		f := walletsync.NewFold()
		for i := range evs {
			f.Apply(&evs[i])
		}
		for _, s := range f.Statuses() {
			for _, rec := range [][]byte{wire.AppendStateRecord(nil, &s, f.Registers(s.CustomerID)), wire.AppendStatus(nil, &s, true)} {
				for _, v := range variants(t, rec) {
					n++
					if st, ok := agreeWithOracle(t, v); !ok || st != s {
						t.Fatalf("ParseStatus(%s) = %+v, %v; want %+v", v, st, ok, s)
					}
				}
			}
		}
	}
	t.Logf("%d records agreed", n)
}

// Records both readers must refuse or read alike: nulls, wrong types,
// missing and broken fields, syntax errors.
func TestStatusDecodersOnOddRecords(t *testing.T) {
	const e = `"e":{"eventId":"a","type":"installed","occurredAt":"2026-03-01T10:00:00Z"}`
	const o = `"o":{"eventId":"b","installed":true,"installedAt":"2026-02-01T10:00:00Z","occurredAt":"2026-03-01T10:00:00Z"}`
	records := []string{
		`{"customerId":"c","version":3,"registers":[{"passId":"p","platform":"apple",` + e + `,"installs":[1,2]}]}`,
		`{"customerId":"c","version":3,"registers":[{"passId":"p","platform":"apple",` + e + `,"installs":null}]}`,
		`{"customerId":"c","version":3,"registers":[{"passId":"p","platform":"apple",` + e + `,"installs":[]}]}`,
		`{"customerId":"c","version":3,"registers":[{"passId":"p","platform":"google",` + o + `}]}`,
		`{"customerId":"c","version":3,"registers":[{"passId":"p","platform":"google",` + o + `,` + e + `,"installs":[5]}]}`,
		`{"customerId":"c","version":null,"registers":null}`,
		`{"customerId":"c","registers":[]}`,
		`{"customerId":"c","registers":[{"passId":null,"platform":"apple",` + e + `,"o":null}]}`,
		` {"customerId" : "c\u00e9\n" , "registers" : [ ] } `,
		`{"customerId":"c","registers":[{"platform":"apple","e":{"eventId":"a","occurredAt":null}}]}`,
		`{"customerId":"c","registers":[{"platform":"apple","e":{"eventId":"","occurredAt":"2026-03-01T10:00:00Z"}}]}`,
		`{"customerId":"c","registers":[{"platform":"apple","o":{"eventId":"b","installed":"yes","occurredAt":"2026-03-01T10:00:00Z"}}]}`,
		`{"customerId":"c","registers":[{"platform":"apple",` + e + `,"installs":[1.5]}]}`,
		`{"customerId":"c","registers":[{"platform":"apple",` + e + `,"installs":"1"}]}`,
		`{"customerId":"c","version":-1,"registers":[]}`,
		`{"customerId":"c","version":"1","registers":[]}`,
		`{"customerId":"c","registers":{}}`,
		`{"customerId":"c","registers":[{"platform":"apple"}]}`,
		`{"customerId":"c","registers":[{"platform":"samsung",` + e + `}]}`,
		`{"customerId":7}`, `{"customerId":""}`, `{}`, `[]`, `nope`, `{"customerId":"c"`, `{"customerId":"c"}x`,
		`{"customerId":"c","registers":[{"platform":"apple",` + e + `},]}`,
		// Status records (SPEC §4).
		`{"customerId":"c","walletStatus":"both","appleWalletInstalledAt":"2026-01-03T09:00:00.000Z","googleWalletInstalledAt":"2026-01-05T18:30:12.250Z","walletLastChangedAt":"2026-01-05T18:30:12.250Z","walletLastEvent":"installed","version":7}`,
		`{"customerId":"c","walletStatus":"none","appleWalletInstalledAt":null,"walletLastEvent":null}`,
		`{"customerId":"c","walletStatus":null}`, `{"customerId":"c","walletStatus":""}`, `{"customerId":"c","walletStatus":"apple","walletLastEvent":""}`,
		`{"customerId":"c","walletStatus":"apple","walletLastChangedAt":"yesterday"}`, `{"customerId":"c","walletStatus":"apple","walletLastChangedAt":5}`,
	}
	for _, r := range records {
		agreeWithOracle(t, []byte(r))
	}
}

// agreeWithOracle holds both readers to the encoding/json ones on b, and
// returns the status ParseStatus read, if it took b.
func agreeWithOracle(t *testing.T, b []byte) (walletsync.Status, bool) {
	t.Helper()
	rs, regs, err := wire.ParseStateRecord(b)
	oid, oversion, oregs, ok := oracleParseStateRecord(b)
	if (err == nil) != ok || rs.CustomerID != oid || rs.Version != oversion || !sameRegisters(regs, oregs) {
		t.Errorf("ParseStateRecord(%s) = %+v %+v %v\nencoding/json: %q %d %+v %v", b, rs, regs, err, oid, oversion, oregs, ok)
	}
	st, err := wire.ParseStatus(b)
	ost, ok := oracleParseStatus(b)
	if (err == nil) != ok || (ok && st != ost) {
		t.Errorf("ParseStatus(%s) = %+v %v\nencoding/json: %+v %v", b, st, err, ost, ok)
	}
	return st, err == nil
}

// FuzzParseStateRecord: no input panics, and a record that is accepted
// is written back by AppendStateRecord into one read as the same
// customer, version and registers.
func FuzzParseStateRecord(f *testing.F) {
	for _, s := range []string{
		`{"customerId":"c","walletStatus":"apple","appleWalletInstalledAt":"2026-03-01T10:00:00.000Z","googleWalletInstalledAt":null,"walletLastChangedAt":"2026-03-01T10:00:00.000Z","walletLastEvent":"installed","version":1,"registers":[{"passId":"p","platform":"apple","e":{"eventId":"a","type":"installed","occurredAt":"2026-03-01T10:00:00.000Z"},"installs":[1772359200000]}]}`,
		`{"customerId":"c","version":2,"registers":[{"passId":"","platform":"google","o":{"eventId":"b","installed":false,"occurredAt":"2026-03-01T10:00:00Z"}}]}`,
		`{"customerId":"c","registers":[{"platform":"apple","e":{"eventId":"a","type":"uninstalled","occurredAt":"2026-03-01T10:00:00Z"}}],"x":[{}]}`,
		`{}`, `nope`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, regs, err := wire.ParseStateRecord(b)
		if err != nil {
			return
		}
		f := walletsync.NewFold()
		st := f.Restore(rs, regs)
		st.Version = rs.Version // kept even for a customer without registers
		back := wire.AppendStateRecord(nil, &st, regs)
		rs2, regs2, err := wire.ParseStateRecord(back)
		if err != nil || rs2.CustomerID != rs.CustomerID || rs2.Version != rs.Version || rs2.FirstInstalledAt != st.FirstInstalledAt ||
			rs2.PassIssuedAt != st.PassIssuedAt || !sameRegisters(regs2, regs) || !bytes.Equal(wire.AppendStateRecord(nil, &st, regs2), back) {
			t.Fatalf("%s read as %+v %+v, written as %s, read back as %+v %+v (%v)", b, rs, regs, back, rs2, regs2, err)
		}
	})
}

// BenchmarkParseStateRecord: reading the wallet.state records a restart
// reads, one a customer, against the encoding/json reader it replaced.
func BenchmarkParseStateRecord(b *testing.B) {
	evs := synth.Events(synth.Default(200_000))
	f := walletsync.NewFold()
	for i := range evs {
		f.Apply(&evs[i])
	}
	var recs [][]byte
	for _, s := range f.Statuses() {
		recs = append(recs, wire.AppendStateRecord(nil, &s, f.Registers(s.CustomerID)))
	}
	bytes := 0
	for _, r := range recs {
		bytes += len(r)
	}
	b.Logf("%d records, %d bytes on average", len(recs), bytes/len(recs))
	for _, c := range []struct {
		name  string
		parse func([]byte) bool
	}{
		{"walletsync", func(r []byte) bool { _, _, err := wire.ParseStateRecord(r); return err == nil }},
		{"encoding_json_baseline", func(r []byte) bool { _, _, _, ok := oracleParseStateRecord(r); return ok }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !c.parse(recs[i]) {
					b.Fatalf("%s refused", recs[i])
				}
				if i++; i == len(recs) {
					i = 0
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
