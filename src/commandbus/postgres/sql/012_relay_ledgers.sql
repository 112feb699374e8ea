-- 012: what makes relaying between clusters idempotent beyond commands, and lets a process
-- withdraw a command it sent to another cluster (commandbus.clusters.relay).

-- An outbox row either carries a command or asks its cluster to withdraw one.
ALTER TABLE commandbus.outbox
    ADD COLUMN kind text NOT NULL DEFAULT 'COMMAND'
        CONSTRAINT outbox_kind_check CHECK (kind IN ('COMMAND', 'WITHDRAW'));
-- A withdrawal looks for the command's row while it may still be waiting here.
CREATE INDEX idx_outbox_command ON commandbus.outbox (command_id);

-- On the sending cluster: every command it sent to a domain of another cluster, written
-- with its outbox row in the sender's transaction. Its key makes a second send of the
-- same command id fail as a duplicate (as on one cluster), and it tells a withdrawal
-- where the command went once the relay has moved it. Append-only; relays forget rows
-- older than their retention (30 days by default).
CREATE TABLE commandbus.forwarded (
    command_id    uuid        NOT NULL,
    target_domain text        NOT NULL,
    forwarded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, target_domain)
);
CREATE INDEX idx_forwarded_at ON commandbus.forwarded (forwarded_at);

-- On the receiving cluster: the relay keys of the messages (replies) relayed to it, the
-- answered command and the message's id on its source. Written with the enqueue in the
-- relay's target transaction; a message brought again by a relay that died before its
-- source committed finds its key and is not enqueued twice. A key matters only while the
-- source still holds the message, so relays forget keys after the same retention.
CREATE TABLE commandbus.relay_received (
    command_id    uuid        NOT NULL,
    source_msg_id bigint      NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, source_msg_id)
);
CREATE INDEX idx_relay_received_at ON commandbus.relay_received (received_at);
