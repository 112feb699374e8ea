-- 002: process managers: process instances, their audit trail, and the log of reply-queue
-- messages a router ignored or parked. Tables and columns as in the design document, plus
-- the engine's bookkeeping (version, awaited command, command counter, deadline,
-- compensation progress).

-- One row per process instance. A reply updates it once; while a process goes from step
-- to step its status stays WAITING and no indexed column changes, so those updates are
-- HOT (no index writes) when the page has room: hence the fill factor. The engine locks
-- the row (SELECT ... FOR UPDATE) for every message it applies, so concurrent routers
-- serialise per process, never per table.
CREATE TABLE commandbus.process (
    domain              text        NOT NULL,
    process_id          uuid        NOT NULL,
    process_type        text        NOT NULL,
    status              text        NOT NULL DEFAULT 'PENDING',
    current_step        text,
    state               jsonb       NOT NULL DEFAULT '{}',
    error_code          text,
    error_message       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    -- Bumped by every update; updates are conditional on it (optimistic check on top of
    -- the row lock).
    version             integer     NOT NULL DEFAULT 1,
    -- The one command whose reply the process waits for; other replies are stale.
    awaiting_command_id uuid,
    -- Commands sent so far: command ids are uuid5(process, counter), deterministic.
    command_seq         integer     NOT NULL DEFAULT 0,
    -- When the awaited command times out (its timer is a delayed reply-queue message).
    deadline_at         timestamptz,
    -- While COMPENSATING: {"target": status, "remaining": [...], "failed": [...]}.
    compensation        jsonb,
    PRIMARY KEY (domain, process_id),
    CONSTRAINT process_status_check CHECK (status IN (
        'PENDING', 'IN_PROGRESS', 'WAITING', 'WAITING_FOR_TSQ', 'COMPENSATING',
        'COMPLETED', 'COMPENSATED', 'FAILED', 'CANCELED'))
) WITH (fillfactor = 80);

CREATE INDEX idx_process_type ON commandbus.process (domain, process_type);
-- find_by_status and recovery (non-terminal processes of a domain).
CREATE INDEX idx_process_status ON commandbus.process (domain, status);
CREATE INDEX idx_process_created ON commandbus.process (created_at);

-- One row per command a process sent, completed by the reply the process acted on.
-- Append-mostly; read per process (the router loads a process's trail under its lock),
-- so the process index leads with (domain, process_id) and keeps lookups independent of
-- the table's size.
CREATE TABLE commandbus.process_audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain          text        NOT NULL,
    process_id      uuid        NOT NULL,
    step_name       text        NOT NULL,
    kind            text        NOT NULL DEFAULT 'STEP',
    command_id      uuid        NOT NULL,
    command_type    text        NOT NULL,
    command_data    jsonb,
    sent_at         timestamptz NOT NULL,
    reply_outcome   text,
    reply_data      jsonb,
    received_at     timestamptz,
    error_code      text,
    error_message   text,
    timed_out_at    timestamptz,
    FOREIGN KEY (domain, process_id) REFERENCES commandbus.process (domain, process_id),
    CONSTRAINT process_audit_kind_check CHECK (kind IN ('STEP', 'COMPENSATION'))
) WITH (fillfactor = 90);

CREATE INDEX idx_process_audit_process ON commandbus.process_audit (domain, process_id, sent_at, id);
CREATE INDEX idx_process_audit_command ON commandbus.process_audit (command_id);

-- Messages from process reply queues that changed nothing (IGNORED: duplicates, stale and
-- late replies, replies for unknown or finished processes) or could not be handled
-- (PARKED: malformed, no manager, a hook failed repeatedly, the state cannot be loaded).
-- The message is kept whole so a parked one can be replayed.
CREATE TABLE commandbus.process_message_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disposition text        NOT NULL CHECK (disposition IN ('IGNORED', 'PARKED')),
    reason      text        NOT NULL,
    domain      text,
    process_id  uuid,
    command_id  uuid,
    queue_name  text,
    msg_id      bigint,
    message     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_process_message_log_process ON commandbus.process_message_log (process_id)
    WHERE process_id IS NOT NULL;
CREATE INDEX idx_process_message_log_parked ON commandbus.process_message_log (id)
    WHERE disposition = 'PARKED';
