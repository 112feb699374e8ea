-- Named queries of the outbox and its relay (commandbus.postgres.outbox).


-- name: add_to_outbox
-- In the sender's transaction: the commands for other clusters' domains, each recorded
-- as forwarded (its key refuses a command id sent twice; a withdrawal finds it there).
-- A request whose (command_id, domain) was forwarded before gets no outbox row and is
-- returned in duplicates: the caller raises DuplicateCommandError, which rolls back.
WITH req AS MATERIALIZED (
    SELECT o.domain, o.command_id, o.payload, o.ord
    FROM unnest(%(domains)b::text[], %(command_ids)b::uuid[], %(payloads)b::text[])
         WITH ORDINALITY AS o(domain, command_id, payload, ord)
), fwd AS (
    INSERT INTO commandbus.forwarded (command_id, target_domain)
    SELECT command_id, domain FROM req ORDER BY ord
    ON CONFLICT (command_id, target_domain) DO NOTHING
    RETURNING command_id, target_domain
), added AS (
    INSERT INTO commandbus.outbox (kind, target_domain, command_id, payload)
    SELECT 'COMMAND', req.domain, req.command_id, req.payload::jsonb
    FROM req
    JOIN fwd ON fwd.command_id = req.command_id AND fwd.target_domain = req.domain
    ORDER BY req.ord
    RETURNING id
)
SELECT (SELECT array_agg(id ORDER BY id) FROM added) AS ids,
       (SELECT array_agg(req.command_id ORDER BY req.ord) FROM req
        WHERE NOT EXISTS (SELECT 1 FROM fwd WHERE fwd.command_id = req.command_id
                                              AND fwd.target_domain = req.domain))
           AS duplicates,
       pg_notify('commandbus', '$outbox') AS notified;


-- name: take_outbox
-- The oldest rows no other relay holds (for the domains the relay knows, when it names
-- them; never a parked one); locked until the relay's source transaction ends (it deletes them once their
-- target committed).
SELECT id, kind, target_domain, command_id, payload
FROM commandbus.outbox
WHERE parked_at IS NULL
  AND (%(domains)s::text[] IS NULL OR target_domain = ANY (%(domains)s::text[]))
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;


-- name: take_outgoing_messages
-- Messages on this cluster's queues that belong to another cluster's domain (a reply to
-- a process there): relayed like the outbox, then deleted here.
SELECT m.msg_id, m.queue_name, m.message
FROM commandbus.queue_message m
WHERE m.queue_name = ANY (%(queues)b::text[]) AND m.vt <= statement_timestamp()
ORDER BY m.msg_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;


-- name: drop_relayed
WITH gone_rows AS (
    DELETE FROM commandbus.outbox WHERE id = ANY (%(ids)b::bigint[]) RETURNING id
), gone_messages AS (
    DELETE FROM commandbus.queue_message WHERE msg_id = ANY (%(msg_ids)b::bigint[])
    RETURNING msg_id
)
SELECT (SELECT count(*) FROM gone_rows) AS rows, (SELECT count(*) FROM gone_messages) AS messages;


-- name: outbox_lag
SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,
       min(created_at) FILTER (WHERE parked_at IS NULL) AS oldest,
       statement_timestamp() AS now,
       count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked
FROM commandbus.outbox;


-- name: park_outbox_row
-- A row its target refused: relays no longer take it (015).
UPDATE commandbus.outbox SET parked_at = now(), error = %(error)s WHERE id = %(id)s;


-- name: lock_forwarded
-- Where a command this cluster forwarded went, and its outbox row if the relay has not
-- taken it yet: locked, so no relay takes it while the caller's transaction lasts (a
-- relay holding it now is waited for; once it committed, the row is gone: relayed).
SELECT f.target_domain,
       (SELECT o.id FROM commandbus.outbox o
        WHERE o.command_id = f.command_id AND o.kind = 'COMMAND'
          AND o.target_domain = f.target_domain
        FOR UPDATE) AS outbox_id
FROM commandbus.forwarded f
WHERE f.command_id = %(command_id)s
ORDER BY f.forwarded_at DESC
LIMIT 1;


-- name: drop_pending_command
DELETE FROM commandbus.outbox
WHERE command_id = %(command_id)s AND target_domain = %(domain)s AND kind = 'COMMAND';


-- name: add_withdrawal
WITH added AS (
    INSERT INTO commandbus.outbox (kind, target_domain, command_id, payload)
    VALUES ('WITHDRAW', %(domain)s, %(command_id)s, %(payload)s::jsonb)
    RETURNING id
)
SELECT id, pg_notify('commandbus', '$outbox') AS notified FROM added;


