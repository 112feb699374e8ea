"""Running the async implementation on a synchronous psycopg connection.

The library has one implementation of every operation: the async one (validation, the
named SQL, the result mapping, the errors). The sync API does not repeat any of it. It
hands the async code an ``AsyncConnection``-shaped view of the caller's
``psycopg.Connection`` whose methods do their I/O synchronously and so never suspend, and
it runs the resulting coroutine by stepping it to the end (``run_sync``) — no event loop,
no thread. This is the shape psycopg itself uses inside: protocol logic written once as
generators, driven by a blocking or a non-blocking waiter.

The view implements exactly what the PostgreSQL adapters use of a connection
(``execute``, ``cursor``, ``transaction``, ``pipeline``, ``autocommit``), and a pool of
that one connection, so that operations which borrow "a connection" (no ``conn=``) borrow
the caller's. Should any code on the way really wait (an ``await`` that suspends), the
call fails with ``SyncBridgeError`` instead of blocking: nothing of it is hidden.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import psycopg

from commandbus.errors import CommandBusError
from commandbus.postgres.backend import PostgresBackend

__all__ = ["SyncBridgeError", "bound_backend", "run_sync"]

T = TypeVar("T")


class SyncBridgeError(CommandBusError):
    """An operation of the sync API tried to wait for something other than the caller's
    connection (a bug of the library: every sync operation must run on that connection)."""


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in the calling thread. It must never suspend: its
    awaits are the connection view's, which return at once."""
    try:
        yielded = coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()  # unwinds it: its transactions roll back
    raise SyncBridgeError(
        f"a sync operation tried to wait ({yielded!r}); the sync API only runs statements "
        "on the connection it was given"
    )


class _Cursor:
    """An async view of a sync cursor."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def __getattr__(self, name: str) -> Any:  # rowcount, adapters, description...
        return getattr(self._cursor, name)

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _Cursor:
        self._cursor.execute(query, params, **kwargs)
        return self

    async def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        self._cursor.executemany(query, params_seq, **kwargs)

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int = 0) -> list[Any]:
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class SyncConnectionView:
    """An ``AsyncConnection``-shaped view of a ``psycopg.Connection``: what the adapters
    call, done synchronously on the caller's connection, inside its transaction."""

    __slots__ = ("connection",)

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        if not isinstance(connection, psycopg.Connection):
            raise TypeError(
                "the sync API needs a psycopg.Connection (for Django: "
                f"django.db.connection.connection), got {type(connection).__name__}"
            )
        self.connection = connection

    @property
    def autocommit(self) -> bool:
        # The adapters switch a pooled connection to autocommit for a lone statement; the
        # caller's connection is never switched: its statements join its transaction.
        return True

    @property
    def closed(self) -> bool:
        return self.connection.closed

    async def set_autocommit(self, value: bool) -> None:
        """Ignored: the caller owns the connection's mode (see ``autocommit``)."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _Cursor:
        return _Cursor(self.connection.execute(query, params, **kwargs))

    def cursor(self, *args: Any, **kwargs: Any) -> _Cursor:
        return _Cursor(self.connection.cursor(*args, **kwargs))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SyncConnectionView]:
        """A transaction of the caller's connection: a savepoint when one is open, so an
        error undoes this operation only and the caller's transaction stays usable."""
        with self.connection.transaction():
            yield self

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[SyncConnectionView]:
        with self.connection.pipeline():
            yield self


class _OneConnectionPool:
    """The pool the backend borrows from: the caller's connection, every time, each
    borrowing in a transaction of its own on it — a savepoint inside the caller's open
    transaction — because the adapters expect a borrowed connection's statement to be
    atomic on its own: a refused statement then undoes that operation only, and the
    caller's transaction stays usable. With no transaction open, the operation commits
    by itself."""

    def __init__(self, view: SyncConnectionView) -> None:
        self._view = view

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        with self._view.connection.transaction():
            yield self._view


def bound_backend(connection: psycopg.Connection[Any]) -> PostgresBackend:
    """A ``PostgresBackend`` every statement of which runs on ``connection``."""
    view = SyncConnectionView(connection)
    return PostgresBackend(cast(Any, _OneConnectionPool(view)))


def view_of(backend: PostgresBackend) -> SyncConnectionView:
    """The connection view of a ``bound_backend`` (the ``conn`` to hand to async calls)."""
    pool = backend.pool
    if not isinstance(pool, _OneConnectionPool):
        raise TypeError("not a backend of the sync API")
    return pool._view
