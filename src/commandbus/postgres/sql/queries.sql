-- Named queries of the PostgreSQL adapter, loaded by commandbus.postgres.queries.
-- Each block starts with "-- name: <name>". Parameters are %(name)s placeholders; no
-- query is ever assembled from input. Arrays passed with unnest() let one statement (one
-- round trip) handle a whole batch.
--
-- Array parameters use binary placeholders (%(name)b): psycopg then sends each element
-- as it is, where the text format would escape every quote of every JSON payload in
-- Python (measured: 2.9 ms vs 0.2 ms for a batch of 50).
--
-- Time: vt comparisons use statement_timestamp() (stable, so the claim index can be
-- used, and not frozen at the start of a long caller transaction as now() would be).


-- name: enqueue
-- Append messages to one queue; one NOTIFY for the whole call (delivered at commit).
WITH m AS (
    INSERT INTO commandbus.queue_message (queue_name, message, vt)
    SELECT %(queue)s, u.message::jsonb,
           statement_timestamp() + make_interval(secs => %(delay)s::float8)
    FROM unnest(%(messages)b::text[]) WITH ORDINALITY AS u(message, ord)
    ORDER BY u.ord
    RETURNING msg_id
)
SELECT array_agg(m.msg_id ORDER BY m.msg_id) AS msg_ids,
       pg_notify('commandbus', %(queue)s) AS notified
FROM m;


