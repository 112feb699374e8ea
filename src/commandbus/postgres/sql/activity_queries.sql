-- Named queries of commandbus.postgres.activity (not a migration): what commands and
-- processes did over a recent window, for dashboards (see commandbus/activity.py).
-- Each reads a bounded number of rows through an index, whatever the tables' size: the
-- newest %(limit)s + 1 rows of the window, walked newest first; the extra row tells
-- whether the window held more.


-- name: command_activity
-- The newest commands created at or after since (any domain), walked backwards along
-- command_created_idx (ordered by created_at alone: a tie-breaker would make the walk
-- read every row of a batch sent in one transaction, which all have one created_at;
-- which of those is left out at the limit is then unspecified); per domain and minute (counted from since, by updated_at, the
-- moment the row last changed), the completed and the failed ones, and percentiles of
-- the send-to-completion latency of the completed ones. The last row (domain NULL)
-- carries how many were read and the creation time of the oldest read.
WITH recent AS MATERIALIZED (
    SELECT c.domain, c.status, c.created_at, c.updated_at
    FROM commandbus.command c
    WHERE c.created_at >= %(since)s::timestamptz
    ORDER BY c.created_at DESC
    LIMIT %(limit)s::int + 1
), kept AS MATERIALIZED (
    SELECT r.domain, r.status, r.created_at,
           floor(extract(epoch FROM r.updated_at - %(since)s::timestamptz) / 60)::int
               AS minute,
           extract(epoch FROM r.updated_at - r.created_at)::float8 AS latency
    FROM recent r
    ORDER BY r.created_at DESC
    LIMIT %(limit)s::int
)
SELECT k.domain, k.minute,
       count(*) FILTER (WHERE k.status = 'COMPLETED') AS completed,
       count(*) FILTER (WHERE k.status <> 'COMPLETED') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY k.latency)
           FILTER (WHERE k.status = 'COMPLETED') AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY k.latency)
           FILTER (WHERE k.status = 'COMPLETED') AS p95,
       max(k.latency) FILTER (WHERE k.status = 'COMPLETED') AS longest,
       NULL::bigint AS read, NULL::bigint AS scanned, NULL::timestamptz AS oldest
FROM kept k
WHERE k.status IN ('COMPLETED', 'FAILED', 'IN_TROUBLESHOOTING_QUEUE')
  AND k.minute >= 0 AND k.minute < %(minutes)s::int
GROUP BY k.domain, k.minute
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM recent), (SELECT count(*) FROM kept),
       (SELECT min(created_at) FROM kept)
ORDER BY 1 NULLS LAST, 2;


-- name: process_activity
-- The newest audit entries (any domain), walked backwards along the primary key (ids
-- follow the order entries were written), those sent at or after since, with their
-- process (a primary-key probe each). Per step, percentiles of the time from sending (or
-- the time it was scheduled for) to the reply; per process type, of the time from the
-- start to the end of the processes among them that finished at or after since. The
-- last row (kind 'read') carries how many entries were read, how many of them were in
-- the window, whether the oldest read was still in it, and the oldest sent_at kept.
WITH recent AS MATERIALIZED (
    SELECT a.id, a.domain, a.process_id, a.step_name, a.sent_at, a.scheduled_for,
           a.received_at
    FROM commandbus.process_audit a
    ORDER BY a.id DESC
    LIMIT %(limit)s::int + 1
), kept AS MATERIALIZED (
    SELECT r.domain, r.process_id, r.step_name, r.sent_at, r.scheduled_for, r.received_at,
           p.process_type, p.created_at, p.completed_at
    FROM (SELECT * FROM recent ORDER BY id DESC LIMIT %(limit)s::int) r
    CROSS JOIN LATERAL (
        -- LIMIT 1 (the key is unique) keeps the subquery from being flattened into a
        -- join the planner could make a scan of the whole table: one probe per entry.
        SELECT x.process_type, x.created_at, x.completed_at
        FROM commandbus.process x
        WHERE x.domain = r.domain AND x.process_id = r.process_id
        LIMIT 1
    ) p
    WHERE r.sent_at >= %(since)s::timestamptz
), finished AS (
    SELECT DISTINCT k.domain, k.process_id, k.process_type,
           extract(epoch FROM k.completed_at - k.created_at)::float8 AS took
    FROM kept k
    WHERE k.completed_at >= %(since)s::timestamptz
)
SELECT 'step' AS kind, k.domain, k.process_type, k.step_name, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY k.took) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY k.took) AS p95,
       max(k.took) AS longest, NULL::bigint AS read, NULL::boolean AS more,
       NULL::timestamptz AS oldest
FROM (
    SELECT domain, process_type, step_name,
           extract(epoch FROM received_at - coalesce(scheduled_for, sent_at))::float8 AS took
    FROM kept
    WHERE received_at IS NOT NULL
) k
GROUP BY k.domain, k.process_type, k.step_name
UNION ALL
SELECT 'process', f.domain, f.process_type, NULL, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY f.took),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY f.took),
       max(f.took), NULL, NULL, NULL
FROM finished f
GROUP BY f.domain, f.process_type
UNION ALL
SELECT 'read', NULL, NULL, NULL, (SELECT count(*) FROM kept), NULL, NULL, NULL,
       (SELECT count(*) FROM recent),
       (SELECT r.sent_at >= %(since)s::timestamptz FROM recent r ORDER BY r.id LIMIT 1),
       (SELECT min(sent_at) FROM kept)
ORDER BY 1, 2, 3, 4;
