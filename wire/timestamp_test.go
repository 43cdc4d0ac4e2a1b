package wire

import (
	"testing"
	"time"

	"github.com/walletsync/walletsync"
)

func TestParseTime(t *testing.T) {
	ms := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	ok := []struct{ in, want string }{
		{"2026-03-01T10:00:00Z", "2026-03-01T10:00:00.000Z"},
		{"2026-03-01T10:00:00.5Z", "2026-03-01T10:00:00.500Z"},
		{"2026-03-01T10:00:00.123Z", "2026-03-01T10:00:00.123Z"},
		{"2026-03-01T10:00:00.123999999999Z", "2026-03-01T10:00:00.123Z"}, // truncated, not rounded
		{"2026-03-01T12:00:00.500999+01:00", "2026-03-01T11:00:00.500Z"},
		{"2026-03-01T00:30:00-05:30", "2026-03-01T06:00:00.000Z"},
		{"2024-02-29T23:59:59Z", "2024-02-29T23:59:59.000Z"},
		{"2000-01-01T00:00:00Z", "2000-01-01T00:00:00.000Z"},
		{"2000-01-01T01:00:00+01:00", "2000-01-01T00:00:00.000Z"},
		{"2099-12-31T23:59:59.999Z", "2099-12-31T23:59:59.999Z"},
	}
	for _, c := range ok {
		got, err := ParseTime([]byte(c.in))
		if err != nil {
			t.Errorf("ParseTime(%q): %v", c.in, err)
			continue
		}
		if got != ms(c.want) || FormatTime(got) != c.want {
			t.Errorf("ParseTime(%q) = %s, want %s", c.in, FormatTime(got), c.want)
		}
	}
	bad := []struct {
		in   string
		want error
	}{
		{"2026-03-01T10:00:00", errTimeSyntax},
		{"2026-03-01 10:00:00Z", errTimeSyntax},
		{"2026-03-01t10:00:00z", errTimeSyntax},
		{"2026-03-01T10:00Z", errTimeSyntax},
		{"2026-03-01T10:00:00.Z", errTimeSyntax},
		{"2026-03-01T10:00:00+0100", errTimeSyntax},
		{"2026-03-01T10:00:00+01:00:00", errTimeSyntax},
		{"2026-03-01T10:00:00ZZ", errTimeSyntax},
		{"26-03-01T10:00:00Z", errTimeSyntax},
		{"2026-3-01T10:00:00Z", errTimeSyntax},
		{"+026-03-01T10:00:00Z", errTimeSyntax},
		{"", errTimeSyntax},
		{"2026-02-30T00:00:00Z", errTimeDate},
		{"2025-02-29T00:00:00Z", errTimeDate},
		{"2100-02-29T00:00:00Z", errTimeDate},
		{"2026-13-01T00:00:00Z", errTimeDate},
		{"2026-00-01T00:00:00Z", errTimeDate},
		{"2026-04-31T00:00:00Z", errTimeDate},
		{"2026-03-01T24:00:00Z", errTimeClock},
		{"2026-03-01T23:60:00Z", errTimeClock},
		{"2026-03-01T23:59:60Z", errTimeClock},
		{"2026-03-01T10:00:00+24:00", errTimeClock},
		{"1999-12-31T23:59:59.999Z", walletsync.ErrTimeRange},
		{"2000-01-01T00:30:00+01:00", walletsync.ErrTimeRange},
		{"2100-01-01T00:00:00Z", walletsync.ErrTimeRange},
		{"1970-01-01T00:00:00Z", walletsync.ErrTimeRange},
	}
	for _, c := range bad {
		if _, err := ParseTime([]byte(c.in)); err != c.want {
			t.Errorf("ParseTime(%q) error = %v, want %v", c.in, err, c.want)
		}
	}
}

// AppendTime agrees with the time package across the whole range, at
// random instants and at every day boundary.
func TestAppendTimeAgreesWithTimePackage(t *testing.T) {
	check := func(ms int64) {
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
		if got := FormatTime(ms); got != want {
			t.Fatalf("FormatTime(%d) = %s, want %s", ms, got, want)
		}
	}
	for d := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < 2100; d = d.AddDate(0, 0, 1) {
		check(d.UnixMilli())
		check(d.UnixMilli() + 86_399_999)
	}
	for ms := int64(0); ms < walletsync.MaxTime; ms += 9_876_543_211 {
		check(ms)
	}
	check(walletsync.MaxTime) // outside: falls back to the time package
}

// Every day of the accepted range parses to what the standard library says.
func TestParseTimeAgreesWithTimePackage(t *testing.T) {
	for d := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < 2100; d = d.AddDate(0, 0, 1) {
		s := d.Add(13*time.Hour + 7*time.Minute + 9*time.Second + 42*time.Millisecond).Format("2006-01-02T15:04:05.000Z07:00")
		got, err := ParseTime([]byte(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if want := d.UnixMilli() + (13*3600+7*60+9)*1000 + 42; got != want {
			t.Fatalf("%s: got %d want %d", s, got, want)
		}
	}
}
