-- Every status version (wallet.status), for history and change analysis.
-- (customer_id, version) identifies a record, so a re-inserted batch
-- collapses like the events.
CREATE TABLE IF NOT EXISTS wallet_status_versions (
    customer_id            String,
    version                UInt64,
    wallet_status          Enum8('none' = 0, 'apple' = 1, 'google' = 2, 'both' = 3),
    apple_installed_at_ms  Int64,
    google_installed_at_ms Int64,
    last_changed_at_ms     Int64,
    last_event             Enum8('installed' = 1, 'uninstalled' = 2),
    last_changed_at        DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(last_changed_at)
ORDER BY (customer_id, version)
