-- 013: reads of all streams in commit order (read_all, subscriptions) walk
-- idx_event_commit_order in order and stop at their limit. They are functions only to
-- pin that plan, as pick_messages does for queues: the event table grows in bursts, its
-- statistics lag behind, and left to itself the planner estimates a few hundred rows
-- after a checkpoint and picks a bitmap scan, which reads EVERY event after it and sorts
-- them before the limit applies (measured: 7,500 events read and sorted for a window of
-- 2,000).

-- Up to p_limit events after (p_tx, p_position) and up to (p_until_tx, p_until_position),
-- of transactions older than every one still running, optionally of some categories and
-- event types, in commit order.
CREATE FUNCTION commandbus.events_after(
    p_tx xid8,
    p_position bigint,
    p_until_tx xid8,
    p_until_position bigint,
    p_limit integer,
    p_categories text[],
    p_event_types text[]
)
RETURNS SETOF commandbus.event
LANGUAGE sql
STABLE
ROWS 100
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT *
    FROM commandbus.event ev
    WHERE (ev.transaction_id, ev.position) > (p_tx, p_position)
      AND (ev.transaction_id, ev.position) <= (p_until_tx, p_until_position)
      AND ev.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
      AND (p_categories IS NULL OR ev.category = ANY (p_categories))
      AND (p_event_types IS NULL OR ev.event_type = ANY (p_event_types))
    ORDER BY ev.transaction_id, ev.position
    LIMIT p_limit
$$;

-- The last of the next p_count events after (p_tx, p_position) that a reader of all
-- streams can see (no row when there is none): the end of a subscription's window.
CREATE FUNCTION commandbus.events_window_end(p_tx xid8, p_position bigint, p_count integer)
RETURNS TABLE (transaction_id xid8, "position" bigint)
LANGUAGE sql
STABLE
ROWS 1
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT w.transaction_id, w.position
    FROM (
        SELECT ev.transaction_id, ev.position
        FROM commandbus.event ev
        WHERE (ev.transaction_id, ev.position) > (p_tx, p_position)
          AND ev.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY ev.transaction_id, ev.position
        LIMIT p_count
    ) w
    ORDER BY w.transaction_id DESC, w.position DESC
    LIMIT 1
$$;

-- Every filtered read walks the commit order (above), a category filter included: the
-- per-category index served no query any more and cost an entry per event appended.
DROP INDEX commandbus.idx_event_category_order;
