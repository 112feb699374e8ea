-- 010: the outbox of a cluster: commands for domains that live on other clusters,
-- written in the sender's transaction (a process's decision, a send) and relayed to
-- their cluster by commandbus.postgres.outbox.OutboxRelay, which deletes a row once
-- the target has committed it. The target inserts each command with its id as the
-- idempotency key, so a row relayed twice (a relay that crashed between the two
-- commits) creates the command once. Small and short-lived: rows are deleted, never
-- updated.
CREATE TABLE commandbus.outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_domain text        NOT NULL,
    command_id    uuid        NOT NULL,
    -- The send request as JSON (domain, command_type, data, correlation_id, reply_to,
    -- max_attempts, delay, headers).
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
