package clickhouse

import (
	"regexp"
	"strings"
	"testing"
)

// The names exported for the insight queries are the migrations' own.
func TestLayoutNamesAreTheMigrations(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, m := range ms {
		all.WriteString(m.SQL)
	}
	for _, table := range []string{EventsTable, RetentionTable, StatusCurrentTable} {
		if !strings.Contains(all.String(), "CREATE TABLE IF NOT EXISTS "+table+" (") {
			t.Errorf("no migration creates %s", table)
		}
	}
	for _, col := range []string{PassTypeColumn, MediumColumn, SourceColumn} {
		if !regexp.MustCompile(`(?m)^\s+` + col + `\s+String,$`).MatchString(ms[0].SQL) {
			t.Errorf("%s is not a String column of %s", col, EventsTable)
		}
		if !regexp.MustCompile(`[ (]` + col + `,`).MatchString(insertEvents) {
			t.Errorf("the sink does not insert %s", col)
		}
	}
}

func TestInMonths(t *testing.T) {
	if got := InMonths(nil); got != "0" {
		t.Errorf("no months: %q", got)
	}
	const march = "(occurred_ms >= 1772323200000 AND occurred_ms < 1775001600000 AND occurred_at >= toDateTime(1772323200) AND occurred_at < toDateTime(1775001600))"
	if got := InMonths([]uint32{202603}); got != "("+march+")" {
		t.Errorf("March 2026: %q", got)
	}
	if got := InMonths([]uint32{202603, 202604}); !strings.HasPrefix(got, "("+march+" OR (occurred_ms >= 1775001600000 AND") {
		t.Errorf("March and April 2026: %q", got)
	}
}
