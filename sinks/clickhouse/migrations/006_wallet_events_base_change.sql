-- What each event does to its register's installed state, as the processor
-- knew it (the walletsync-base-change header): base_change is +1, 0 or -1
-- where base_known = 1. Rows written without it (by hand, by a rebuild, or
-- before this migration) read base_known = 0 and are handled the slow way.
-- register identifies (customer, pass) for grouping without hashing the
-- strings at query time; the platform completes the register's key.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: Migrate treats "column already
-- exists" (a concurrent migrator was first) as applied.
ALTER TABLE wallet_events
    ADD COLUMN base_change Int8 DEFAULT 0,
    ADD COLUMN base_known UInt8 DEFAULT 0,
    ADD COLUMN register UInt64 MATERIALIZED cityHash64(customer_id, pass_id)
