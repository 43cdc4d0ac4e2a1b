// Package clickhouse answers the insight queries (package queries) from the
// tables the ClickHouse sink fills, through the sink's own names and dirty
// months (sinks/clickhouse). Callers may import it as chquery.
package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/queries"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
)

// Engine answers insight queries from the tables the ClickHouse sink
// fills (sinks/clickhouse/migrations).
type Engine struct{ Conn driver.Conn }

// byColumn maps daily's by parameter to a column; only these are ever
// spliced into SQL.
var byColumn = map[string]string{"": "''", "passType": chsink.PassTypeColumn, "medium": chsink.MediumColumn, "source": chsink.SourceColumn}

// byColumns are all of them, as daily reads them.
const byColumns = chsink.PassTypeColumn + ", " + chsink.MediumColumn + ", " + chsink.SourceColumn

// Insight runs q.
func (c *Engine) Insight(ctx context.Context, q queries.Query) (queries.Answer, error) {
	switch q.Name {
	case queries.Daily:
		return c.daily(ctx, q)
	case queries.StatusMix:
		return c.status(ctx, q)
	case queries.InstalledBase:
		return c.installedBase(ctx, q)
	case queries.Retention:
		return c.retention(ctx, q)
	case queries.Funnel:
		return c.funnel(ctx, q)
	}
	return queries.Answer{}, fmt.Errorf("%s: %w", q.Name, queries.ErrNotImplemented)
}

// daily counts installed/uninstalled events by their occurredAt UTC day,
// each event once (see once): device removals (device_removal, which the
// sink writes from walletsync.Event.DeviceRemoval) apart from the
// uninstalls; issued events and observations not at all, nor their by
// values. The day is computed from milliseconds, not with toDate, which
// would use the server's time zone. The occurred_at conditions let
// ClickHouse skip whole partitions.
func (c *Engine) daily(ctx context.Context, q queries.Query) (queries.Answer, error) {
	dirty, err := chsink.DirtyMonths(ctx, c.Conn)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("daily: %w", err)
	}
	const inRange = `occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
		AND occurred_ms >= ? AND occurred_ms < ? AND type IN ('installed', 'uninstalled')`
	sql := fmt.Sprintf(`SELECT toUInt32(intDiv(occurred_ms, 86400000)) AS d, toString(platform) AS p, %[1]s AS b,
		countIf(type = 'installed') AS i, countIf(type = 'uninstalled' AND device_removal = 0) AS u,
		countIf(type = 'uninstalled' AND device_removal = 1) AS r
	FROM %[2]s
	GROUP BY d, p, b`, byColumn[q.By], once(chsink.EventsTable, "occurred_ms, platform, type, device_removal, "+byColumns, inRange, dirty))
	args := []any{q.From.Unix(), q.To.Unix(), q.From.UnixMilli(), q.To.UnixMilli()}
	rows, err := c.Conn.Query(ctx, sql, append(args, args...)...)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("daily: %w", err)
	}
	defer rows.Close()
	counts := map[[3]string]queries.DailyCounts{}
	for rows.Next() {
		var d uint32
		var p, b string
		var i, u, r uint64
		if err := rows.Scan(&d, &p, &b, &i, &u, &r); err != nil {
			return queries.Answer{}, fmt.Errorf("daily: %w", err)
		}
		day := time.Unix(int64(d)*86400, 0).UTC().Format(time.DateOnly)
		counts[[3]string{day, p, b}] = queries.DailyCounts{int64(i), int64(u), int64(r)}
	}
	if err := rows.Err(); err != nil {
		return queries.Answer{}, fmt.Errorf("daily: %w", err)
	}
	return q.Answer(queries.DailyRows(q, counts)), nil
}

// once is a FROM source: table's cols of the rows matching cond, each row
// once. Rows of the dirty months (those that may hold a row twice: the sink
// marks them before any insert that could repeat rows, see sinks/clickhouse)
// are read with FINAL, which counts such a row once; all others with a plain
// scan, about five times faster on ClickHouse 18.16, where FINAL merges all
// parts in a single stream. cond appears twice: its arguments are passed
// twice. The dirty months' condition is literal time ranges
// (chsink.InMonths), which also let a FINAL part read only their
// partitions.
func once(table, cols, cond string, dirty []uint32) string {
	inDirty := chsink.InMonths(dirty)
	return fmt.Sprintf(`(
		SELECT %[2]s FROM %[1]s WHERE %[3]s AND NOT %[4]s
	UNION ALL
		SELECT %[2]s FROM (SELECT %[2]s FROM %[1]s FINAL WHERE %[3]s AND %[4]s)
	)`, table, cols, cond, inDirty)
}

