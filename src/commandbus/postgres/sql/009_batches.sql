-- 009: batches of commands or of processes, with counters of their members' outcomes.
--
-- The counters are never recomputed from the members: every statement that changes a
-- member's status (a settle, an operator action, a withdrawal, a process update) moves
-- the member from one counter to another in the same statement, through
-- count_batch_changes below. Holding the batch row's lock while doing so serialises the
-- writers of one batch, so the counters stay exact under any number of concurrent
-- workers, and exactly one transaction sees the batch finish: that transaction writes the
-- completion notice to the batch's reply_to queue.
--
-- A batch is closed (is_open false) unless it was created open: only an open batch
-- accepts new members, and only a closed one can finish, once every member has ended
-- (completed, failed or canceled; a member in the troubleshooting queue has not ended).
CREATE TABLE commandbus.batch (
    domain                   text        NOT NULL,
    batch_id                 uuid        NOT NULL,
    -- COMMANDS: members are commands of the domain; PROCESSES: processes of the domain.
    kind                     text        NOT NULL,
    name                     text,
    status                   text        NOT NULL DEFAULT 'PENDING',
    is_open                  boolean     NOT NULL DEFAULT false,
    reply_to                 text,
    total_count              integer     NOT NULL DEFAULT 0,
    completed_count          integer     NOT NULL DEFAULT 0,
    failed_count             integer     NOT NULL DEFAULT 0,
    canceled_count           integer     NOT NULL DEFAULT 0,
    in_troubleshooting_count integer     NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    completed_at             timestamptz,
    PRIMARY KEY (batch_id, domain),
    CONSTRAINT batch_kind_check CHECK (kind IN ('COMMANDS', 'PROCESSES')),
    CONSTRAINT batch_status_check CHECK (status IN (
        'PENDING', 'IN_PROGRESS', 'COMPLETED', 'COMPLETED_WITH_FAILURES')),
    -- A counting mistake fails its statement loudly instead of drifting silently.
    CONSTRAINT batch_counts_check CHECK (
        completed_count >= 0 AND failed_count >= 0 AND canceled_count >= 0
        AND in_troubleshooting_count >= 0
        AND completed_count + failed_count + canceled_count + in_troubleshooting_count
            <= total_count)
-- Updated once per settle of its members: room on the page keeps those updates HOT (no
-- indexed column changes).
) WITH (fillfactor = 50);

-- commandbus batch list: newest first per domain.
CREATE INDEX batch_created_idx ON commandbus.batch (domain, created_at);

-- A batch's members (commandbus batch show, query_commands by batch). Partial: commands
-- sent without a batch pay nothing for it, and batch_id never changes after the insert,
-- so the HOT updates of the command row are unaffected.
CREATE INDEX command_batch_idx ON commandbus.command (batch_id, created_at)
    WHERE batch_id IS NOT NULL;

-- Processes started as a batch (BaseProcessManager.start_many(..., batch=...)). Written
-- with the row, never updated.
ALTER TABLE commandbus.process ADD COLUMN batch_id uuid;

CREATE INDEX idx_process_batch ON commandbus.process (batch_id) WHERE batch_id IS NOT NULL;

-- Which counter a member in this status is in: a command's or a process's status (their
-- names do not overlap in meaning). NULL: not ended (pending, running, waiting).
CREATE FUNCTION commandbus.batch_counter(p_status text)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE p_status
        WHEN 'COMPLETED' THEN 'completed'
        WHEN 'FAILED' THEN 'failed'
        WHEN 'COMPENSATED' THEN 'failed'
        WHEN 'CANCELED' THEN 'canceled'
        WHEN 'IN_TROUBLESHOOTING_QUEUE' THEN 'in_troubleshooting'
        WHEN 'WAITING_FOR_TSQ' THEN 'in_troubleshooting'
        WHEN 'WAITING_FOR_OPERATOR' THEN 'in_troubleshooting'
    END
$$;

-- The status of a batch with these counts: finished once it is closed and every member
-- has ended; a finished batch stays finished.
CREATE FUNCTION commandbus.batch_status(
    p_status text, p_open boolean, p_total integer, p_completed integer, p_failed integer,
    p_canceled integer
)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE
        WHEN p_status IN ('COMPLETED', 'COMPLETED_WITH_FAILURES') THEN p_status
        WHEN NOT p_open AND p_total > 0 AND p_completed + p_failed + p_canceled >= p_total
            THEN CASE WHEN p_failed + p_canceled > 0 THEN 'COMPLETED_WITH_FAILURES'
                      ELSE 'COMPLETED' END
        ELSE p_status
    END
$$;

-- Apply status changes of batch members: member i of batch (p_domains[i], p_batch_ids[i])
-- went from status p_from[i] to p_to[i] (either may be NULL: no change counted, but the
-- batch is looked at again, as after a close). Rows without a batch are ignored. Locks the
-- batch rows in key order (no deadlock between two callers), moves the counts, marks a
-- batch IN_PROGRESS once a member has moved and finished once it is done, and writes the
-- completion notice of each batch this call finished to its reply_to queue (one NOTIFY per
-- queue). Returns how many batches this call finished.
--
-- PL/pgSQL so that its plan is prepared once per session (a SQL function is planned again
-- on every call); callers with no batch members skip the call altogether.
CREATE FUNCTION commandbus.count_batch_changes(
    p_domains text[], p_batch_ids uuid[], p_from text[], p_to text[]
)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    finished integer;
    notified integer;
