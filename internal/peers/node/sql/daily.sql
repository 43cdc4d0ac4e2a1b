-- SPEC §7 daily: installed and uninstalled events per UTC day of
-- occurred_at and platform, each event_id once, observations and issued
-- events not counted; every day of [from_day, to_day) and both platforms
-- appear, zeros included. A device removal (SPEC §3: an uninstall whose
-- registration counts say activeCount >= 1 and totalCount > activeCount;
-- a missing count is NULL, so not one) counts in deviceRemovals, not in
-- uninstalls, and so moves no net.
-- occurred_at is a TIMESTAMPTZ: AT TIME ZONE 'UTC' takes its UTC day
-- whatever the session's TimeZone (a plain ::DATE takes the local day).
WITH once AS (
    SELECT type, platform, (occurred_at AT TIME ZONE 'UTC')::DATE AS utc_day,
           type = 'uninstalled' AND coalesce(registration_active_count >= 1
               AND registration_total_count > registration_active_count, false) AS device_removal
    FROM events
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1
),
counts AS (
    SELECT utc_day, platform,
           count(*) FILTER (WHERE type = 'installed') AS installs,
           count(*) FILTER (WHERE type = 'uninstalled' AND NOT device_removal) AS uninstalls,
           count(*) FILTER (WHERE device_removal) AS device_removals
    FROM once
    WHERE utc_day >= getvariable('from_day')::DATE AND utc_day < getvariable('to_day')::DATE
    GROUP BY utc_day, platform
),
grid AS (
    SELECT d::DATE AS utc_day, p.platform
    FROM range(getvariable('from_day')::DATE, getvariable('to_day')::DATE, INTERVAL 1 DAY) AS r(d)
    CROSS JOIN (VALUES ('apple'), ('google')) AS p(platform)
)
SELECT g.utc_day AS day, g.platform,
       coalesce(c.installs, 0) AS installs,
       coalesce(c.uninstalls, 0) AS uninstalls,
       coalesce(c.installs, 0) - coalesce(c.uninstalls, 0) AS net,
       coalesce(c.device_removals, 0) AS deviceRemovals
FROM grid AS g
LEFT JOIN counts AS c ON c.utc_day = g.utc_day AND c.platform = g.platform
ORDER BY g.utc_day, g.platform;