// status counts customers by their current walletStatus; FINAL keeps the
// newest version per customer even before merges ran.
func (c *Engine) status(ctx context.Context, q queries.Query) (queries.Answer, error) {
	rows, err := c.Conn.Query(ctx, `SELECT toString(wallet_status) AS s, count() FROM `+chsink.StatusCurrentTable+` FINAL GROUP BY s`)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("status: %w", err)
	}
	defer rows.Close()
	n := map[string]int64{}
	for rows.Next() {
		var s string
		var c uint64
		if err := rows.Scan(&s, &c); err != nil {
			return queries.Answer{}, fmt.Errorf("status: %w", err)
		}
		n[s] = int64(c)
	}
	if err := rows.Err(); err != nil {
		return queries.Answer{}, fmt.Errorf("status: %w", err)
	}
	var out []queries.Row
	for _, w := range walletsync.WalletStatuses {
		out = append(out, queries.Row{"walletStatus": w.String(), "customers": n[w.String()]})
	}
	return q.Answer(out), nil
}

// registerEvent is true for the rows that can be their register's E (SPEC
// §3): installs and uninstalls, but not device removals, which never
// become E. Observations are not (installed-base and retention ignore
// them), nor issued events, which belong to no register.
const registerEvent = `type IN ('installed', 'uninstalled') AND device_removal = 0`

// unknownRegisters are the registers (customer and pass) with an install or
// uninstall row whose change the processors did not know: a late event, or
// a row the sink did not write. installed-base and retention take them the
// slow way, every other register from the changes stored at insert time.
// An issued event's change is never known (it has none), so rows other
// than registerEvent's would send every issued pass the slow way.
const unknownRegisters = `(SELECT register FROM ` + chsink.EventsTable + ` WHERE base_known = 0 AND ` + registerEvent + `)`

// installedBase counts, per platform and day, the registers whose E (the
// winning installed/uninstalled event, observations ignored) at the end of
// the day is an install: per day, the sum of the changes events made to
// their registers' state (+1 an install after an uninstall or nothing, -1
// the reverse), and the running sum of those from the first event on,
// taken here, is the base.
//
// The fast way: the processors know each event's change when it arrives in
// order (walletsync.BaseChange), and the sink stores it (base_change where
// base_known = 1); for a register all of whose rows carry it, the day's
// changes are a plain sum, each row once (see once).
//
// The slow way, for registers (customer and pass, both platforms) with any
// row whose change is unknown — a late event, or rows the sink did not
// write: ClickHouse 18.16 has no window functions, so each register's
// events are gathered into one sorted array, packed into one Int64 each,
// occurred_ms*2 + (type = 'uninstalled'), which sorts exactly as the fold
// ranks events (time, then uninstall over install; the event id only
// breaks ties between events of one type, which give the same state); a
// row inserted twice packs to the same number, so arrayDistinct replaces
// FINAL. Over all 10M events of the benchmark this took 2.0 s; late events
// are rare, so it now runs over a few registers.
func (c *Engine) installedBase(ctx context.Context, q queries.Query) (queries.Answer, error) {
	dirty, err := chsink.DirtyMonths(ctx, c.Conn)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("installed-base: %w", err)
	}
	const before = `occurred_at < toDateTime(?) AND occurred_ms < ? AND ` + registerEvent
	sql := fmt.Sprintf(`SELECT p, d, sum(delta) FROM (
		SELECT toString(platform) AS p, toUInt32(intDiv(occurred_ms, 86400000)) AS d, sum(base_change) AS delta
		FROM %[2]s
		WHERE register NOT IN %[3]s
		GROUP BY p, d
	UNION ALL
		SELECT p, x.1 AS d, toInt64(x.2) AS delta FROM (
			SELECT toString(any(platform)) AS p,
				arraySort(arrayDistinct(groupArray(occurred_ms * 2 + (type = 'uninstalled')))) AS ks,
				arrayMap(k -> toInt8(1 - k %% 2), ks) AS inst,
				arrayJoin(arrayMap((k, s, prev) -> (toUInt32(intDiv(k, 172800000)), s - prev),
					ks, inst, arrayPushFront(arrayPopBack(inst), toInt8(0)))) AS x
			FROM %[4]s
			WHERE %[1]s AND register IN %[3]s
			GROUP BY register, platform
		)
		WHERE delta != 0
	)
	GROUP BY p, d`, before, once(chsink.EventsTable, "occurred_ms, platform, base_change, register", before, dirty), unknownRegisters, chsink.EventsTable)
	args := []any{q.To.Unix() + 1, q.To.UnixMilli()}
	rows, err := c.Conn.Query(ctx, sql, append(append(args, args...), args...)...)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("installed-base: %w", err)
	}
	defer rows.Close()
	delta := map[queries.PlatformDay]int64{}
	for rows.Next() {
		var p string
		var d uint32
		var n int64
		if err := rows.Scan(&p, &d, &n); err != nil {
			return queries.Answer{}, fmt.Errorf("installed-base: %w", err)
		}
		delta[queries.PlatformDay{Platform: p, Day: d}] += n
	}
	if err := rows.Err(); err != nil {
		return queries.Answer{}, fmt.Errorf("installed-base: %w", err)
	}
	return q.Answer(queries.InstalledBaseRows(q, delta)), nil
}

