"""``InMemoryBackend``: the ``Backend`` port in memory, for unit tests and simulation.

It behaves like the PostgreSQL backend (same contract suite,
``commandbus.testing.contracts``) but keeps everything in dictionaries and takes its time
from the injected clock, so with a ``VirtualClock`` visibility timeouts, delays and
backoffs pass only when the test moves time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from commandbus.batches.ports import BatchStore
from commandbus.clusters.ports import OutboxStore
from commandbus.clusters.topology import Topology
from commandbus.events.ports import EventStorage, SubscriptionStorage
from commandbus.memory.batches import BatchTables, InMemoryBatchStore
from commandbus.memory.commands import InMemoryCommandStore
from commandbus.memory.events import InMemoryEventStorage, InMemorySubscriptionStorage
from commandbus.memory.outbox import InMemoryOutboxStore, RoutingInMemoryCommandStore
from commandbus.memory.process_repository import InMemoryProcessRepository
from commandbus.memory.queue import InMemoryMessageQueue
from commandbus.memory.transaction import (
    MemoryTransaction,
    TransactionClosedError,
    TransactionContext,
)
from commandbus.ports import Clock, CommandStore, Conn, MessageQueue, SystemClock
from commandbus.process.repository import ProcessRepository
from commandbus.validation import MAX_PAYLOAD_BYTES

__all__ = ["InMemoryBackend", "InMemoryWaiter"]


class InMemoryWaiter:
    """``Waiter`` of ``InMemoryBackend.listen``; timeouts are measured on the backend clock."""

    def __init__(self, clock: Clock, queues: frozenset[str]) -> None:
        self._clock = clock
        self.queues = queues
        self._pending = False
        self._future: asyncio.Future[bool] | None = None

    def _notify(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)
        else:
            self._pending = True

    async def wait(self, timeout: float) -> bool:
        if self._pending:
            self._pending = False
            return True
        if timeout <= 0:
            await asyncio.sleep(0)
            if self._pending:
                self._pending = False
                return True
            return False
        clock = self._clock
        deadline = clock.now() + timedelta(seconds=timeout)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._future = future

        async def expire() -> None:
            # Measured from the call, even if the clock moved before this task started.
            remaining = (deadline - clock.now()).total_seconds()
            await clock.sleep(remaining)
            if not future.done():
                future.set_result(False)

        timer = asyncio.ensure_future(expire())
        try:
            return await future
        finally:
            self._future = None
            timer.cancel()


class InMemoryBackend:
    """All ports in memory. ``clock`` drives visibility timeouts, delays and wait timeouts.

    ``max_payload_bytes`` limits messages given to ``queue.enqueue`` (encoded JSON).
    With ``topology`` and ``cluster`` (one of its DSNs, any name in memory) it is that
    cluster: its sends to other clusters' domains go to its ``outbox``
    (``commandbus.memory.clusters`` builds a whole topology of them).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        *,
        topology: Topology | None = None,
        cluster: str | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self._listeners: dict[str, set[InMemoryWaiter]] = {}
        self._closed = False
        # Typed as the ports (the Backend protocol's attributes are invariant); the
        # concrete adapters, with their in-transaction building blocks, are
        # ``memory_queue`` and ``memory_commands``.
        self.memory_queue = InMemoryMessageQueue(self)
        self.memory_batches = BatchTables(self, self.memory_queue)
        if topology is not None:
            if cluster is None:
                raise ValueError("an in-memory cluster of a topology needs its cluster name")
            routing = RoutingInMemoryCommandStore(
                self, self.memory_queue, self.memory_batches, topology, cluster
            )
            self.memory_commands: InMemoryCommandStore = routing
        else:
            routing = None
            self.memory_commands = InMemoryCommandStore(
                self, self.memory_queue, self.memory_batches
            )
        #: The outbox (what this cluster sends to others, what it receives from them).
        self.memory_outbox = InMemoryOutboxStore(self, self.memory_queue, self.memory_commands)
        if routing is not None:
            routing.outbox = self.memory_outbox
        self.outbox: OutboxStore = self.memory_outbox
        self.queue: MessageQueue = self.memory_queue
        self.commands: CommandStore = self.memory_commands
        self.processes: ProcessRepository = InMemoryProcessRepository(self, self.memory_batches)
        self.memory_events = InMemoryEventStorage(self)
        self.events: EventStorage = self.memory_events
        self.subscriptions: SubscriptionStorage = InMemorySubscriptionStorage(
            self, self.memory_events
        )
        self.batches: BatchStore = InMemoryBatchStore(self, self.memory_batches)

    def transaction(self, conn: Conn | None = None) -> TransactionContext:
        """Open a transaction, or with ``conn`` a savepoint inside that open transaction."""
        if conn is not None and not isinstance(conn, MemoryTransaction):
            raise TransactionClosedError(
                f"InMemoryBackend cannot join {type(conn).__name__!r}: pass a conn obtained "
                "from this backend's transaction()"
            )
        if self._closed:
            raise TransactionClosedError("the InMemoryBackend is closed")
        return TransactionContext(self, conn)

    @asynccontextmanager
    async def listen(self, queues: Sequence[str]) -> AsyncIterator[InMemoryWaiter]:
        waiter = InMemoryWaiter(self.clock, frozenset(queues))
        for queue in waiter.queues:
            self._listeners.setdefault(queue, set()).add(waiter)
        try:
            yield waiter
        finally:
            for queue in waiter.queues:
                listeners = self._listeners.get(queue)
                if listeners is not None:
                    listeners.discard(waiter)
                    if not listeners:
                        del self._listeners[queue]

    async def close(self) -> None:
        self._closed = True

    def _deliver(self, queues: Iterable[str]) -> None:
        """Called at commit with the queues that got messages."""
        woken: set[InMemoryWaiter] = set()
        for queue in queues:
            woken.update(self._listeners.get(queue, ()))
        for waiter in woken:
            waiter._notify()
