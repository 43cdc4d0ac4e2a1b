-- A month is clean again once the sink's verifier found one row per
-- event_id in it (merging its partitions with OPTIMIZE … FINAL first when it
-- did not): covers_until says which marks that check covers — those made
-- before it, less the time an insert may still land after its mark.
CREATE TABLE IF NOT EXISTS wallet_events_verified (
    month        UInt32,
    covers_until DateTime,
    verified_at  DateTime DEFAULT now()
) ENGINE = MergeTree()
ORDER BY (month, covers_until)
