"""Enqueue wake-ups over LISTEN/NOTIFY: one dedicated connection per backend.

Writers call ``pg_notify('commandbus', <queue name>)`` once per statement and queue (the
notification is delivered at commit). A single autocommit connection per backend listens
on channel ``commandbus`` and sets the event of every waiter subscribed to that queue.
Notifications are hints: consumers poll anyway, so when the connection fails the
listener wakes every waiter (they poll), retries with a growing delay and, once it is
back, wakes them again (notifications may have been missed in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from commandbus.postgres.connections import logger

CHANNEL = "commandbus"
_LISTEN_SQL = b"LISTEN commandbus"


class PostgresWaiter:
    """A subscription to some queues; see ``commandbus.ports.Waiter``."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = frozenset(queues)
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
            except TimeoutError:
                return False
        self._event.clear()
        return True


ConninfoSource = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


class NotificationListener:
    """Owns the LISTEN connection (started on the first subscription) and the waiters."""

    def __init__(
        self,
        conninfo: ConninfoSource,
        *,
        connect_timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._waiters: dict[str, set[PostgresWaiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()  # the first connection attempt has finished
        self._connected = False
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether LISTEN is active (False: waiters only time out, consumers poll)."""
        return self._connected

    @asynccontextmanager
    async def subscribe(self, queues: Sequence[str]) -> AsyncIterator[PostgresWaiter]:
        waiter = PostgresWaiter(queues)
        for queue in waiter.queues:
            self._waiters.setdefault(queue, set()).add(waiter)
        try:
            if not self._closed:
                self._ensure_started()
                # Wait for LISTEN to be in place, so that an enqueue committed after
                # subscribing is not missed; on failure go on degraded (polling).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._attempted.wait(), self._connect_timeout)
            yield waiter
        finally:
            for queue in waiter.queues:
                subscribers = self._waiters.get(queue)
                if subscribers is not None:
                    subscribers.discard(waiter)
                    if not subscribers:
                        del self._waiters[queue]
            if not self._waiters and self._task is not None:
                # Nobody listens any more: close the connection rather than keep it (and
                # keep reconnecting to a database that may be gone) until close().
                self._task.cancel()
                self._task = None
            if not self._waiters and self._task is not None:
                # Nobody listens any more: close the connection rather than keep it (and
                # keep reconnecting to a database that may be gone) until close().
                self._task.cancel()
                self._task = None

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._attempted.clear()  # a new connection: wait for its first attempt again
            self._task = asyncio.create_task(self._run(), name="commandbus-listener")

    def _dispatch(self, queue: str) -> None:
        for waiter in self._waiters.get(queue, ()):
            waiter.notify()

    def _wake_all(self) -> None:
        for subscribers in self._waiters.values():
            for waiter in subscribers:
                waiter.notify()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conninfo, kwargs = await self._conninfo()
        kwargs = {k: v for k, v in kwargs.items() if k not in ("autocommit", "row_factory")}
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **kwargs)
        try:
            await conn.execute(_LISTEN_SQL)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self) -> None:
        backoff = 0.1
        reconnecting = False
        while not self._closed:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._connect()
                self._connected = True
                self._attempted.set()
                backoff = 0.1
                if reconnecting:
                    self._wake_all()
                async for notify in conn.notifies():
                    self._dispatch(notify.payload)
                # notifies() only ends when the connection is closed
                raise psycopg.OperationalError("the LISTEN connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._connected = False
                self._attempted.set()
                reconnecting = True
                logger.warning(
                    "commandbus LISTEN connection failed (%s); consumers poll meanwhile, "
                    "retrying in %.1fs",
                    exc,
                    backoff,
                )
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                self._connected = False
                if conn is not None and not conn.closed:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_all()


async def resolve_pool_conninfo(pool: Any) -> tuple[str, dict[str, Any]]:
    """The conninfo and connection kwargs a psycopg pool connects with (each may be a
    static value, a function or an async function)."""

    async def resolve(value: Any) -> Any:
        if callable(value):
            value = value()
        if inspect.isawaitable(value):
            value = await value
        return value

    conninfo = await resolve(pool.conninfo)
    kwargs = await resolve(pool.kwargs)
    return str(conninfo or ""), dict(kwargs or {})
