"""PostgreSQL adapters (psycopg 3, async): queues, command store, wake-ups, schema.

Plain PostgreSQL >= 14, no extensions; everything lives in the ``commandbus`` schema,
created and upgraded by :func:`apply_schema` (``commandbus schema apply``).
"""

from commandbus.postgres.backend import PostgresBackend
from commandbus.postgres.commands import PostgresCommandStore
from commandbus.postgres.listener import PostgresWaiter
from commandbus.postgres.queue import PostgresMessageQueue
from commandbus.postgres.schema import apply_schema, migrations, schema_sql, verify_schema

__all__ = [
    "PostgresBackend",
    "PostgresCommandStore",
    "PostgresMessageQueue",
    "PostgresWaiter",
    "apply_schema",
    "migrations",
    "schema_sql",
    "verify_schema",
]
