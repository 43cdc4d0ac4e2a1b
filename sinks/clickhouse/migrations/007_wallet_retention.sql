-- What events did to the retention of their registers' installs, as the
-- processors knew it (the walletsync-retention header): per install one
-- initial row (initial = 1, d1 = d7 = d30 = 1) and a correction row from
-- each later event that changed its register's state within 1, 7 or 30
-- days of it. Summed per install they say whether it was retained, for
-- registers whose events all arrived in order (wallet_events.base_known).
-- Rows belong to the event that wrote them (event_id, seq): partitioned by
-- that event's month, so the sink's dirty months cover them, and a batch
-- inserted twice collapses as wallet_events does.
CREATE TABLE IF NOT EXISTS wallet_retention (
    event_id    String,
    seq         UInt16,
    occurred_at DateTime,
    occurred_ms Int64,
    customer_id String,
    pass_id     String,
    platform    Enum8('apple' = 1, 'google' = 2),
    install_ms  Int64,
    initial     UInt8,
    d1          Int8,
    d7          Int8,
    d30         Int8,
    register    UInt64 MATERIALIZED cityHash64(customer_id, pass_id)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), event_id, seq)
