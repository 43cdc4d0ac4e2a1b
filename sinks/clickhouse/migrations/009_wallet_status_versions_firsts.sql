-- Issue 18: firstInstalledAt and passIssuedAt (SPEC §3), Unix milliseconds,
-- 0 for null like the other times of the table; and last_event 'none', the
-- walletLastEvent of a customer with issued passes only (written as
-- 'installed' before, when no status lacked a last event but one whose
-- registers all fell silent).
ALTER TABLE wallet_status_versions
    MODIFY COLUMN last_event Enum8('none' = 0, 'installed' = 1, 'uninstalled' = 2),
    ADD COLUMN first_installed_at_ms Int64 DEFAULT 0,
    ADD COLUMN pass_issued_at_ms Int64 DEFAULT 0