// retention follows every install event of [from, to): is its register's E
// (observations ignored) still an install 1, 7 and 30 days later — E among
// the events up to and including that instant? Cohorts are the UTC weeks
// (Monday first) of the installs. The week is computed from day numbers
// (1970-01-01 was a Thursday), not with toMonday, which would use the
// server's time zone.
//
// The fast way, for registers whose events all came in order: the
// processors' retention changes (wallet_retention, one initial row per
// install and a correction from each later event that changed the state
// within a horizon) summed per install week, each row once (see once).
//
// The slow way, for unknownRegisters: per register (grouped as in
// installedBase's slow way), its events packed and sorted as there, and its
// installs of the range, each row once (see once). The state
// N days after an install is the last packed event at or before that
// instant: the count of those that are, as an index. Lambdas on 18.16
// cannot read columns, so the register's events reach the inner lambda as
// an argument (replicate). Over all 10M events of the benchmark this took
// 5.6 s (11.3 s when installs were deduplicated with groupUniqArray of
// (time, id hash) tuples instead of FINAL).
func (c *Engine) retention(ctx context.Context, q queries.Query) (queries.Answer, error) {
	dirty, err := chsink.DirtyMonths(ctx, c.Conn)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("retention: %w", err)
	}
	const day = 86_400_000
	// Only events from the range's start to 30 days past its end: the
	// state N days after an install is that of the last event at or before
	// then, which is the install itself or a later one, never an earlier
	// one. The occurred_at bounds let ClickHouse skip the partitions
	// outside.
	const window = `occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
		AND occurred_ms >= ? AND occurred_ms <= ?`
	sql := fmt.Sprintf(`SELECT w, p, sum(n), sum(s1), sum(s7), sum(s30) FROM (
		SELECT toUInt32(intDiv(install_ms, 86400000) - (intDiv(install_ms, 86400000) + 3) %% 7) AS w, toString(platform) AS p,
			toInt64(countIf(initial = 1)) AS n, toInt64(sum(d1)) AS s1, toInt64(sum(d7)) AS s7, toInt64(sum(d30)) AS s30
		FROM %[1]s
		WHERE install_ms >= ? AND install_ms < ? AND register NOT IN %[3]s
		GROUP BY w, p
	UNION ALL
		SELECT toUInt32(w) AS w, p, toInt64(count()) AS n, toInt64(sum(s1)) AS s1, toInt64(sum(s7)) AS s7, toInt64(sum(s30)) AS s30 FROM (
			SELECT p, x.1 AS w, x.2 AS s1, x.3 AS s7, x.4 AS s30 FROM (
				SELECT p, arrayJoin(arrayMap((m, all) -> (
						intDiv(m, 86400000) - (intDiv(m, 86400000) + 3) %% 7,
						1 - all[arrayCount(k -> k <= 2 * (m + 86400000) + 1, all)] %% 2,
						1 - all[arrayCount(k -> k <= 2 * (m + 7 * 86400000) + 1, all)] %% 2,
						1 - all[arrayCount(k -> k <= 2 * (m + 30 * 86400000) + 1, all)] %% 2),
					ims, replicate(ks, ims))) AS x
				FROM (
					SELECT toString(any(platform)) AS p,
						arraySort(arrayDistinct(groupArray(occurred_ms * 2 + (type = 'uninstalled')))) AS ks,
						groupArrayIf(occurred_ms, type = 'installed' AND occurred_ms >= ? AND occurred_ms < ?) AS ims
					FROM %[2]s
					WHERE register IN %[3]s
					GROUP BY register, platform
					HAVING length(ims) > 0
				)
			)
		)
		GROUP BY w, p
	)
	GROUP BY w, p`, once(chsink.RetentionTable, "install_ms, platform, initial, d1, d7, d30, register", window, dirty),
		once(chsink.EventsTable, "register, platform, occurred_ms, type", window+" AND "+registerEvent, dirty), unknownRegisters)
	last := q.To.UnixMilli() + 30*day
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	win := []any{from / 1000, last/1000 + 1, from, last}
	var args []any
	args = append(append(append(args, win...), win...), from, to)
	args = append(append(append(args, from, to), win...), win...)
	rows, err := c.Conn.Query(ctx, sql, args...)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("retention: %w", err)
	}
	defer rows.Close()
	got := map[queries.WeekPlatform][4]int64{}
	for rows.Next() {
		var w uint32
		var p string
		var n, s1, s7, s30 int64
		if err := rows.Scan(&w, &p, &n, &s1, &s7, &s30); err != nil {
			return queries.Answer{}, fmt.Errorf("retention: %w", err)
		}
		got[queries.WeekPlatform{Week: w, Platform: p}] = [4]int64{n, s1, s7, s30}
	}
	if err := rows.Err(); err != nil {
		return queries.Answer{}, fmt.Errorf("retention: %w", err)
	}
	return q.Answer(queries.RetentionRows(q, got)), nil
}

