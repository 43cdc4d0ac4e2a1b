-- Months (of occurredAt, UTC) of wallet_events that may hold an event twice.
-- The sink writes a row here before any insert that could repeat rows
-- already in the table (a retried insert, records a previous owner of the
-- partition announced it was inserting), so that queries count those months
-- with FINAL and every other month with a plain, several times faster scan.
-- Rows only accumulate on retries and rebalances; the table stays tiny.
CREATE TABLE IF NOT EXISTS wallet_events_dirty (
    month     UInt32,
    marked_at DateTime DEFAULT now()
) ENGINE = MergeTree()
ORDER BY (month, marked_at)
