"""Connection and transaction helpers shared by the PostgreSQL adapters.

Every port method takes ``conn``: an open ``psycopg.AsyncConnection`` (usually inside the
caller's transaction) or ``None``, in which case the method borrows a pooled connection:

- a *single statement* is atomic on its own, so it runs in autocommit mode: one round
  trip instead of three (BEGIN, statement, COMMIT);
- a method that may have to undo its statement (a duplicate send) runs in a transaction,
  or in a savepoint when the caller's connection is given, so that the caller's
  transaction stays usable after the error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import Buffer
from psycopg.types.json import JsonbLoader
from psycopg_pool import AsyncConnectionPool

from commandbus.errors import SchemaError

logger = logging.getLogger("commandbus.postgres")

AsyncConn = psycopg.AsyncConnection[Any]

SCHEMA_HINT = (
    "the commandbus schema is missing or out of date in this database; apply it with "
    "`commandbus schema apply` or `await commandbus.postgres.apply_schema(dsn)`"
)


_raw_decode = json.JSONDecoder().raw_decode


class _FastJsonbLoader(JsonbLoader):
    """``jsonb`` (text format) to Python: what ``json.loads`` returns, in half the time on
    small documents (``json.loads`` of bytes first sniffs their encoding; PostgreSQL
    always sends UTF-8 and never pads a ``jsonb`` value with whitespace)."""

    def load(self, data: Buffer) -> Any:
        return _raw_decode(bytes(data).decode())[0]


def fast_cursor(conn: Any, row_factory: Any = None) -> Any:
    """A cursor of ``conn`` that decodes ``jsonb`` with ``_FastJsonbLoader`` (only this
    cursor: the connection's own adapters are left alone). For the hot reads."""
    cur = conn.cursor(row_factory=row_factory) if row_factory is not None else conn.cursor()
    cur.adapters.register_loader("jsonb", _FastJsonbLoader)
    return cur


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors a user can fix into ``commandbus.errors`` (cause kept)."""
    try:
        yield
    except (
        pg_errors.UndefinedTable,
        pg_errors.InvalidSchemaName,
        pg_errors.UndefinedColumn,
        pg_errors.UndefinedObject,
    ) as exc:
        raise SchemaError(f"{SCHEMA_HINT} ({exc.diag.message_primary or exc})") from exc


@asynccontextmanager
async def statement_conn(pool: AsyncConnectionPool[Any], conn: Any | None) -> AsyncIterator[Any]:
    """A connection for one atomic statement: ``conn`` itself, or a pooled connection in
    autocommit mode (its previous mode is restored before it goes back to the pool)."""
    if conn is not None:
        with translate_errors():
            yield conn
        return
    async with pool.connection() as pooled:
        restore = not pooled.autocommit
        if restore:
            await pooled.set_autocommit(True)
        try:
            with translate_errors():
                yield pooled
        finally:
            if restore and not pooled.closed:
                await pooled.set_autocommit(False)


@asynccontextmanager
async def transaction_conn(pool: AsyncConnectionPool[Any], conn: Any | None) -> AsyncIterator[Any]:
    """A transaction: a savepoint in ``conn``'s open transaction, or a pooled connection's
    own transaction. An exception inside rolls back exactly what was done inside."""
    if conn is not None:
        with translate_errors():
            async with conn.transaction():
                yield conn
        return
    async with pool.connection() as pooled:
        with translate_errors():
            async with pooled.transaction():
                yield pooled
