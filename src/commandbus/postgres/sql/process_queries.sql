-- Named queries of commandbus.postgres.process_repository (not a migration).
-- Batches are passed as parallel arrays and expanded with unnest: one statement, one
-- round trip, whatever the batch size.

-- name: insert_processes
-- Insert new processes; ids that exist already are skipped (a concurrent insert of the same
-- id waits for the other transaction, then skips). Returns the ids inserted. initial_data
-- (the start input) and batch_id are written here only: update_processes never touches
-- them.
INSERT INTO commandbus.process (
    domain, process_id, process_type, status, current_step, state, error_code,
    error_message, created_at, updated_at, completed_at, version, awaiting_command_id,
    command_seq, deadline_at, compensation, initial_data, batch_id)
SELECT u.domain, u.process_id, u.process_type, u.status, u.current_step, u.state::jsonb,
       u.error_code, u.error_message, u.created_at, now(), u.completed_at, 1,
       u.awaiting_command_id, u.command_seq, u.deadline_at, u.compensation::jsonb,
       u.initial_data::jsonb, u.batch_id
FROM unnest(
    %(domain)b::text[], %(process_id)b::uuid[], %(process_type)b::text[],
    %(status)b::text[], %(current_step)b::text[], %(state)b::text[],
    %(error_code)b::text[], %(error_message)b::text[], %(created_at)b::timestamptz[],
    %(completed_at)b::timestamptz[], %(awaiting_command_id)b::uuid[],
    %(command_seq)b::int[], %(deadline_at)b::timestamptz[], %(compensation)b::text[],
    %(initial_data)b::text[], %(batch_id)b::uuid[]
) AS u(domain, process_id, process_type, status, current_step, state, error_code,
       error_message, created_at, completed_at, awaiting_command_id, command_seq,
       deadline_at, compensation, initial_data, batch_id)
ON CONFLICT (domain, process_id) DO NOTHING
RETURNING process_id, updated_at;


-- name: update_processes
-- Write whole rows, each only if its version is still the expected one; updated_at is the
-- database's time. Returns what was updated (the caller detects missing rows).
--
-- Each array is wrapped in a scalar subquery: the planner then cannot see how many rows
-- the batch has and assumes a few, so it probes the primary key per row. Seeing 100 rows,
-- it would rather scan the whole table while it believes the table small (a young table
-- whose statistics lag behind: measured 2.3 ms per batch of 100 on 5,000 rows, growing
-- with the table, instead of 0.8 ms).
--
-- A process of a batch moves between its batch's counters in this statement
-- (count_batch_changes, 009_batches.sql): the row as it was ("was") names the status it
-- leaves. It is read by a subquery of RETURNING, not joined in as a second copy of the
-- table: the planner, believing a young table small, probed that copy through the status
-- index and read every process of the domain for each row. Writers hold the row's lock
-- (the engine locks before it decides) or their version test fails, so no one changed it
-- since this statement's snapshot.
WITH changed AS (
    UPDATE commandbus.process p
    SET status = u.status,
        current_step = u.current_step,
        state = u.state::jsonb,
        error_code = u.error_code,
        error_message = u.error_message,
        completed_at = u.completed_at,
        awaiting_command_id = u.awaiting_command_id,
        command_seq = u.command_seq,
        deadline_at = u.deadline_at,
        compensation = u.compensation::jsonb,
        version = p.version + 1,
        updated_at = now()
    FROM unnest(
        (SELECT %(domain)b::text[]), (SELECT %(process_id)b::uuid[]),
        (SELECT %(version)b::int[]), (SELECT %(status)b::text[]),
        (SELECT %(current_step)b::text[]), (SELECT %(state)b::text[]),
        (SELECT %(error_code)b::text[]), (SELECT %(error_message)b::text[]),
        (SELECT %(completed_at)b::timestamptz[]), (SELECT %(awaiting_command_id)b::uuid[]),
        (SELECT %(command_seq)b::int[]), (SELECT %(deadline_at)b::timestamptz[]),
        (SELECT %(compensation)b::text[])
    ) AS u(domain, process_id, version, status, current_step, state, error_code,
           error_message, completed_at, awaiting_command_id, command_seq, deadline_at,
           compensation)
    WHERE p.domain = u.domain AND p.process_id = u.process_id AND p.version = u.version
    RETURNING p.domain, p.process_id, p.version, p.updated_at, p.batch_id,
              -- The status the row had, for a process of a batch only: a subquery of
              -- RETURNING reads the statement's snapshot, from before this update.
              CASE WHEN p.batch_id IS NOT NULL THEN (
                  SELECT o.status FROM commandbus.process o
                  WHERE o.domain = p.domain AND o.process_id = p.process_id
              ) END AS was,
              p.status
), counted AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM changed WHERE batch_id IS NOT NULL)
        THEN commandbus.count_batch_changes(
            ARRAY(SELECT domain FROM changed WHERE batch_id IS NOT NULL ORDER BY domain, process_id),
            ARRAY(SELECT batch_id FROM changed WHERE batch_id IS NOT NULL ORDER BY domain, process_id),
            ARRAY(SELECT was FROM changed WHERE batch_id IS NOT NULL ORDER BY domain, process_id),
            ARRAY(SELECT status FROM changed WHERE batch_id IS NOT NULL ORDER BY domain, process_id))
        ELSE 0
    END AS finished
)
SELECT c.domain, c.process_id, c.version, c.updated_at
FROM changed c, counted;


