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
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import Buffer
from psycopg.types.json import JsonbLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from commandbus.errors import DatabaseUnavailableError, SchemaError, StorageError, ValidationError

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
    """Turn driver errors into ``commandbus.errors`` (the driver's error kept as the
    cause): no psycopg exception reaches a caller of the library."""
    try:
        yield
    except (
        pg_errors.UndefinedTable,
        pg_errors.InvalidSchemaName,
        pg_errors.UndefinedColumn,
        pg_errors.UndefinedObject,
    ) as exc:
        raise SchemaError(f"{SCHEMA_HINT} ({exc.diag.message_primary or exc})") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        # Connection refused or lost, server shutting down, pool exhausted, and also
        # serialization failures and deadlocks: all worth trying again later.
        raise DatabaseUnavailableError(f"the database is unavailable: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(
            f"the database refused the request: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    except UnicodeEncodeError as exc:  # raised while psycopg adapts a parameter
        raise StorageError(f"a text parameter could not be encoded: {exc}") from exc


def violates_unique(exc: StorageError, constraint: str) -> bool:
    """Whether ``exc`` (from ``translate_errors``) is the server refusing a duplicate
    key of ``constraint``: the one refusal the stores turn into their own error."""
    cause = exc.__cause__
    return isinstance(cause, pg_errors.UniqueViolation) and cause.diag.constraint_name == constraint


async def probe_connection(dsn: str, timeout: float = 10.0) -> None:
    """Open and close one connection to ``dsn``: a clear error now instead of a pool
    retrying in the background until its timeout."""
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=max(1, round(timeout)))
    except psycopg.ProgrammingError as exc:  # a malformed URL or option
        raise ValidationError(
            f"invalid database URL {redact_dsn(dsn)}: {_first_line(exc)}"
        ) from None
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to {redact_dsn(dsn)}: {_first_line(exc)} "
            "(is the server running, and are the host, port and credentials right?)"
        ) from exc
    await conn.close()


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (safe to print or log)."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@asynccontextmanager
async def statement_conn(pool: AsyncConnectionPool[Any], conn: Any | None) -> AsyncIterator[Any]:
    """A connection for one atomic statement: ``conn`` itself, or a pooled connection in
    autocommit mode (its previous mode is restored before it goes back to the pool)."""
    if conn is not None:
        with translate_errors():
            yield conn
        return
    with translate_errors():
        async with pool.connection() as pooled:
            restore = not pooled.autocommit
            if restore:
                await pooled.set_autocommit(True)
            try:
                yield pooled
            finally:
                if restore and not pooled.closed:
                    await pooled.set_autocommit(False)


@asynccontextmanager
async def transaction_conn(pool: AsyncConnectionPool[Any], conn: Any | None) -> AsyncIterator[Any]:
    """A transaction: a savepoint in ``conn``'s open transaction, or a pooled connection's
    own transaction. An exception inside rolls back exactly what was done inside."""
    with translate_errors():
        if conn is not None:
            async with conn.transaction():
                yield conn
            return
        async with pool.connection() as pooled, pooled.transaction():
            yield pooled
