// Package queries holds the insight queries of SPEC §7: the request (Query,
// ParseQuery), the answer (Row, Answer, Columns), the Engine interface, and
// the shaping of rows that both engines share: ClickHouse
// (queries/clickhouse) and the Parquet archive in process
// (queries/embedded).
package queries

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The insight queries of SPEC §7.
const (
	Daily         = "daily"
	StatusMix     = "status"
	InstalledBase = "installed-base"
	Retention     = "retention"
	Funnel        = "funnel" // issue 18
)

// MaxRange is the longest from..to an insight query accepts.
const MaxRange = 3 * 366 * 24 * time.Hour

// Query is a validated insight request: From inclusive, To exclusive, UTC days.
type Query struct {
	Name     string
	From, To time.Time
	By       string // daily only: "", "passType", "medium" or "source"
}

// Row is one answer row; its keys are SPEC §7's column names.
type Row map[string]any

// Answer is the JSON answer of SPEC §7.
type Answer struct {
	Query string `json:"query"`
	From  string `json:"from"`
	To    string `json:"to"`
	By    string `json:"by,omitempty"`
	Rows  []Row  `json:"rows"`
}

// Engine answers insight queries; ClickHouse is one, the embedded engine
// over the Parquet archive (issue 6) the other.
type Engine interface {
	Insight(ctx context.Context, q Query) (Answer, error)
}

// QueryError is a request that can never be answered: HTTP 400, exit 2.
type QueryError struct{ Msg string }

func (e *QueryError) Error() string { return e.Msg }

// ErrNotImplemented: the engine does not answer this query (yet).
var ErrNotImplemented = errors.New("not implemented by this engine yet")

// ByFields are the values of daily's by parameter.
var ByFields = []string{"passType", "medium", "source"}

// ParseQuery validates a request's parameters.
func ParseQuery(name, from, to, by string) (Query, error) {
	q := Query{Name: name, By: by}
	switch name {
	case Daily, StatusMix, InstalledBase, Retention, Funnel:
	default:
		return q, &QueryError{fmt.Sprintf("unknown insight %q: want daily, status, installed-base, retention or funnel", name)}
	}
	var err error
	if q.From, err = time.Parse(time.DateOnly, from); err != nil {
		return q, &QueryError{fmt.Sprintf("from: want a day as YYYY-MM-DD, got %q", from)}
	}
	if q.To, err = time.Parse(time.DateOnly, to); err != nil {
		return q, &QueryError{fmt.Sprintf("to: want a day as YYYY-MM-DD, got %q", to)}
	}
	if !q.From.Before(q.To) {
		return q, &QueryError{"from must be before to (to is exclusive)"}
	}
	if q.To.Sub(q.From) > MaxRange {
		return q, &QueryError{"the range is over 3 years"}
	}
	if by != "" && (name != Daily || !slices.Contains(ByFields, by)) {
		if name != Daily {
			return q, &QueryError{"by applies to the daily insight only"}
		}
		return q, &QueryError{fmt.Sprintf("by: want passType, medium or source, got %q", by)}
	}
	return q, nil
}

// Days lists the UTC days of [From, To).
func (q Query) Days() []time.Time {
	var out []time.Time
	for d := q.From; d.Before(q.To); d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}

// Weeks lists the Mondays of the UTC weeks that [From, To) touches.
func (q Query) Weeks() []time.Time {
	first := q.From.AddDate(0, 0, -((int(q.From.Weekday()) + 6) % 7))
	var out []time.Time
	for w := first; w.Before(q.To); w = w.AddDate(0, 0, 7) {
		out = append(out, w)
	}
	return out
}

// Answer is q's answer with rows (none: an empty list).
func (q Query) Answer(rows []Row) Answer {
	if rows == nil {
		rows = []Row{}
	}
	return Answer{Query: q.Name, From: q.From.Format(time.DateOnly), To: q.To.Format(time.DateOnly), By: q.By, Rows: rows}
}

// DailyCounts are one daily row's counts: installs, uninstalls (device
// removals not among them) and device removals (SPEC §3, §7).
type DailyCounts [3]int64

