-- The migration ledger. Created (if missing) before any numbered migration runs; it is
-- not itself a migration so that the runner can always read it.
CREATE SCHEMA IF NOT EXISTS commandbus;

CREATE TABLE IF NOT EXISTS commandbus.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