-- name: get_process
SELECT domain, process_id, process_type, status, current_step, state, error_code,
       error_message, created_at, updated_at, completed_at, version, awaiting_command_id,
       command_seq, deadline_at, compensation, initial_data, batch_id
FROM commandbus.process
WHERE domain = %(domain)s AND process_id = %(process_id)s;


-- name: lock_processes
-- Lock the (domain, process_id) pairs given, in the order given: callers pass them sorted,
-- so two routers locking overlapping sets never deadlock. One primary-key probe per pair
-- (a LATERAL subquery: the plan cannot depend on the table's statistics, which are often
-- stale or missing on a young table). Under READ COMMITTED a row another transaction
-- changed is re-read after its lock is released, so the values returned are the latest
-- committed ones.
SELECT p.domain, p.process_id, p.process_type, p.status, p.current_step, p.state,
       p.error_code, p.error_message, p.created_at, p.updated_at, p.completed_at,
       p.version, p.awaiting_command_id, p.command_seq, p.deadline_at, p.compensation,
       p.initial_data, p.batch_id
FROM unnest(%(domains)b::text[], %(process_ids)b::uuid[]) AS k(domain, process_id)
CROSS JOIN LATERAL (
    SELECT x.*
    FROM commandbus.process x
    WHERE x.domain = k.domain AND x.process_id = k.process_id
    FOR UPDATE
) p;


-- name: find_processes_by_status
SELECT domain, process_id, process_type, status, current_step, state, error_code,
       error_message, created_at, updated_at, completed_at, version, awaiting_command_id,
       command_seq, deadline_at, compensation, initial_data, batch_id
FROM commandbus.process
WHERE domain = %(domain)s AND status = ANY(%(statuses)b::text[])
ORDER BY created_at, process_id
LIMIT %(limit)s;


-- name: count_processes_by_status
SELECT status, count(*) AS n
FROM commandbus.process
WHERE domain = %(domain)s
GROUP BY status;


-- name: find_stuck_processes
-- In-flight processes past their step deadline, or unchanged since updated_before.
SELECT domain, process_id, process_type, status, current_step, state, error_code,
       error_message, created_at, updated_at, completed_at, version, awaiting_command_id,
       command_seq, deadline_at, compensation, initial_data, batch_id
FROM commandbus.process
WHERE domain = %(domain)s
  AND status IN ('PENDING', 'IN_PROGRESS', 'WAITING', 'WAITING_FOR_TSQ', 'COMPENSATING')
  AND (deadline_at < %(deadline_before)s
       OR (%(updated_before)s::timestamptz IS NOT NULL
           AND updated_at < %(updated_before)s::timestamptz))
ORDER BY coalesce(deadline_at, updated_at), process_id
LIMIT %(limit)s;


-- name: audit_of_processes
-- Read after lock_processes, as a separate statement (the adapter pipelines the two): its
-- snapshot is taken after the locks were granted, so it includes what the previous lock
-- holder committed. One index range scan per (domain, process_id) pair, in the pairs'
-- order; each process's entries in send order. pair: the 1-based index of the pair.
SELECT k.pair, a.step_name, a.command_id, a.command_type, a.command_data, a.sent_at,
       a.reply_outcome, a.reply_data, a.received_at, a.kind, a.error_code, a.error_message,
       a.timed_out_at, a.scheduled_for
FROM unnest(%(domains)b::text[], %(process_ids)b::uuid[]) WITH ORDINALITY
     AS k(domain, process_id, pair)
