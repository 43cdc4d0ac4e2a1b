package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/walletsync/walletsync"
)

// Reading wallet_events with FINAL is what makes a re-inserted batch count
// once, and it is most of what the daily query costs (an ordered merge of
// every part, in one stream on ClickHouse 18.16). Duplicates can only come
// from a few known places, so the sink records the months they may be in
// (wallet_events_dirty) before it inserts, and queries read only those
// months with FINAL. A verifier clears a month once it holds one row per
// event_id again.

// Month is a UTC calendar month as YYYYMM, the unit of dirty marks; SQL
// computes it as toYYYYMM(occurred_at, 'UTC').
func Month(occurredMs int64) uint32 {
	t := time.UnixMilli(occurredMs).UTC()
	return uint32(t.Year()*100 + int(t.Month()))
}

// MonthRange is the half-open millisecond range of a month.
func MonthRange(m uint32) (fromMs, toMs int64) {
	y, mo := int(m/100), time.Month(m%100)
	from := time.Date(y, mo, 1, 0, 0, 0, 0, time.UTC)
	return from.UnixMilli(), from.AddDate(0, 1, 0).UnixMilli()
}

// InMonths is a condition true for the rows of these months (of
// EventsTable or RetentionTable), as literal time ranges (integers such as
// DirtyMonths returns, nothing a user sent), which also let a query read
// only their partitions; "0" (false) for none.
func InMonths(months []uint32) string {
	if len(months) == 0 {
		return "0"
	}
	ranges := make([]string, len(months))
	for i, m := range months {
		from, to := MonthRange(m)
		ranges[i] = fmt.Sprintf("(occurred_ms >= %d AND occurred_ms < %d AND occurred_at >= toDateTime(%d) AND occurred_at < toDateTime(%d))",
			from, to, from/1000, to/1000)
	}
	return "(" + strings.Join(ranges, " OR ") + ")"
}

// EventMonths lists the distinct months of events, sorted.
func EventMonths(events []walletsync.Event) []uint32 {
	var ms []uint32
	for i := range events {
		ms = append(ms, Month(events[i].OccurredAt))
	}
	slices.Sort(ms)
	return slices.Compact(ms)
}

// MarkDirty records that rows of these months may be inserted twice. It
// must return before the insert that could repeat rows starts. The mark's
// time is the server's, so that it compares with the verifier's.
func MarkDirty(ctx context.Context, conn driver.Conn, months []uint32) error {
	if len(months) == 0 {
		return nil
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO wallet_events_dirty (month)")
	if err != nil {
		return err
	}
	for _, m := range months {
		if err := b.Append(m); err != nil {
			return err
		}
	}
	return b.Send()
}

// DirtyMonths lists the months that queries must read with FINAL: those
// with a mark made at or after the newest verification's covers_until.
func DirtyMonths(ctx context.Context, conn driver.Conn) ([]uint32, error) {
	marks, err := monthTimes(ctx, conn, "SELECT month, max(marked_at) FROM wallet_events_dirty GROUP BY month")
	if err != nil {
		return nil, fmt.Errorf("dirty months: %w", err)
	}
	covered, err := monthTimes(ctx, conn, "SELECT month, max(covers_until) FROM wallet_events_verified GROUP BY month")
	if err != nil {
		return nil, fmt.Errorf("dirty months: %w", err)
	}
	var out []uint32
	for m, at := range marks {
		if c, ok := covered[m]; !ok || !at.Before(c) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out, nil
}

func monthTimes(ctx context.Context, conn driver.Conn, sql string) (map[uint32]time.Time, error) {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint32]time.Time{}
	for rows.Next() {
		var m uint32
		var t time.Time
		if err := rows.Scan(&m, &t); err != nil {
			return nil, err
		}
		out[m] = t
	}
	return out, rows.Err()
}

// Verify clears the dirty months it can. settle is how long after its mark
// an insert may still land (longer than the sink's insert timeout): only
// marks older than that are covered. A month whose rows are not one per
// event_id has its partitions merged with OPTIMIZE … FINAL and is checked
// again. It returns the months it cleared.
func Verify(ctx context.Context, conn driver.Conn, settle time.Duration) ([]uint32, error) {
	var now time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	covers := now.Add(-settle)
	months, err := DirtyMonths(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var cleared []uint32
	for _, m := range months {
		ok, err := onePerEventID(ctx, conn, m)
		if err == nil && !ok {
			if err = optimize(ctx, conn, m); err == nil {
				ok, err = onePerEventID(ctx, conn, m)
			}
		}
		if err != nil {
			return cleared, fmt.Errorf("verify month %d: %w", m, err)
		}
		if !ok {
			continue // a merge is still running; the next round tries again
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO wallet_events_verified (month, covers_until)")
		if err == nil {
			if err = b.Append(m, covers); err == nil {
				err = b.Send()
			}
		}
		if err != nil {
			return cleared, fmt.Errorf("verify month %d: %w", m, err)
		}
		cleared = append(cleared, m)
	}
	return cleared, nil
}

// onePerEventID reports whether month m holds each row once: one per
// event_id in wallet_events, one per (event_id, seq) in wallet_retention.
func onePerEventID(ctx context.Context, conn driver.Conn, m uint32) (bool, error) {
	from, to := MonthRange(m)
	for _, table := range []struct{ name, key string }{{"wallet_events", "event_id"}, {"wallet_retention", "event_id, seq"}} {
		var rows, ids uint64
		err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(), uniqExact(%s) FROM %s
		WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) AND occurred_ms >= ? AND occurred_ms < ?`, table.key, table.name),
			from/1000, to/1000, from, to).Scan(&rows, &ids)
		if err != nil || rows != ids {
			return false, err
		}
	}
	return true, nil
}

// optimize merges the partitions (server time zone months) that hold the
// UTC month m.
func optimize(ctx context.Context, conn driver.Conn, m uint32) error {
	from, to := MonthRange(m)
	rows, err := conn.Query(ctx, `SELECT DISTINCT toYYYYMM(occurred_at) FROM wallet_events
		WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)`, from/1000, to/1000)
	if err != nil {
		return err
	}
	var parts []uint32
	for rows.Next() {
		var p uint32
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return err
		}
		parts = append(parts, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range parts {
		for _, table := range []string{"wallet_events", "wallet_retention"} {
			if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s PARTITION %d FINAL", table, p)); err != nil {
				return err
			}
		}
	}
	return nil
}
