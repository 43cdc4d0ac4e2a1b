-- Issue 18: the same two fields on the current status.
ALTER TABLE wallet_status_current
    MODIFY COLUMN last_event Enum8('none' = 0, 'installed' = 1, 'uninstalled' = 2),
    ADD COLUMN first_installed_at_ms Int64 DEFAULT 0,
    ADD COLUMN pass_issued_at_ms Int64 DEFAULT 0
