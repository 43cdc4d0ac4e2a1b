package queries_test

import (
	"testing"

	"github.com/walletsync/walletsync/queries"
)

func TestParseQueryRejects(t *testing.T) {
	for _, c := range []struct{ name, from, to, by, want string }{
		{"weekly", "2026-01-01", "2026-02-01", "", `unknown insight "weekly": want daily, status, installed-base, retention or funnel`},
		{"daily", "2026-1-1", "2026-02-01", "", `from: want a day as YYYY-MM-DD, got "2026-1-1"`},
		{"daily", "2026-01-01", "", "", `to: want a day as YYYY-MM-DD, got ""`},
		{"daily", "2026-02-01", "2026-02-01", "", "from must be before to (to is exclusive)"},
		{"daily", "2020-01-01", "2024-01-01", "", "the range is over 3 years"},
		{"daily", "2026-01-01", "2026-02-01", "color", `by: want passType, medium or source, got "color"`},
		{"status", "2026-01-01", "2026-02-01", "medium", "by applies to the daily insight only"},
		{"funnel", "2026-01-01", "2026-02-01", "passType", "by applies to the daily insight only"},
	} {
		_, err := queries.ParseQuery(c.name, c.from, c.to, c.by)
		if err == nil || err.Error() != c.want {
			t.Errorf("ParseQuery(%q, %q, %q, %q) = %v, want %q", c.name, c.from, c.to, c.by, err, c.want)
		}
	}
	if _, err := queries.ParseQuery("daily", "2023-01-01", "2026-01-01", "medium"); err != nil {
		t.Errorf("three years exactly: %v", err)
	}
}