-- name: read
-- Claim visible messages of a queue, oldest first, skipping rows locked by other readers.
-- Rows come back in the order they became visible (previous vt, then msg_id).
-- pick_messages (see 001_commands.sql) pins the ordered index walk.
-- With relaxed (a read that is its own transaction, never inside a caller's: the setting
-- would apply to the caller's commit), the commit does not wait for the WAL to reach the
-- disk: the read writes only the lease (vt) and the read count, which a server crash may
-- then forget (delivered again a little early, counted once less: at-least-once allows
-- it). That saves a disk flush per router batch. Otherwise the setting is left as it is.
WITH relaxed AS MATERIALIZED (
    SELECT set_config(
        'synchronous_commit',
        CASE WHEN %(relaxed)s THEN 'off' ELSE current_setting('synchronous_commit') END,
        true
    ) AS setting
), picked AS MATERIALIZED (
    SELECT m.msg_id, m.vt
    FROM relaxed, commandbus.pick_messages(%(queue)s, %(limit)s) m
), leased AS (
    UPDATE commandbus.queue_message q
    SET vt = statement_timestamp() + make_interval(secs => %(vt)s::float8),
        read_ct = q.read_ct + 1
    WHERE q.msg_id = ANY (ARRAY(SELECT msg_id FROM picked))
    RETURNING q.msg_id, q.queue_name, q.message, q.read_ct, q.enqueued_at, q.vt
)
SELECT l.msg_id, l.queue_name, l.message, l.read_ct, l.enqueued_at, l.vt
FROM leased l
JOIN picked p ON p.msg_id = l.msg_id
ORDER BY p.vt, l.msg_id;


-- name: delete
DELETE FROM commandbus.queue_message
WHERE queue_name = %(queue)s AND msg_id = ANY(%(msg_ids)b::bigint[]);


-- name: set_visibility
UPDATE commandbus.queue_message
SET vt = statement_timestamp() + make_interval(secs => %(seconds)s::float8)
WHERE queue_name = %(queue)s AND msg_id = %(msg_id)s;


-- name: release
-- Messages read but not handled: visible now, and that read uncounted.
UPDATE commandbus.queue_message
SET vt = statement_timestamp(), read_ct = GREATEST(read_ct - 1, 0)
WHERE queue_name = %(queue)s AND msg_id = ANY(%(msg_ids)b::bigint[]);


-- name: depth
SELECT count(*) AS depth FROM commandbus.queue_message WHERE queue_name = %(queue)s;


-- name: queue_stats
-- A queue at a glance (dashboards, metrics): one pass over the queue's rows.
SELECT count(*) AS depth,
       count(*) FILTER (WHERE vt > statement_timestamp() AND read_ct > 0) AS in_flight,
       count(*) FILTER (WHERE vt > statement_timestamp() AND read_ct = 0) AS delayed,
       min(enqueued_at) AS oldest_enqueued_at
FROM commandbus.queue_message
WHERE queue_name = %(queue)s;


-- name: insert_commands
-- Send a batch: message + PENDING row + SENT audit event per command, one statement.
-- Everything is written straight from the arrays (no join, no sort but the one below).
-- Duplicates are refused by the primary key: a plain INSERT raises unique_violation on
-- the first id that exists (committed, or written earlier by this transaction); an id
-- that a concurrent sender has written but not yet committed makes this statement wait
-- for that sender, then fail (or go on if it rolled back). A failing statement writes
-- nothing, so the caller needs no check of its own (see existing_commands).
-- msg_ids are drawn up front (materialised CTE, in request order) so the command row and
-- the SENT event can record them. Command rows are inserted in key order so that two
-- batch senders with overlapping ids lock them in the same order and cannot deadlock.
-- The queue message is built here from the columns and the encoded data. One NOTIFY per
-- queue (the queues parameter: the distinct queue names).
WITH req AS MATERIALIZED (
    SELECT r.domain, r.command_id, r.command_type, r.data, r.correlation_id, r.reply_to,
           r.max_attempts, r.delay, r.headers, r.batch_id, r.ord,
           nextval('commandbus.queue_message_msg_id_seq'::regclass) AS msg_id
    FROM unnest(
        %(domains)b::text[], %(command_ids)b::uuid[], %(command_types)b::text[],
        %(data)b::text[], %(correlation_ids)b::uuid[], %(reply_tos)b::text[],
        %(max_attempts)b::integer[], %(delays)b::float8[], %(headers)b::text[],
        %(batch_ids)b::uuid[]
    ) WITH ORDINALITY AS r(domain, command_id, command_type, data, correlation_id,
                           reply_to, max_attempts, delay, headers, batch_id, ord)
), cmd AS (
    -- batch_id: the caller (CommandBus) has added these commands to their batch's total
    -- in the same transaction (batch_queries.sql, add_batch_members).
    INSERT INTO commandbus.command (
        domain, command_id, command_type, status, attempts, max_attempts, msg_id,
        correlation_id, reply_to, batch_id
    )
    SELECT domain, command_id, command_type, 'PENDING', 0, max_attempts, msg_id,
           correlation_id, reply_to, batch_id
    FROM req
    ORDER BY domain, command_id
), msg AS (
    INSERT INTO commandbus.queue_message (msg_id, queue_name, message, vt)
    OVERRIDING SYSTEM VALUE
    SELECT msg_id, domain || '__commands',
           -- headers (trace context, causation id) only when the sender gave some
           jsonb_build_object(
               'domain', domain, 'command_type', command_type, 'command_id', command_id,
               'correlation_id', correlation_id, 'reply_to', reply_to, 'data', data::jsonb)
           || CASE WHEN headers IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('headers', headers::jsonb) END,
           statement_timestamp() + make_interval(secs => delay)
    FROM req
), sent AS (
    INSERT INTO commandbus.audit (domain, command_id, event_type, details)
    SELECT domain, command_id, 'SENT', jsonb_build_object('msg_id', msg_id)
    FROM req
)
SELECT (SELECT array_agg(msg_id ORDER BY ord) FROM req) AS msg_ids,
       (SELECT count(*)
        FROM (SELECT pg_notify('commandbus', q.queue)
              FROM unnest(%(queues)b::text[]) AS q(queue)) AS n) AS notified;


-- name: existing_commands
-- After insert_commands failed on the primary key: which of the requested ids exist (in
-- request order), to name them in the error.
SELECT k.domain, k.command_id
FROM unnest(%(domains)b::text[], %(command_ids)b::uuid[]) WITH ORDINALITY
     AS k(domain, command_id, ord)
WHERE EXISTS (
    SELECT 1 FROM commandbus.command c
    WHERE c.command_id = k.command_id AND c.domain = k.domain
)
ORDER BY k.ord;


-- name: insert_command
-- Send one command: what insert_commands writes for a batch of one (the same message,
-- PENDING row, SENT event and NOTIFY), with scalar parameters. A one-at-a-time send
-- waits for its round trip: arrays of one element cost the client about 90 µs more CPU
-- to encode and the server an unnest per column (measured: 1.14x the sends per second,
-- docs/performance.md). Duplicates fail on the primary key as in insert_commands, and
-- batch_id is written as there (the caller has counted the command in its batch).
WITH req AS MATERIALIZED (
    SELECT nextval('commandbus.queue_message_msg_id_seq'::regclass) AS msg_id
), cmd AS (
    INSERT INTO commandbus.command (
        domain, command_id, command_type, status, attempts, max_attempts, msg_id,
        correlation_id, reply_to, batch_id
    )
    SELECT %(domain)s::text, %(command_id)s::uuid, %(command_type)s::text, 'PENDING', 0,
           %(max_attempts)s::integer, msg_id, %(correlation_id)s::uuid, %(reply_to)s::text,
           %(batch_id)s::uuid
    FROM req
), msg AS (
    INSERT INTO commandbus.queue_message (msg_id, queue_name, message, vt)
    OVERRIDING SYSTEM VALUE
    SELECT msg_id, %(queue)s::text,
           jsonb_build_object(
               'domain', %(domain)s::text, 'command_type', %(command_type)s::text,
               'command_id', %(command_id)s::uuid, 'correlation_id', %(correlation_id)s::uuid,
               'reply_to', %(reply_to)s::text, 'data', %(data)s::jsonb)
           || CASE WHEN %(headers)s::text IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('headers', %(headers)s::jsonb) END,
           statement_timestamp() + make_interval(secs => %(delay)s::float8)
    FROM req
), sent AS (
    INSERT INTO commandbus.audit (domain, command_id, event_type, details)
    SELECT %(domain)s::text, %(command_id)s::uuid, 'SENT', jsonb_build_object('msg_id', msg_id)
    FROM req
)
SELECT ARRAY[msg_id] AS msg_ids, pg_notify('commandbus', %(queue)s::text) AS notified
FROM req;


-- name: claim_commands
-- One statement per claim: pick visible messages (SKIP LOCKED), push their vt out, bump
-- attempts and set IN_PROGRESS on the command rows, write RECEIVED audit events.
-- Messages of terminal commands (stale redeliveries) are deleted, not returned; messages
-- without a command row (not written by this library) are archived so nothing is lost.
-- Rows about to be deleted are never updated first (no dead rows for nothing).
--
-- Plans should not depend on statistics (a queue table's size swings from empty to
-- millions of rows): rows of command / queue_message are reached by their primary key,
-- through a per-message probe or "= ANY(ARRAY(...))" of the keys.
WITH picked AS MATERIALIZED (
    -- pick_messages (see 001_commands.sql) pins the ordered index walk
    SELECT m.msg_id, m.message, m.vt,
           -- Only the canonical text form (the one this library writes) is cast: any
           -- other text would fail the cast and with it the whole claim.
           CASE WHEN m.message ->> 'command_id'
                     ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                THEN (m.message ->> 'command_id')::uuid
           END AS command_id
    FROM commandbus.pick_messages(%(queue)s, %(limit)s) m
), joined AS MATERIALIZED (
    -- A correlated subquery, not a join: one primary-key probe per picked message,
    -- whatever the planner believes about the table sizes.
    SELECT p.msg_id, p.message, p.vt, p.command_id,
           (SELECT c.status
            FROM commandbus.command c
            WHERE c.command_id = p.command_id AND c.domain = %(domain)s) AS status
    FROM picked p
), gone AS (
    DELETE FROM commandbus.queue_message q
    WHERE q.msg_id = ANY (ARRAY(
        SELECT msg_id FROM joined
        WHERE status IS NULL OR status IN ('COMPLETED', 'FAILED', 'CANCELED')
    ))
    RETURNING q.*
), orphaned AS (
    INSERT INTO commandbus.queue_archive (
        msg_id, queue_name, message, headers, enqueued_at, vt, read_ct, command_id
    )
    SELECT g.msg_id, g.queue_name, g.message, g.headers, g.enqueued_at, g.vt, g.read_ct,
           NULL
    FROM gone g
    WHERE g.msg_id = ANY (ARRAY(SELECT msg_id FROM joined WHERE status IS NULL))
), live AS MATERIALIZED (
    SELECT msg_id, message, vt, command_id
    FROM joined
    WHERE status IS NOT NULL AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
), leased AS (
    UPDATE commandbus.queue_message q
    SET vt = statement_timestamp() + make_interval(secs => %(vt)s::float8),
        read_ct = q.read_ct + 1
    WHERE q.msg_id = ANY (ARRAY(SELECT msg_id FROM live))
), cmd AS (
    -- The status test is repeated here: if an operator changed the row since the
    -- snapshot, the update re-checks the committed row and skips a terminal one.
    UPDATE commandbus.command c
    SET attempts = c.attempts + 1, status = 'IN_PROGRESS', updated_at = now()
    WHERE c.command_id = ANY (ARRAY(SELECT command_id FROM live))
      AND c.domain = %(domain)s
      AND c.status NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
    RETURNING c.command_id, c.command_type, c.attempts, c.max_attempts, c.correlation_id,
              c.reply_to, c.created_at, c.batch_id
), started AS (
    -- A batch is IN_PROGRESS once one of its commands is claimed. Only a PENDING batch
    -- is written (once per batch), and one that another transaction holds (a sender
    -- adding to it, a settlement counting in it) is skipped rather than waited for: the
    -- claim never waits on a batch, and the next claim or settlement marks it instead.
    UPDATE commandbus.batch b
    SET status = 'IN_PROGRESS', updated_at = now()
    WHERE b.batch_id = ANY (ARRAY(
        SELECT x.batch_id
        FROM commandbus.batch x
        WHERE x.batch_id = ANY (ARRAY(SELECT batch_id FROM cmd WHERE batch_id IS NOT NULL))
          AND x.domain = %(domain)s AND x.status = 'PENDING'
        ORDER BY x.batch_id
        FOR UPDATE SKIP LOCKED
    ))
      AND b.domain = %(domain)s
), claimed AS MATERIALIZED (
    SELECT live.msg_id, live.vt AS visible_since, live.message, cmd.*
    FROM cmd
    JOIN live ON live.command_id = cmd.command_id
), received AS (
    INSERT INTO commandbus.audit (domain, command_id, event_type, details)
    SELECT %(domain)s, command_id, 'RECEIVED',
           jsonb_build_object('attempt', attempts, 'msg_id', msg_id)
    FROM claimed
    ORDER BY visible_since, msg_id
)
-- In the order the messages became visible (previous vt, then msg_id).
SELECT msg_id, command_id, command_type, attempts, max_attempts, correlation_id,
       reply_to, created_at, message -> 'data' AS data, message -> 'headers' AS headers
FROM claimed
ORDER BY visible_since, msg_id;


-- name: settle
-- Apply a list of settlements in one statement: delete / archive / retry the messages,
-- update the command rows, append audit events in the given order, enqueue replies and
-- notify each reply queue once. Messages are never updated and then deleted.
-- Only a settlement of the current delivery is applied: its command row must still be
-- IN_PROGRESS with attempts = the settlement's attempts. The row update ("current") is
-- the test: it writes only such rows and returns the settlements it applied, and every
-- other CTE is driven by it, so a stale settlement (an older delivery whose visibility
-- timeout ran out and that was claimed again, or a command an operator moved) writes
-- nothing at all. A row changed by a concurrent transaction is waited for and the test
-- re-checked on its committed version (READ COMMITTED), no lock is taken beforehand.
-- One settlement at most is applied per row. Audit rows and replies carry the ordinal of
-- their settlement (from 1).
-- As in the claim, rows are reached through "= ANY(...)" of their keys; ARRAY(SELECT ...)
-- hides the values from the planner, so the primary key is probed whatever the
-- statistics say (a parameter array of 50 keys on a table of a few thousand rows would
-- be planned as a sequential scan). The command rows are updated by settle_command_rows,
-- whose plan is pinned (see 016_settle_rows.sql: the planner's own choice, a nested loop
-- over the settlement list, cost a comparison per settlement and row).
WITH current AS MATERIALIZED (
    SELECT *
    FROM commandbus.settle_command_rows(
        %(domains)b::text[], %(command_ids)b::uuid[], %(msg_ids)b::bigint[],
        %(actions)b::text[], %(statuses)b::text[], %(attempts)b::integer[],
        %(delays)b::float8[], %(error_types)b::text[], %(error_codes)b::text[],
        %(error_messages)b::text[], %(domain_set)b::text[]
    )
), counted AS (
    -- Commands of batches move from IN_PROGRESS (the only status a settlement applies
    -- to) to their new status's counter, in this statement; see count_batch_changes in
    -- 009_batches.sql. Skipped (no call) when no settled command is in a batch.
    SELECT CASE WHEN EXISTS (SELECT 1 FROM current WHERE batch_id IS NOT NULL)
        THEN commandbus.count_batch_changes(
            ARRAY(SELECT domain FROM current WHERE batch_id IS NOT NULL ORDER BY ord),
            ARRAY(SELECT batch_id FROM current WHERE batch_id IS NOT NULL ORDER BY ord),
            ARRAY(SELECT 'IN_PROGRESS'::text FROM current
                  WHERE batch_id IS NOT NULL ORDER BY ord),
            ARRAY(SELECT status FROM current WHERE batch_id IS NOT NULL ORDER BY ord))
        ELSE 0
    END AS finished
), removed AS (
    DELETE FROM commandbus.queue_message q
    WHERE q.msg_id = ANY (ARRAY(SELECT msg_id FROM current WHERE action <> 'RETRY'))
    RETURNING q.*
), archived AS (
    INSERT INTO commandbus.queue_archive (
        msg_id, queue_name, message, headers, enqueued_at, vt, read_ct, command_id
    )
    SELECT r.msg_id, r.queue_name, r.message, r.headers, r.enqueued_at, r.vt, r.read_ct,
           s.command_id
    FROM removed r
    JOIN current s ON s.msg_id = r.msg_id
    WHERE s.action = 'ARCHIVE'
), retried AS (
    UPDATE commandbus.queue_message q
    SET vt = statement_timestamp() + make_interval(secs => s.delay)
    FROM current s
    WHERE q.msg_id = ANY (ARRAY(SELECT msg_id FROM current WHERE action = 'RETRY'))
      AND s.msg_id = q.msg_id AND s.action = 'RETRY'
), events AS (
    INSERT INTO commandbus.audit (domain, command_id, event_type, details)
    SELECT a.domain, a.command_id, a.event_type, a.details::jsonb
    FROM unnest(
        %(audit_settlements)b::bigint[], %(audit_domains)b::text[],
        %(audit_command_ids)b::uuid[], %(audit_types)b::text[], %(audit_details)b::text[]
    ) WITH ORDINALITY AS a(settlement, domain, command_id, event_type, details, ord)
    WHERE a.settlement = ANY (ARRAY(SELECT ord FROM current))
    ORDER BY a.ord
), replies AS (
    INSERT INTO commandbus.queue_message (queue_name, message)
    SELECT r.queue_name, r.message::jsonb
    FROM unnest(
        %(reply_settlements)b::bigint[], %(reply_queues)b::text[],
        %(reply_messages)b::text[]
    ) WITH ORDINALITY AS r(settlement, queue_name, message, ord)
    WHERE r.settlement = ANY (ARRAY(SELECT ord FROM current))
    ORDER BY r.ord
    RETURNING queue_name
), notified AS (
    SELECT pg_notify('commandbus', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM replies) AS q
)
SELECT (SELECT count(*) FROM current) AS applied,
       (SELECT count(*) FROM notified) AS notified,
       (SELECT finished FROM counted) AS batches_finished;


-- name: get_command
SELECT domain, command_id, command_type, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, last_error_type, last_error_code,
       last_error_msg, created_at, updated_at
FROM commandbus.command
WHERE domain = %(domain)s AND command_id = %(command_id)s;


-- name: lock_command
-- Operators lock the row for the length of their transaction; a concurrent claim or
-- settle of the same command waits for it.
SELECT domain, command_id, command_type, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, last_error_type, last_error_code,
       last_error_msg, created_at, updated_at
FROM commandbus.command
WHERE domain = %(domain)s AND command_id = %(command_id)s
FOR UPDATE;


-- name: query_commands
-- Optional filters are "param IS NULL OR ..." so that one fixed statement serves every
-- combination; newest first.
SELECT domain, command_id, command_type, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, last_error_type, last_error_code,
       last_error_msg, created_at, updated_at
FROM commandbus.command
WHERE (%(domain)s::text IS NULL OR domain = %(domain)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(command_type)s::text IS NULL OR command_type = %(command_type)s::text)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
  AND (%(correlation_id)s::uuid IS NULL OR correlation_id = %(correlation_id)s::uuid)
  AND (%(batch_id)s::uuid IS NULL OR batch_id = %(batch_id)s::uuid)
ORDER BY created_at DESC, command_id DESC
LIMIT %(limit)s OFFSET %(offset)s;


-- name: audit_trail
SELECT domain, command_id, event_type, ts, details
FROM commandbus.audit
WHERE command_id = %(command_id)s
  AND (%(domain)s::text IS NULL OR domain = %(domain)s::text)
ORDER BY id;


-- name: append_audit
INSERT INTO commandbus.audit (domain, command_id, event_type, details)
SELECT %(domain)s, %(command_id)s, a.event_type, a.details::jsonb
FROM unnest(%(event_types)b::text[], %(details)b::text[])
     WITH ORDINALITY AS a(event_type, details, ord)
ORDER BY a.ord;


-- name: set_status
-- The row as it was (old) is joined to name the status the command leaves: callers hold
-- the row's lock (CommandOperations), so no one can have changed it since this
-- statement's snapshot. A command of a batch moves between its batch's counters here, in
-- the same statement (count_batch_changes in 009_batches.sql).
WITH changed AS (
    UPDATE commandbus.command c
    SET status = %(status)s,
        attempts = COALESCE(%(attempts)s::integer, c.attempts),
        msg_id = COALESCE(%(msg_id)s::bigint, c.msg_id),
        last_error_type = CASE WHEN %(set_error)s THEN %(error_type)s
                               ELSE c.last_error_type END,
        last_error_code = CASE WHEN %(set_error)s THEN %(error_code)s
                               ELSE c.last_error_code END,
        last_error_msg = CASE WHEN %(set_error)s THEN %(error_msg)s ELSE c.last_error_msg END,
        updated_at = now()
    FROM commandbus.command old
    WHERE c.domain = %(domain)s AND c.command_id = %(command_id)s
      AND old.domain = c.domain AND old.command_id = c.command_id
    RETURNING c.domain, c.batch_id, old.status AS was, c.status
)
SELECT CASE WHEN batch_id IS NOT NULL AND was <> status
            THEN commandbus.count_batch_changes(
                ARRAY[domain], ARRAY[batch_id], ARRAY[was], ARRAY[status])
            ELSE 0
       END AS batches_finished
FROM changed;


-- name: archived_message
SELECT message
FROM commandbus.queue_archive
WHERE command_id = %(command_id)s AND queue_name = %(queue)s
ORDER BY archived_at DESC, msg_id DESC
LIMIT 1;


-- name: list_troubleshooting
-- Oldest first. in_tsq (a generated column) matches the partial index command_tsq_idx.
SELECT c.domain, c.command_id, c.command_type, c.attempts, c.max_attempts,
       c.last_error_type, c.last_error_code, c.last_error_msg, c.correlation_id,
       c.reply_to, c.created_at, c.updated_at, a.message -> 'data' AS data
FROM commandbus.command c
LEFT JOIN LATERAL (
    SELECT qa.message
    FROM commandbus.queue_archive qa
    WHERE qa.command_id = c.command_id AND qa.queue_name = %(queue)s
    ORDER BY qa.archived_at DESC, qa.msg_id DESC
    LIMIT 1
) a ON true
WHERE c.in_tsq AND c.domain = %(domain)s
  AND (%(command_type)s::text IS NULL OR c.command_type = %(command_type)s::text)
ORDER BY c.created_at, c.command_id
LIMIT %(limit)s OFFSET %(offset)s;


-- name: count_troubleshooting
SELECT count(*) AS n
FROM commandbus.command
WHERE in_tsq AND domain = %(domain)s
  AND (%(command_type)s::text IS NULL OR command_type = %(command_type)s::text);
