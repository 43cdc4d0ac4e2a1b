-- Deduplicated valid events (wallet.events.clean), one row per eventId.
-- ReplacingMergeTree on a sorting key that ends in event_id: a batch the sink
-- inserts twice (after a crash before its offset commit) holds identical
-- rows with identical keys, which merges collapse; until then queries read
-- FINAL or one row per event_id (LIMIT 1 BY), so nothing is counted twice.
-- Partitioned by month of the event; ordered by day and platform first
-- because every insight query filters on a day range and groups by platform.
-- Times: DateTime (second) for partitioning and ranges, and the exact
-- instant in Unix milliseconds, since ClickHouse 18.16 has no DateTime64.
CREATE TABLE IF NOT EXISTS wallet_events (
    event_id        String,
    type            Enum8('installed' = 1, 'uninstalled' = 2, 'observed' = 3),
    platform        Enum8('apple' = 1, 'google' = 2),
    customer_id     String,
    pass_id         String,
    pass_type       String,
    occurred_at     DateTime,
    occurred_ms     Int64,
    installed       UInt8,
    installed_at_ms Int64,
    source          String,
    medium          String,
    origin          String,
    user_agent      String,
    tags            Array(String),
    ingested_at     DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), platform, event_id)
