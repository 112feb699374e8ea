-- Named queries of the event store and its subscriptions (see 007_events.sql).
-- Event columns, in the order commandbus.postgres.events reads them: stream_name,
-- stream_version, position, transaction_id, event_id, event_type, data, metadata,
-- correlation_id, causation_id, recorded_at.


-- name: append
-- Bump the stream's head by the number of events, under its row lock, but only if it is
-- at the expected version (NULL: any); then insert the events after the old head. No row
-- comes back when an existing stream was at another version (nothing written); a row with
-- ok = false when the stream is new but a version above 0 was expected: no event is
-- inserted, and the caller rolls back the head row. One NOTIFY per call.
WITH head AS (
    INSERT INTO commandbus.event_stream AS s (stream_name, version)
    VALUES (%(stream)s, cardinality(%(event_ids)b::uuid[]))
    ON CONFLICT (stream_name) DO UPDATE
        SET version = s.version + cardinality(%(event_ids)b::uuid[]),
            updated_at = now()
        WHERE %(expected)s::bigint IS NULL OR s.version = %(expected)s::bigint
    -- xmax = 0: the row was inserted (a new stream), not updated.
    RETURNING s.version,
              s.xmax <> 0 OR %(expected)s::bigint IS NULL OR %(expected)s::bigint = 0 AS ok
), inserted AS (
    INSERT INTO commandbus.event (
        stream_name, category, stream_version, event_id, event_type, data, metadata,
        correlation_id, causation_id
    )
    SELECT %(stream)s, %(category)s, head.version - cardinality(%(event_ids)b::uuid[]) + u.ord,
           u.event_id, u.event_type, u.data::jsonb, u.metadata::jsonb,
           u.correlation_id, u.causation_id
    FROM head, unnest(
        %(event_ids)b::uuid[], %(event_types)b::text[], %(data)b::text[],
        %(metadata)b::text[], %(correlation_ids)b::uuid[], %(causation_ids)b::uuid[]
    ) WITH ORDINALITY AS u(event_id, event_type, data, metadata, correlation_id,
                           causation_id, ord)
    WHERE head.ok
    ORDER BY u.ord
    RETURNING position
)
SELECT head.version, head.ok,
       (SELECT array_agg(position ORDER BY position) FROM inserted) AS positions,
       pg_notify('commandbus', '$events') AS notified
FROM head;


-- name: stream_version
SELECT coalesce((SELECT version FROM commandbus.event_stream WHERE stream_name = %(stream)s), 0);


-- name: existing_event_ids
-- After an append failed on the event id key: the requested ids that are stored.
SELECT event_id FROM commandbus.event WHERE event_id = ANY (%(event_ids)b::uuid[]);


-- name: read_stream
SELECT stream_name, stream_version, position, transaction_id::text::bigint, event_id,
       event_type, data, metadata, correlation_id, causation_id, recorded_at
FROM commandbus.event
WHERE stream_name = %(stream)s AND stream_version >= %(from_version)s
ORDER BY stream_version
LIMIT %(limit)s;


-- name: read_all
-- In commit order, and only events of transactions older than every transaction still
-- running: an event whose transaction is still open may hold a smaller position than
-- events already visible, so the reader stops before it instead of passing it
-- (events_after, 013: no upper bound here but the largest checkpoint there can be).
SELECT stream_name, stream_version, position, transaction_id::text::bigint, event_id,
       event_type, data, metadata, correlation_id, causation_id, recorded_at
FROM commandbus.events_after(
    %(after_tx)s::text::xid8, %(after_position)s::bigint,
    '18446744073709551615'::xid8, 9223372036854775807,
    %(limit)s, %(categories)s::text[], %(event_types)s::text[]
);


-- name: count_after
-- Events stored after a checkpoint, delivered or not yet deliverable (whatever the
-- transactions still open).
SELECT count(*)
FROM commandbus.event
WHERE (transaction_id, position) > (%(after_tx)s::text::xid8, %(after_position)s::bigint)
  AND (%(categories)s::text[] IS NULL OR category = ANY (%(categories)s::text[]))
  AND (%(event_types)s::text[] IS NULL OR event_type = ANY (%(event_types)s::text[]));


-- name: end_checkpoint
-- The last event a reader of all streams can see now (no row when there is none).
SELECT transaction_id::text::bigint, position
FROM commandbus.event
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, position DESC
LIMIT 1;


-- name: ensure_subscription
-- DO NOTHING: DO UPDATE would lock the row, i.e. wait for a consumer holding it.
INSERT INTO commandbus.subscription (name, categories, event_types)
VALUES (%(name)s, %(categories)s, %(event_types)s)
ON CONFLICT (name) DO NOTHING;


