-- Named queries of the outbox and its relay (commandbus.postgres.outbox).


-- name: add_to_outbox
-- In the sender's transaction: the commands for other clusters' domains.
WITH added AS (
    INSERT INTO commandbus.outbox (target_domain, command_id, payload)
    SELECT o.domain, o.command_id, o.payload::jsonb
    FROM unnest(%(domains)b::text[], %(command_ids)b::uuid[], %(payloads)b::text[])
         WITH ORDINALITY AS o(domain, command_id, payload, ord)
    ORDER BY o.ord
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS ids, pg_notify('commandbus', '$outbox') AS notified
FROM added;


-- name: take_outbox
-- The oldest rows no other relay holds; locked until the relay's source transaction
-- ends (it deletes them once their target committed).
SELECT id, target_domain, command_id, payload
FROM commandbus.outbox
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
SELECT count(*) AS pending, min(created_at) AS oldest, statement_timestamp() AS now
FROM commandbus.outbox;


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