-- name: prune_ledgers
WITH received AS (
    DELETE FROM commandbus.relay_received WHERE received_at < %(before)s RETURNING 1
), forwarded AS (
    DELETE FROM commandbus.forwarded f
    WHERE f.forwarded_at < %(before)s
      AND NOT EXISTS (SELECT 1 FROM commandbus.outbox o WHERE o.command_id = f.command_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM received) + (SELECT count(*) FROM forwarded) AS pruned;


-- name: receive_messages
-- On the target cluster: the relayed messages (replies), each enqueued unless its relay
-- key (command id, message id on its source) was received before — relayed by this
-- relay or another copy that died before its source committed. One NOTIFY per queue.
WITH m AS MATERIALIZED (
    SELECT u.queue, u.command_id, u.source_msg_id, u.message, u.ord
    FROM unnest(%(queues)b::text[], %(command_ids)b::uuid[], %(source_msg_ids)b::bigint[],
                %(messages)b::text[]) WITH ORDINALITY AS u(queue, command_id, source_msg_id,
                                                          message, ord)
), fresh AS (
    INSERT INTO commandbus.relay_received (command_id, source_msg_id)
    SELECT command_id, source_msg_id FROM m ORDER BY ord
    ON CONFLICT (command_id, source_msg_id) DO NOTHING
    RETURNING command_id, source_msg_id
), queued AS (
    INSERT INTO commandbus.queue_message (queue_name, message, vt)
    SELECT m.queue, m.message::jsonb, statement_timestamp()
    FROM m JOIN fresh USING (command_id, source_msg_id)
    ORDER BY m.ord
    RETURNING queue_name
)
SELECT (SELECT count(*) FROM queued) AS received,
       (SELECT count(*)
        FROM (SELECT pg_notify('commandbus', q.queue_name)
              FROM (SELECT DISTINCT queue_name FROM queued) AS q) AS n) AS notified;


-- name: receive_commands
-- On the target cluster: insert_commands (queries.sql) made idempotent. A command whose
-- (command_id, domain) exists already — relayed before, by this relay or another copy —
-- is skipped, with no message and no audit event; the others are sent as by send().
WITH req AS MATERIALIZED (
    SELECT r.domain, r.command_id, r.command_type, r.data, r.correlation_id, r.reply_to,
           r.max_attempts, r.delay, r.headers, r.ord,
           nextval('commandbus.queue_message_msg_id_seq'::regclass) AS msg_id
    FROM unnest(
        %(domains)b::text[], %(command_ids)b::uuid[], %(command_types)b::text[],
        %(data)b::text[], %(correlation_ids)b::uuid[], %(reply_tos)b::text[],
        %(max_attempts)b::integer[], %(delays)b::float8[], %(headers)b::text[]
    ) WITH ORDINALITY AS r(domain, command_id, command_type, data, correlation_id,
                           reply_to, max_attempts, delay, headers, ord)
), cmd AS (
    INSERT INTO commandbus.command (
        domain, command_id, command_type, status, attempts, max_attempts, msg_id,
        correlation_id, reply_to
    )
    SELECT domain, command_id, command_type, 'PENDING', 0, max_attempts, msg_id,
           correlation_id, reply_to
    FROM req
    ORDER BY domain, command_id
    ON CONFLICT (command_id, domain) DO NOTHING
    RETURNING command_id, domain
), fresh AS MATERIALIZED (
    SELECT req.* FROM req JOIN cmd USING (command_id, domain)
), msg AS (
    INSERT INTO commandbus.queue_message (msg_id, queue_name, message, vt)
    OVERRIDING SYSTEM VALUE
    SELECT msg_id, domain || '__commands',
           jsonb_build_object(
               'domain', domain, 'command_type', command_type, 'command_id', command_id,
               'correlation_id', correlation_id, 'reply_to', reply_to, 'data', data::jsonb)
           || CASE WHEN headers IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('headers', headers::jsonb) END,
           statement_timestamp() + make_interval(secs => delay)
    FROM fresh
), sent AS (
    INSERT INTO commandbus.audit (domain, command_id, event_type, details)
    SELECT domain, command_id, 'SENT', jsonb_build_object('msg_id', msg_id, 'relayed', true)
    FROM fresh
)
SELECT (SELECT count(*) FROM fresh) AS received,
       (SELECT count(*)
        FROM (SELECT pg_notify('commandbus', q.queue)
              FROM (SELECT DISTINCT domain || '__commands' AS queue FROM fresh) AS q) AS n)
           AS notified;
