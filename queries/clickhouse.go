package queries

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/walletsync/walletsync"
)

// ClickHouse answers insight queries from the tables the ClickHouse sink
// fills (sinks/clickhouse/migrations).
type ClickHouse struct{ Conn driver.Conn }

// byColumn maps daily's by parameter to a column; only these are ever
// spliced into SQL.
var byColumn = map[string]string{"": "''", "passType": "pass_type", "medium": "medium", "source": "source"}

// Insight runs q.
func (c *ClickHouse) Insight(ctx context.Context, q Query) (Answer, error) {
	switch q.Name {
	case Daily:
		return c.daily(ctx, q)
	case StatusMix:
		return c.status(ctx, q)
	}
	return Answer{}, fmt.Errorf("%s: %w", q.Name, ErrNotImplemented)
}

// daily counts installed/uninstalled events by their occurredAt UTC day.
// The day is computed from milliseconds, not with toDate, which would use
// the server's time zone; LIMIT 1 BY event_id counts a row inserted twice
// once; the occurred_at condition lets ClickHouse skip whole partitions.
func (c *ClickHouse) daily(ctx context.Context, q Query) (Answer, error) {
	col := byColumn[q.By]
	sql := fmt.Sprintf(`SELECT toUInt32(intDiv(occurred_ms, 86400000)) AS d, toString(platform) AS p, %s AS b,
		countIf(type = 'installed') AS i, countIf(type = 'uninstalled') AS u
	FROM (
		SELECT event_id, occurred_ms, platform, type, pass_type, medium, source FROM wallet_events
		WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
		  AND occurred_ms >= ? AND occurred_ms < ? AND type != 'observed'
		LIMIT 1 BY event_id
	)
	GROUP BY d, p, b`, col)
	rows, err := c.Conn.Query(ctx, sql, q.From.Unix(), q.To.Unix(), q.From.UnixMilli(), q.To.UnixMilli())
	if err != nil {
		return Answer{}, fmt.Errorf("daily: %w", err)
	}
	defer rows.Close()
	counts := map[[3]string][2]int64{}
	for rows.Next() {
		var d uint32
		var p, b string
		var i, u uint64
		if err := rows.Scan(&d, &p, &b, &i, &u); err != nil {
			return Answer{}, fmt.Errorf("daily: %w", err)
		}
		day := time.Unix(int64(d)*86400, 0).UTC().Format(time.DateOnly)
		counts[[3]string{day, p, b}] = [2]int64{int64(i), int64(u)}
	}
	if err := rows.Err(); err != nil {
		return Answer{}, fmt.Errorf("daily: %w", err)
	}
	return q.answer(dailyRows(q, counts)), nil
}

// status counts customers by their current walletStatus; FINAL keeps the
// newest version per customer even before merges ran.
func (c *ClickHouse) status(ctx context.Context, q Query) (Answer, error) {
	rows, err := c.Conn.Query(ctx, `SELECT toString(wallet_status) AS s, count() FROM wallet_status_current FINAL GROUP BY s`)
	if err != nil {
		return Answer{}, fmt.Errorf("status: %w", err)
	}
	defer rows.Close()
	n := map[string]int64{}
	for rows.Next() {
		var s string
		var c uint64
		if err := rows.Scan(&s, &c); err != nil {
			return Answer{}, fmt.Errorf("status: %w", err)
		}
		n[s] = int64(c)
	}
	if err := rows.Err(); err != nil {
		return Answer{}, fmt.Errorf("status: %w", err)
	}
	var out []Row
	for _, w := range walletsync.WalletStatuses {
		out = append(out, Row{"walletStatus": w.String(), "customers": n[w.String()]})
	}
	return q.answer(out), nil
}