CROSS JOIN LATERAL (
    SELECT x.*
    FROM commandbus.process_audit x
    WHERE x.domain = k.domain AND x.process_id = k.process_id
    ORDER BY x.sent_at, x.id
) a;


-- name: audit_trail
SELECT domain, process_id, step_name, command_id, command_type, command_data, sent_at,
       reply_outcome, reply_data, received_at, kind, error_code, error_message, timed_out_at,
       scheduled_for
FROM commandbus.process_audit
WHERE domain = %(domain)s AND process_id = %(process_id)s
ORDER BY sent_at, id;


-- name: insert_audit
INSERT INTO commandbus.process_audit (
    domain, process_id, step_name, kind, command_id, command_type, command_data, sent_at,
    reply_outcome, reply_data, received_at, error_code, error_message, timed_out_at,
    scheduled_for)
SELECT u.domain, u.process_id, u.step_name, u.kind, u.command_id, u.command_type,
       u.command_data::jsonb, u.sent_at, u.reply_outcome, u.reply_data::jsonb,
       u.received_at, u.error_code, u.error_message, u.timed_out_at, u.scheduled_for
FROM unnest(
    %(domain)b::text[], %(process_id)b::uuid[], %(step_name)b::text[], %(kind)b::text[],
    %(command_id)b::uuid[], %(command_type)b::text[], %(command_data)b::text[],
    %(sent_at)b::timestamptz[], %(reply_outcome)b::text[], %(reply_data)b::text[],
    %(received_at)b::timestamptz[], %(error_code)b::text[], %(error_message)b::text[],
    %(timed_out_at)b::timestamptz[], %(scheduled_for)b::timestamptz[]
) WITH ORDINALITY AS u(domain, process_id, step_name, kind, command_id, command_type,
       command_data, sent_at, reply_outcome, reply_data, received_at, error_code,
       error_message, timed_out_at, scheduled_for, ord)
ORDER BY u.ord;


-- name: update_audit
-- Record replies (and timeouts) on the audit entries of their commands. Arrays wrapped in
-- scalar subqueries for per-row index probes, as in update_processes.
UPDATE commandbus.process_audit a
SET reply_outcome = u.reply_outcome,
    reply_data = u.reply_data::jsonb,
    received_at = u.received_at,
    error_code = u.error_code,
    error_message = u.error_message,
    timed_out_at = u.timed_out_at
FROM unnest(
    (SELECT %(domain)b::text[]), (SELECT %(process_id)b::uuid[]),
    (SELECT %(command_id)b::uuid[]), (SELECT %(reply_outcome)b::text[]),
    (SELECT %(reply_data)b::text[]), (SELECT %(received_at)b::timestamptz[]),
    (SELECT %(error_code)b::text[]), (SELECT %(error_message)b::text[]),
    (SELECT %(timed_out_at)b::timestamptz[])
) AS u(domain, process_id, command_id, reply_outcome, reply_data, received_at, error_code,
       error_message, timed_out_at)
WHERE a.domain = u.domain AND a.process_id = u.process_id AND a.command_id = u.command_id;


-- name: insert_messages
INSERT INTO commandbus.process_message_log (
    disposition, reason, domain, process_id, command_id, queue_name, msg_id, message)
SELECT u.disposition, u.reason, u.domain, u.process_id, u.command_id, u.queue_name,
       u.msg_id, u.message::jsonb
FROM unnest(
    %(disposition)b::text[], %(reason)b::text[], %(domain)b::text[], %(process_id)b::uuid[],
    %(command_id)b::uuid[], %(queue_name)b::text[], %(msg_id)b::bigint[], %(message)b::text[]
) WITH ORDINALITY AS u(disposition, reason, domain, process_id, command_id, queue_name,
       msg_id, message, ord)
ORDER BY u.ord;


-- name: list_messages
SELECT id, disposition, reason, domain, process_id, command_id, queue_name, msg_id,
       message, recorded_at
FROM commandbus.process_message_log
WHERE (%(domain)s::text IS NULL OR domain = %(domain)s::text)
  AND (%(process_id)s::uuid IS NULL OR process_id = %(process_id)s::uuid)
  AND (%(disposition)s::text IS NULL OR disposition = %(disposition)s::text)
  AND (%(record_id)s::bigint IS NULL OR id = %(record_id)s::bigint)
ORDER BY id
LIMIT %(limit)s;


-- name: delete_message
DELETE FROM commandbus.process_message_log WHERE id = %(id)s;