-- name: take_subscription
-- Lock the subscription row, skipping it if another consumer holds it (no row back), and
-- read its next events (read_all's rules) in the same round trip: one row with NULL event
-- columns when there is nothing new. The subscription looks at the next %(look_ahead)s
-- events only (the window; its last one comes back in every row): a filtered
-- subscription that wants fewer than %(limit)s of them moves past the window, instead of
-- scanning the same unwanted events again on every poll.
WITH sub AS MATERIALIZED (
    SELECT transaction_id, position
    FROM commandbus.subscription
    WHERE name = %(name)s
    FOR UPDATE SKIP LOCKED
), window_end AS MATERIALIZED (
    SELECT w.transaction_id, w.position
    FROM sub, commandbus.events_window_end(sub.transaction_id, sub.position, %(look_ahead)s) w
)
SELECT sub.transaction_id::text::bigint, sub.position,
       we.transaction_id::text::bigint, we.position,
       e.stream_name, e.stream_version, e.position, e.transaction_id::text::bigint, e.event_id,
       e.event_type, e.data, e.metadata, e.correlation_id, e.causation_id, e.recorded_at
FROM sub
LEFT JOIN window_end we ON true
LEFT JOIN LATERAL commandbus.events_after(
    sub.transaction_id, sub.position, we.transaction_id, we.position,
    %(limit)s, %(categories)s::text[], %(event_types)s::text[]
) e ON true
ORDER BY e.transaction_id, e.position;


-- name: advance_subscription
-- After a handled batch (positions): the count of failed attempts is cleared once the
-- event it counts has been handled.
UPDATE commandbus.subscription
SET transaction_id = %(tx)s::text::xid8, position = %(position)s,
    handled = handled + cardinality(%(positions)s::bigint[]),
    failing_position = CASE WHEN failing_position = ANY (%(positions)s::bigint[])
                            THEN NULL ELSE failing_position END,
    failures = CASE WHEN failing_position = ANY (%(positions)s::bigint[])
                    THEN 0 ELSE failures END,
    last_error = CASE WHEN failing_position = ANY (%(positions)s::bigint[])
                      THEN NULL ELSE last_error END,
    categories = %(categories)s, event_types = %(event_types)s,
    updated_at = now()
WHERE name = %(name)s;


-- name: record_failure
-- One failed attempt at an event of the subscription (if the checkpoint has not passed it
-- meanwhile); at attempt park_after (NULL: never), park it and move the checkpoint past
-- it. Returns whether it was parked (no row: the checkpoint had passed it, or no such
-- subscription). A comparison with a NULL park_after is NULL, which counts as false.
WITH sub AS MATERIALIZED (
    SELECT name,
           CASE WHEN failing_position = %(position)s THEN failures + 1 ELSE 1 END AS failures
    FROM commandbus.subscription
    WHERE name = %(name)s
      AND (transaction_id, position) < (%(tx)s::text::xid8, %(position)s::bigint)
    FOR UPDATE
), parked AS (
    INSERT INTO commandbus.subscription_parked (name, position, attempts, error)
    SELECT name, %(position)s, failures, %(error)s FROM sub WHERE failures >= %(park_after)s::integer
    ON CONFLICT (name, position) DO UPDATE
        SET attempts = EXCLUDED.attempts, error = EXCLUDED.error, parked_at = now()
    RETURNING name
), updated AS (
    UPDATE commandbus.subscription s
    SET failing_position = CASE WHEN sub.failures >= %(park_after)s::integer THEN NULL
                                ELSE %(position)s END,
        failures = CASE WHEN sub.failures >= %(park_after)s::integer THEN 0 ELSE sub.failures END,
        last_error = %(error)s,
        transaction_id = CASE WHEN sub.failures >= %(park_after)s::integer
                              THEN %(tx)s::text::xid8 ELSE s.transaction_id END,
        position = CASE WHEN sub.failures >= %(park_after)s::integer
                        THEN %(position)s ELSE s.position END,
        updated_at = now()
    FROM sub
    WHERE s.name = sub.name
    RETURNING sub.failures >= %(park_after)s::integer AS parked
)
SELECT parked FROM updated;


-- name: subscriptions
-- Every subscription (or one, by name), with its parked count and its lag: the events
-- after its checkpoint that match its filter.
SELECT s.name, s.transaction_id::text::bigint, s.position, s.categories, s.event_types,
       s.handled,
       (SELECT count(*) FROM commandbus.subscription_parked p WHERE p.name = s.name),
       (SELECT count(*) FROM commandbus.event ev
        WHERE (ev.transaction_id, ev.position) > (s.transaction_id, s.position)
          AND (s.categories IS NULL OR ev.category = ANY (s.categories))
          AND (s.event_types IS NULL OR ev.event_type = ANY (s.event_types))),
       s.failing_position, s.failures, s.last_error, s.updated_at
FROM commandbus.subscription s
WHERE %(name)s::text IS NULL OR s.name = %(name)s::text
ORDER BY s.name;


-- name: reset_subscription
UPDATE commandbus.subscription
SET transaction_id = %(tx)s::text::xid8, position = %(position)s,
    failing_position = NULL, failures = 0, last_error = NULL, updated_at = now()
WHERE name = %(name)s;


-- name: parked_events
SELECT e.stream_name, e.stream_version, e.position, e.transaction_id::text::bigint, e.event_id,
       e.event_type, e.data, e.metadata, e.correlation_id, e.causation_id, e.recorded_at,
       p.attempts, p.error, p.parked_at
FROM commandbus.subscription_parked p
JOIN commandbus.event e ON e.position = p.position
WHERE p.name = %(name)s
ORDER BY e.transaction_id, e.position
LIMIT %(limit)s;


-- name: get_snapshot
SELECT version, state FROM commandbus.event_snapshot WHERE stream_name = %(stream)s;


-- name: put_snapshot
-- Never replaces a snapshot with an older one.
INSERT INTO commandbus.event_snapshot (stream_name, version, state)
VALUES (%(stream)s, %(version)s, %(state)s::jsonb)
ON CONFLICT (stream_name) DO UPDATE
    SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now()
    WHERE event_snapshot.version < EXCLUDED.version;


-- name: load_streams
-- Several streams: each one's snapshot (kind 0) and up to limit events
-- after it (kind 1), ordered by stream, then kind, then version; of an event only what
-- folding it needs (id, type, data).
WITH s AS (
    SELECT DISTINCT stream_name FROM unnest(%(streams)b::text[]) AS u(stream_name)
), snap AS MATERIALIZED (
    SELECT es.stream_name, es.version, es.state
    FROM commandbus.event_snapshot es JOIN s USING (stream_name)
)
SELECT 0 AS kind, snap.stream_name, snap.version, NULL::uuid, NULL::text, snap.state
FROM snap
UNION ALL
SELECT 1, e.stream_name, e.stream_version, e.event_id, e.event_type, e.data
FROM s CROSS JOIN LATERAL (
    SELECT ev.stream_name, ev.stream_version, ev.event_id, ev.event_type, ev.data
    FROM commandbus.event ev
    WHERE ev.stream_name = s.stream_name
      AND ev.stream_version > coalesce(
          (SELECT version FROM snap WHERE snap.stream_name = s.stream_name), 0)
    ORDER BY ev.stream_version
    LIMIT %(limit)s
) e
ORDER BY 2, 1, 3;


-- name: append_many
-- Append to several streams at once, each at its expected version (0: a new stream), for
-- a caller that holds what serialises its writers (the engine holds the process rows).
-- Existing streams are bumped by UPDATE, new ones inserted (ON CONFLICT DO NOTHING: a
-- stream that exists after all is not inserted); ok counts the streams whose head moved.
-- When ok is short of the number of streams, the caller rolls back.
WITH req AS MATERIALIZED (
    SELECT * FROM unnest(%(streams)b::text[], %(categories)b::text[],
                         %(expected)b::bigint[], %(counts)b::integer[])
        AS r(stream_name, category, expected, n)
), bumped AS (
    UPDATE commandbus.event_stream h
    SET version = h.version + req.n, updated_at = now()
    FROM req
    WHERE h.stream_name = req.stream_name AND req.expected > 0 AND h.version = req.expected
    RETURNING h.stream_name
), created AS (
    INSERT INTO commandbus.event_stream (stream_name, version)
    SELECT stream_name, n FROM req WHERE expected = 0 ORDER BY stream_name
    ON CONFLICT (stream_name) DO NOTHING
    RETURNING stream_name
), moved AS (
    SELECT stream_name FROM bumped UNION ALL SELECT stream_name FROM created
), inserted AS (
    INSERT INTO commandbus.event (
        stream_name, category, stream_version, event_id, event_type, data, metadata,
        correlation_id, causation_id
    )
    SELECT e.stream_name, req.category, req.expected + e.seq, e.event_id, e.event_type,
           e.data::jsonb, e.metadata::jsonb, e.correlation_id, e.causation_id
    FROM unnest(
        %(event_streams)b::text[], %(seqs)b::integer[], %(event_ids)b::uuid[],
        %(event_types)b::text[], %(data)b::text[], %(metadata)b::text[],
        %(correlation_ids)b::uuid[], %(causation_ids)b::uuid[]
    ) WITH ORDINALITY AS e(stream_name, seq, event_id, event_type, data, metadata,
                           correlation_id, causation_id, ord)
    JOIN req USING (stream_name)
    WHERE e.stream_name IN (SELECT stream_name FROM moved)
    ORDER BY e.ord
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM inserted),
       pg_notify('commandbus', '$events');
