"""``PostgresBackend``: the production ``commandbus.ports.Backend``.

Pool settings
-------------
The backend borrows connections from a ``psycopg_pool.AsyncConnectionPool`` only for the
length of one statement or one transaction; the LISTEN connection is separate (one per
backend, not taken from the pool). Size the pool for the concurrency you run in one
process: a worker holds one connection per in-flight transaction (claim, then settle),
so ``max_size`` ≈ worker concurrency + reply routers + the application's own use, plus
one or two spare. ``min_size`` of 2 to 4 keeps a process warm. Connections may be either
mode (autocommit or not): single statements run in autocommit for one round trip and
the mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.batches.ports import BatchStore
from commandbus.clusters.ports import OutboxStore
from commandbus.events.ports import EventStorage, SubscriptionStorage
from commandbus.ports import Clock, CommandStore, MessageQueue, SystemClock
from commandbus.postgres.batches import PostgresBatchStore
from commandbus.postgres.commands import PostgresCommandStore
from commandbus.postgres.connections import probe_connection, translate_errors
from commandbus.postgres.events import PostgresEventStorage, PostgresSubscriptionStorage
from commandbus.postgres.listener import (
    NotificationListener,
    PostgresWaiter,
    resolve_pool_conninfo,
)
from commandbus.postgres.outbox_store import PostgresOutboxStore
from commandbus.postgres.process_repository import PostgresProcessRepository
from commandbus.postgres.queue import PostgresMessageQueue
from commandbus.process.repository import ProcessRepository


class PostgresBackend:
    """Message queue, command store, process and event stores, transactions and wake-ups on
    one PostgreSQL database.

    Build it around your own pool (``PostgresBackend(pool)``), or let it own one::

        backend = await PostgresBackend.connect("postgresql://...", max_size=10)
        ...
        await backend.close()  # also closes the pool it opened
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        clock: Clock | None = None,
        *,
        owns_pool: bool = False,
    ) -> None:
        self.pool = pool
        self.clock: Clock = clock if clock is not None else SystemClock()
        # Typed as the ports: Backend declares them as (invariant) attributes.
        self.queue: MessageQueue = PostgresMessageQueue(pool)
        self.commands: CommandStore = PostgresCommandStore(pool)
        self.processes: ProcessRepository = PostgresProcessRepository(pool)
        self.events: EventStorage = PostgresEventStorage(pool)
        self.subscriptions: SubscriptionStorage = PostgresSubscriptionStorage(pool)
        self.batches: BatchStore = PostgresBatchStore(pool)
        #: What a relay brings from other clusters lands here (``commandbus.clusters``).
        self.postgres_outbox = PostgresOutboxStore(pool, self.commands, self.queue)
        self.outbox: OutboxStore = self.postgres_outbox
        self._owns_pool = owns_pool
        self._listener = NotificationListener(lambda: resolve_pool_conninfo(pool))

    @classmethod
    async def connect(
        cls,
        dsn: str,
        min_size: int = 2,
        max_size: int = 10,
        *,
        clock: Clock | None = None,
        connect_timeout: float = 10.0,
        **pool_kwargs: Any,
    ) -> PostgresBackend:
        """Open a pool on ``dsn`` (waiting until ``min_size`` connections are up) and
        return a backend that owns it. Extra keyword arguments go to the pool.

        One connection is tried first, so a server that is down or a wrong URL fails at
        once with ``DatabaseUnavailableError`` (or ``ValidationError`` for a malformed
        URL) saying why; ``connect_timeout`` bounds each wait, in seconds."""
        await probe_connection(dsn, connect_timeout)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, **pool_kwargs
        )
        try:
            with translate_errors():
                await pool.open(wait=True, timeout=connect_timeout)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, clock, owns_pool=True)

    #: Same as :meth:`connect`.
    from_dsn = connect

    @asynccontextmanager
    async def transaction(self, conn: Any | None = None) -> AsyncIterator[Any]:
        """A pooled connection in a transaction (commit on success, rollback on error);
        with ``conn`` given, a savepoint in its open transaction."""
        with translate_errors():
            if conn is not None:
                async with conn.transaction():
                    yield conn
                return
            async with self.pool.connection() as pooled, pooled.transaction():
                yield pooled

    @asynccontextmanager
    async def listen(self, queues: Sequence[str]) -> AsyncIterator[PostgresWaiter]:
        """Wake-ups for enqueues to ``queues`` (LISTEN on channel ``commandbus``)."""
        async with self._listener.subscribe(queues) as waiter:
            yield waiter

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (False: consumers only poll)."""
        return self._listener.connected

    async def close(self) -> None:
        """Close the LISTEN connection, and the pool if this backend opened it."""
        await self._listener.close()
        if self._owns_pool:
            await self.pool.close()
