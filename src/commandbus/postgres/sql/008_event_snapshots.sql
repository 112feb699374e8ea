-- 008: snapshots of event streams: a state folded from a stream up to a version, so that
-- loading a long stream costs the snapshot plus the events after it. One per stream (the
-- latest); written in the transaction that appends the events it covers.
CREATE TABLE commandbus.event_snapshot (
    stream_name text        NOT NULL PRIMARY KEY,
    version     bigint      NOT NULL,
    state       jsonb       NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);