// DailyRows zero-fills daily counts, keyed by day (YYYY-MM-DD), platform
// and by value: every day × platform × by value seen (just "" without by),
// sorted by day, platform, by value. net is installs − uninstalls: a
// device removal leaves the pass installed on another device, so it moves
// no net.
func DailyRows(q Query, counts map[[3]string]DailyCounts) []Row {
	byValues := map[string]bool{}
	for k := range counts {
		byValues[k[2]] = true
	}
	if len(byValues) == 0 {
		byValues[""] = true
	}
	bys := make([]string, 0, len(byValues))
	for b := range byValues {
		bys = append(bys, b)
	}
	slices.Sort(bys)
	var rows []Row
	for _, d := range q.Days() {
		day := d.Format(time.DateOnly)
		for _, p := range []string{"apple", "google"} {
			for _, b := range bys {
				c := counts[[3]string{day, p, b}]
				row := Row{"day": day, "platform": p, "installs": c[0], "uninstalls": c[1], "net": c[0] - c[1], "deviceRemovals": c[2]}
				if q.By != "" {
					row[q.By] = b
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// Columns are the row keys of q's answer in display order. daily's
// deviceRemovals (issue 18) comes last, so that a CSV reader of the columns
// before it by position reads them as before.
func Columns(q Query) []string {
	switch q.Name {
	case Daily:
		if q.By != "" {
			return []string{"day", "platform", q.By, "installs", "uninstalls", "net", "deviceRemovals"}
		}
		return []string{"day", "platform", "installs", "uninstalls", "net", "deviceRemovals"}
	case StatusMix:
		return []string{"walletStatus", "customers"}
	case InstalledBase:
		return []string{"day", "platform", "installed"}
	case Retention:
		return []string{"cohortWeek", "platform", "installed", "after1d", "after7d", "after30d"}
	case Funnel:
		return []string{"cohortWeek", "passType", "issued", "within1d", "within7d", "within30d"}
	}
	return nil
}

// PlatformDay keys installed-base changes: platform, days since 1970-01-01.
type PlatformDay struct {
	Platform string
	Day      uint32
}

// InstalledBaseRows turns per-day changes of the number of installed
// registers into the base at the end of every day of the range: changes
// before from make the starting base.
func InstalledBaseRows(q Query, delta map[PlatformDay]int64) []Row {
	first := uint32(q.From.Unix() / 86400)
	base := map[string]int64{}
	for k, n := range delta {
		if k.Day < first {
			base[k.Platform] += n
		}
	}
	var out []Row
	for _, day := range q.Days() {
		d := uint32(day.Unix() / 86400)
		for _, p := range []string{"apple", "google"} {
			base[p] += delta[PlatformDay{p, d}]
			out = append(out, Row{"day": day.Format(time.DateOnly), "platform": p, "installed": base[p]})
		}
	}
	return out
}

// WeekPlatform keys retention cohorts: the Monday as days since 1970-01-01.
type WeekPlatform struct {
	Week     uint32
	Platform string
}

// RetentionRows lays cohorts out over every week of the range:
// installed, after1d, after7d, after30d.
func RetentionRows(q Query, got map[WeekPlatform][4]int64) []Row {
	var out []Row
	for _, wk := range q.Weeks() {
		w := uint32(wk.Unix() / 86400)
		for _, p := range []string{"apple", "google"} {
			c := got[WeekPlatform{w, p}]
			out = append(out, Row{"cohortWeek": wk.Format(time.DateOnly), "platform": p,
				"installed": c[0], "after1d": c[1], "after7d": c[2], "after30d": c[3]})
		}
	}
	return out
}

// FunnelDays are the funnel's horizons: a pass counts within N days if it
// was installed at most N×24 h after its issue (SPEC §7).
func FunnelDays() [3]int64 { return [3]int64{1, 7, 30} }

// WeekPassType keys funnel cohorts: the Monday as days since 1970-01-01,
// and the passType of the pass's earliest issued event.
type WeekPassType struct {
	Week     uint32
	PassType string
}

// FunnelRows lays cohorts out: issued, within1d, within7d, within30d per
// (week, passType) with at least one issued pass, sorted by week, then
// passType (byte order). Unlike the other queries' it has no zero rows:
// passTypes are open-ended, so a grid of them would be mostly zeros.
func FunnelRows(got map[WeekPassType][4]int64) []Row {
	keys := make([]WeekPassType, 0, len(got))
	for k, c := range got {
		if c[0] > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b WeekPassType) int {
		return cmp.Or(cmp.Compare(a.Week, b.Week), strings.Compare(a.PassType, b.PassType))
	})
	out := make([]Row, 0, len(keys))
	for _, k := range keys {
		c := got[k]
		out = append(out, Row{"cohortWeek": time.Unix(int64(k.Week)*86400, 0).UTC().Format(time.DateOnly), "passType": k.PassType,
			"issued": c[0], "within1d": c[1], "within7d": c[2], "within30d": c[3]})
	}
	return out
}