BEGIN
    WITH moves AS (
        SELECT m.domain, m.batch_id,
               (count(*) FILTER (WHERE commandbus.batch_counter(m.to_status) = 'completed')
                - count(*) FILTER (WHERE commandbus.batch_counter(m.from_status) = 'completed')
               )::integer AS completed,
               (count(*) FILTER (WHERE commandbus.batch_counter(m.to_status) = 'failed')
                - count(*) FILTER (WHERE commandbus.batch_counter(m.from_status) = 'failed')
               )::integer AS failed,
               (count(*) FILTER (WHERE commandbus.batch_counter(m.to_status) = 'canceled')
                - count(*) FILTER (WHERE commandbus.batch_counter(m.from_status) = 'canceled')
               )::integer AS canceled,
               (count(*) FILTER (
                    WHERE commandbus.batch_counter(m.to_status) = 'in_troubleshooting')
                - count(*) FILTER (
                    WHERE commandbus.batch_counter(m.from_status) = 'in_troubleshooting')
               )::integer AS in_troubleshooting,
               bool_or(m.from_status IS DISTINCT FROM m.to_status) AS moved
        FROM unnest(p_domains, p_batch_ids, p_from, p_to)
             AS m(domain, batch_id, from_status, to_status)
        WHERE m.batch_id IS NOT NULL
        GROUP BY m.domain, m.batch_id
    ), locked AS MATERIALIZED (
        -- FOR UPDATE returns the latest committed version (after waiting for a writer),
        -- so the new counts below are computed from the row as it is now. ARRAY(...)
        -- makes the planner probe the primary key (as in the settle query).
        SELECT b.*
        FROM commandbus.batch b
        WHERE b.batch_id = ANY (ARRAY(SELECT batch_id FROM moves))
          AND b.domain = ANY (ARRAY(SELECT DISTINCT domain FROM moves))
        ORDER BY b.batch_id, b.domain
        FOR UPDATE
    ), next AS MATERIALIZED (
        SELECT l.domain, l.batch_id, l.kind, l.name, l.reply_to, l.total_count,
               l.status AS was,
               l.completed_count + m.completed AS completed_count,
               l.failed_count + m.failed AS failed_count,
               l.canceled_count + m.canceled AS canceled_count,
               l.in_troubleshooting_count + m.in_troubleshooting AS in_troubleshooting_count,
               commandbus.batch_status(
                   CASE WHEN l.status = 'PENDING' AND m.moved THEN 'IN_PROGRESS'
                        ELSE l.status END,
                   l.is_open, l.total_count, l.completed_count + m.completed,
                   l.failed_count + m.failed, l.canceled_count + m.canceled) AS status
        FROM locked l
        JOIN moves m ON m.batch_id = l.batch_id AND m.domain = l.domain
    ), finishing AS MATERIALIZED (
        SELECT n.*
        FROM next n
        WHERE n.status IN ('COMPLETED', 'COMPLETED_WITH_FAILURES')
          AND n.was NOT IN ('COMPLETED', 'COMPLETED_WITH_FAILURES')
    ), counted AS (
        UPDATE commandbus.batch b
        SET completed_count = n.completed_count,
            failed_count = n.failed_count,
            canceled_count = n.canceled_count,
            in_troubleshooting_count = n.in_troubleshooting_count,
            status = n.status,
            completed_at = CASE WHEN n.batch_id IN (SELECT batch_id FROM finishing)
                                THEN now() ELSE b.completed_at END,
            updated_at = now()
        FROM next n
        WHERE b.batch_id = ANY (ARRAY(SELECT batch_id FROM next))
          AND b.batch_id = n.batch_id AND b.domain = n.domain
    ), noticed AS (
        -- The notice of a batch is written by the one call that finished it.
        INSERT INTO commandbus.queue_message (queue_name, message)
        SELECT f.reply_to, jsonb_build_object(
                   'batch_id', f.batch_id, 'domain', f.domain, 'kind', f.kind,
                   'name', f.name, 'status', f.status, 'total', f.total_count,
                   'completed', f.completed_count, 'failed', f.failed_count,
                   'canceled', f.canceled_count,
                   'in_troubleshooting', f.in_troubleshooting_count)
        FROM finishing f
        WHERE f.reply_to IS NOT NULL
        ORDER BY f.batch_id, f.domain
        RETURNING queue_name
    )
    SELECT (SELECT count(*) FROM finishing),
           (SELECT count(*)
            FROM (SELECT pg_notify('commandbus', q.queue_name)
                  FROM (SELECT DISTINCT queue_name FROM noticed) AS q) AS n)
    INTO finished, notified;
    RETURN finished;
END
$$;