// funnel follows every pass (customer and pass: the register key, without
// the platform) whose earliest issued event — the least (occurred_ms,
// event_id), whose pass_type it takes — falls in [from, to): was it
// installed (an installed row of the pass, any platform) from that instant
// to 1, 7 and 30 days after? Weeks as in retention, from day numbers.
//
// One group per pass holds its issued rows before to, which give the
// earliest, and its installs of the range to 30 days past it. Only the
// passes with an issued row in the range are grouped (the IN set), so the
// groups are few however long the history is; an earlier issued row
// takes a pass out. As in retention's slow way, lambdas on 18.16 cannot
// read columns, so the issue instant reaches them as an argument
// (replicate).
//
// Every aggregate here is unchanged by a row inserted twice — a minimum,
// and whether an install exists — and a pass is counted once whatever its
// rows, so the table is read as it is, without FINAL or the dirty months,
// as installedBase's slow way reads it.
func (c *Engine) funnel(ctx context.Context, q queries.Query) (queries.Answer, error) {
	const day = 86_400_000
	days := queries.FunnelDays()
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	last := to + days[2]*day // the latest install that can count
	sql := fmt.Sprintf(`SELECT w, pt, toInt64(count()), toInt64(sum(a1)), toInt64(sum(a7)), toInt64(sum(a30)) FROM (
		SELECT earliest.1 AS m, earliest.3 AS pt, toUInt32(intDiv(m, 86400000) - (intDiv(m, 86400000) + 3) %% 7) AS w,
			arrayExists((x, s) -> x >= s AND x <= s + %[2]d * 86400000, ims, replicate(m, ims)) AS a1,
			arrayExists((x, s) -> x >= s AND x <= s + %[3]d * 86400000, ims, replicate(m, ims)) AS a7,
			arrayExists((x, s) -> x >= s AND x <= s + %[4]d * 86400000, ims, replicate(m, ims)) AS a30
		FROM (
			SELECT minIf((occurred_ms, event_id, pass_type), type = 'issued') AS earliest,
				groupArrayIf(occurred_ms, type = 'installed') AS ims
			FROM %[1]s
			WHERE occurred_at < toDateTime(?)
				AND (type = 'issued' AND occurred_ms < ? OR type = 'installed' AND occurred_ms >= ? AND occurred_ms <= ?)
				AND register IN (SELECT register FROM %[1]s WHERE type = 'issued'
					AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) AND occurred_ms >= ? AND occurred_ms < ?)
			GROUP BY register
		)
		WHERE m >= ? AND m < ?
	)
	GROUP BY w, pt`, chsink.EventsTable, days[0], days[1], days[2])
	rows, err := c.Conn.Query(ctx, sql, last/1000+1, to, from, last, from/1000, to/1000, from, to, from, to)
	if err != nil {
		return queries.Answer{}, fmt.Errorf("funnel: %w", err)
	}
	defer rows.Close()
	got := map[queries.WeekPassType][4]int64{}
	for rows.Next() {
		var w uint32
		var pt string
		var n, a1, a7, a30 int64
		if err := rows.Scan(&w, &pt, &n, &a1, &a7, &a30); err != nil {
			return queries.Answer{}, fmt.Errorf("funnel: %w", err)
		}
		got[queries.WeekPassType{Week: w, PassType: pt}] = [4]int64{n, a1, a7, a30}
	}
	if err := rows.Err(); err != nil {
		return queries.Answer{}, fmt.Errorf("funnel: %w", err)
	}
	return q.Answer(queries.FunnelRows(got)), nil
}
