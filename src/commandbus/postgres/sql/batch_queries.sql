-- Named queries of the PostgreSQL batch store (commandbus.postgres.batches). The counters
-- are moved by the statements that change a member's status (queries.sql: settle,
-- set_status; process_queries.sql), through count_batch_changes (009_batches.sql).


-- name: create_batch
-- A duplicate (domain, batch_id) fails on the primary key (batch_pkey).
INSERT INTO commandbus.batch (domain, batch_id, kind, name, reply_to, is_open, total_count)
VALUES (%(domain)s, %(batch_id)s, %(kind)s, %(name)s, %(reply_to)s, %(is_open)s, %(total)s);


-- name: add_batch_members
-- Grow an open batch; the row stays locked until the caller's transaction ends, so the
-- members inserted next are counted in a total no settlement can finish meanwhile.
-- Nothing is updated for a closed batch or one of another kind (the caller reads the row
-- to say why).
UPDATE commandbus.batch
SET total_count = total_count + %(count)s, updated_at = now()
WHERE batch_id = %(batch_id)s AND domain = %(domain)s AND is_open AND kind = %(kind)s
RETURNING batch_id;


-- name: close_batch
UPDATE commandbus.batch
SET is_open = false, updated_at = now()
WHERE batch_id = %(batch_id)s AND domain = %(domain)s AND is_open;


-- name: recount_batch
-- After close_batch: finish the batch now if every member has ended (no counter moves).
SELECT commandbus.count_batch_changes(
    ARRAY[%(domain)s::text], ARRAY[%(batch_id)s::uuid], ARRAY[NULL::text], ARRAY[NULL::text]
) AS batches_finished;


-- name: count_batch_changes
-- Status changes of members made outside the statements that count their own (a new
-- member's first status, from NULL).
SELECT commandbus.count_batch_changes(
    %(domains)b::text[], %(batch_ids)b::uuid[], %(from_statuses)b::text[],
    %(to_statuses)b::text[]
) AS batches_finished;


-- name: get_batch
SELECT * FROM commandbus.batch WHERE batch_id = %(batch_id)s AND domain = %(domain)s;


-- name: query_batches
-- Optional filters as "param IS NULL OR ..." (one fixed statement); newest first.
SELECT *
FROM commandbus.batch
WHERE (%(domain)s::text IS NULL OR domain = %(domain)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
ORDER BY created_at DESC, batch_id DESC
LIMIT %(limit)s OFFSET %(offset)s;
