-- 007: the event store and its durable subscriptions.

-- The head of each stream: its version (number of events). Appends lock this row, so
-- appends to one stream are serialised and its versions commit in order (a reader of one
-- stream never sees a gap), while appends to different streams never wait for each other.
CREATE TABLE commandbus.event_stream (
    stream_name text        NOT NULL PRIMARY KEY,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only. position is the global order of insertion; transaction_id the inserting
-- transaction. Readers of all streams order by (transaction_id, position) and stop before
-- the oldest transaction still running (pg_snapshot_xmin): positions are drawn before
-- their transaction commits, so a later position can become visible before an earlier
-- one, and a reader following positions alone would pass the earlier one for good.
CREATE TABLE commandbus.event (
    position        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_name     text        NOT NULL,
    category        text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    correlation_id  uuid,
    causation_id    uuid,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_stream_version_key UNIQUE (stream_name, stream_version),
    CONSTRAINT event_event_id_key UNIQUE (event_id)
);

-- Readers of all streams (subscriptions), in commit order; and per category.
CREATE INDEX idx_event_commit_order ON commandbus.event (transaction_id, position);
CREATE INDEX idx_event_category_order ON commandbus.event (category, transaction_id, position);

-- A durable subscription: its checkpoint, the (transaction_id, position) of the last event
-- it handled, advanced in the same transaction as the handler's writes. Consumers lock
-- the row while they handle a batch, so one subscription handles one batch at a time.
-- failing_position/failures count the attempts at the event that keeps failing; after the
-- last one it is parked and the checkpoint moves past it.
CREATE TABLE commandbus.subscription (
    name             text        NOT NULL PRIMARY KEY,
    transaction_id   xid8        NOT NULL DEFAULT '0',
    position         bigint      NOT NULL DEFAULT 0,
    categories       text[],
    event_types      text[],
    handled          bigint      NOT NULL DEFAULT 0,
    failing_position bigint,
    failures         integer     NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- Events a subscription's handler kept failing on, with the last error: skipped, never lost.
CREATE TABLE commandbus.subscription_parked (
    name      text        NOT NULL REFERENCES commandbus.subscription (name) ON DELETE CASCADE,
    position  bigint      NOT NULL REFERENCES commandbus.event (position),
    attempts  integer     NOT NULL,
    error     text        NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, position)
);
