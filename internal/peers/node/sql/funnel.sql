-- SPEC §7 funnel: per pass (customer_id, pass_id) whose earliest issued
-- event (over all time; the smallest event_id among those at the earliest
-- instant) falls on a UTC day of [from_day, to_day): its UTC week (the
-- Monday) and that event's pass_type; issued counts the passes, withinNd
-- those with an installed event of the pass, on any platform, from the
-- issue instant to N x 24 h after it, both included. Each event_id once;
-- only rows with issued >= 1, by week, then pass type.
-- The windows are to_hours(24 * N), not INTERVAL N DAY: a day added to a
-- TIMESTAMPTZ is a calendar day of the session's TimeZone, 23 or 25 hours
-- across a daylight-saving change.
WITH once AS (
    SELECT event_id, type, customer_id, pass_id, pass_type, occurred_at
    FROM events
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1
),
first_issue AS (
    SELECT customer_id, pass_id, pass_type, occurred_at AS issued_at,
           (occurred_at AT TIME ZONE 'UTC')::DATE AS utc_day
    FROM once
    WHERE type = 'issued'
    QUALIFY row_number() OVER (PARTITION BY customer_id, pass_id ORDER BY occurred_at, event_id) = 1
),
cohort AS (
    SELECT customer_id, pass_id, pass_type, issued_at, date_trunc('week', utc_day)::DATE AS week
    FROM first_issue
    WHERE utc_day >= getvariable('from_day')::DATE AND utc_day < getvariable('to_day')::DATE
),
reached AS (
    SELECT c.customer_id, c.pass_id,
           bool_or(i.occurred_at <= c.issued_at + to_hours(24)) AS d1,
           bool_or(i.occurred_at <= c.issued_at + to_hours(24 * 7)) AS d7
    FROM cohort AS c
    JOIN once AS i ON i.type = 'installed' AND i.customer_id = c.customer_id AND i.pass_id = c.pass_id
        AND i.occurred_at >= c.issued_at AND i.occurred_at <= c.issued_at + to_hours(24 * 30)
    GROUP BY c.customer_id, c.pass_id
)
SELECT c.week AS cohortWeek, c.pass_type AS passType, count(*) AS issued,
       count(*) FILTER (WHERE r.d1) AS within1d,
       count(*) FILTER (WHERE r.d7) AS within7d,
       count(r.customer_id) AS within30d
FROM cohort AS c
LEFT JOIN reached AS r ON r.customer_id = c.customer_id AND r.pass_id = c.pass_id
GROUP BY c.week, c.pass_type
ORDER BY c.week, c.pass_type;
