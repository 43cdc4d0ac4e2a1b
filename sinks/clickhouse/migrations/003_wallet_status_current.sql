-- The current status per customer: ReplacingMergeTree keeping the row with
-- the highest version for each customer_id; read with FINAL (or
-- argMax(…, version)) until merges have run.
CREATE TABLE IF NOT EXISTS wallet_status_current (
    customer_id            String,
    version                UInt64,
    wallet_status          Enum8('none' = 0, 'apple' = 1, 'google' = 2, 'both' = 3),
    apple_installed_at_ms  Int64,
    google_installed_at_ms Int64,
    last_changed_at_ms     Int64,
    last_event             Enum8('installed' = 1, 'uninstalled' = 2)
) ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
