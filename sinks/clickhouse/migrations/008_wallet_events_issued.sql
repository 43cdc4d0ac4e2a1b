-- Issue 18: issued events (type 'issued', platform optional: 'none') and
-- device removals (an uninstall that left another device of the platform
-- registered, SPEC §3), counted apart by the daily insight. Adding values to
-- an Enum8 is a change of metadata only, allowed on key columns, on 18.16 and
-- 24+ alike; rows written before keep device_removal 0.
ALTER TABLE wallet_events
    MODIFY COLUMN type Enum8('installed' = 1, 'uninstalled' = 2, 'observed' = 3, 'issued' = 4),
    MODIFY COLUMN platform Enum8('none' = 0, 'apple' = 1, 'google' = 2),
    ADD COLUMN device_removal UInt8 DEFAULT 0
