"""``EventStore``: append events to streams, in the caller's transaction, and read them.

    store = EventStore(pool)                      # or a backend, e.g. bus.backend
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await store.append("order-42", [NewEvent("OrderPlaced", {"total": 30})],
                           expected_version=0, conn=conn)

Streams are named ``category-id``. A stream's events are numbered from 1 (its version);
every event also has a global ``position``, and ``read_all`` returns the events of all
streams in commit order, never passing one whose transaction is still open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from commandbus.backends import BackendSource, backend_from
from commandbus.errors import SubscriptionNotFoundError, ValidationError
from commandbus.events.encoding import (
    encode_events,
    event_filter,
    validate_stream_name,
    validate_subscription_name,
)
from commandbus.events.models import (
    AppendResult,
    Checkpoint,
    NewEvent,
    ParkedEvent,
    RecordedEvent,
    SubscriptionInfo,
)
from commandbus.events.ports import EventBackend
from commandbus.models import JsonObject
from commandbus.ports import Clock, Conn
from commandbus.validation import (
    MAX_BATCH_LIMIT,
    encode_payload,
    validate_count,
    validate_seconds,
)

__all__ = ["EventStore", "event_backend"]

MAX_VERSION = 2**62
MAX_WAIT_SECONDS = 3600.0
#: Snapshots may be larger than one event: they fold a whole history.
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024


def event_backend(source: BackendSource, clock: Clock | None = None) -> EventBackend:
    backend = backend_from(source, clock)
    if not isinstance(backend, EventBackend):
        raise TypeError(f"{type(backend).__name__} does not store events")
    return backend


def _checkpoint(value: object) -> Checkpoint:
    if value is None:
        return Checkpoint()
    if isinstance(value, RecordedEvent):
        return value.checkpoint
    if isinstance(value, Checkpoint):
        validate_count(value.transaction_id, "checkpoint.transaction_id", MAX_VERSION, 0)
        validate_count(value.position, "checkpoint.position", MAX_VERSION, 0)
        return value
    raise ValidationError(f"after must be a Checkpoint or a RecordedEvent, got {value!r}")


class EventStore:
    """Event streams on a backend (``PostgresBackend``, ``InMemoryBackend``, or a pool)."""

    def __init__(self, backend: BackendSource, clock: Clock | None = None) -> None:
        self._backend = event_backend(backend, clock)

    @property
    def backend(self) -> EventBackend:
        return self._backend

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent] | NewEvent,
        *,
        expected_version: int | None = None,
        conn: Conn | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` at once, or not at all. ``expected_version``
        (0: the stream must have no events yet) guards against a concurrent writer:
        ``WrongExpectedVersionError`` if the stream is at another version. An event id
        already stored raises ``DuplicateEventError``. With ``conn`` the events commit
        with the caller's transaction (and a refused append leaves it usable)."""
        stream = validate_stream_name(stream)
        if expected_version is not None:
            validate_count(expected_version, "expected_version", MAX_VERSION, 0)
        encoded = encode_events(events)
        return await self._backend.events.append(stream, encoded, expected_version, conn=conn)

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = 1000, *, conn: Conn | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of ``stream`` from ``from_version`` on, in order."""
        stream = validate_stream_name(stream)
        validate_count(from_version, "from_version", MAX_VERSION)
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        return await self._backend.events.read_stream(stream, from_version, limit, conn=conn)

    async def iter_stream(self, stream: str, from_version: int = 1) -> AsyncIterator[RecordedEvent]:
        """Every event of ``stream`` from ``from_version`` on, read in pages."""
        while True:
            page = await self.read_stream(stream, from_version, MAX_BATCH_LIMIT)
            for event in page:
                yield event
            if len(page) < MAX_BATCH_LIMIT:
                return
            from_version = page[-1].version + 1

    async def read_all(
        self,
        after: Checkpoint | RecordedEvent | None = None,
        limit: int = 1000,
        *,
        categories: Sequence[str] | None = None,
        event_types: Sequence[str] | None = None,
        wait: float = 0.0,
        conn: Conn | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of all streams after ``after`` (None: the beginning), in
        commit order, optionally only some categories and event types. Pass the last
        event (or its ``checkpoint``) back as ``after`` to read on: no event is skipped.

        An event is returned once every transaction older than it has ended (anywhere on
        the server); with ``wait``, events already committed but held back that way are
        waited for, up to ``wait`` seconds."""
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        validate_seconds(wait, "wait", MAX_WAIT_SECONDS, allow_zero=True)
        where = event_filter(categories, event_types)
        start = _checkpoint(after)
        events = self._backend.events
        found = await events.read_all(start, limit, where, conn=conn)
        if not wait:
            return found
        deadline = asyncio.get_running_loop().time() + wait
        while len(found) < limit and asyncio.get_running_loop().time() < deadline:
            if await events.count_after(start, where, conn=conn) <= len(found):
                break
            await asyncio.sleep(0.01)  # an older transaction is still open: real time
            found = await events.read_all(start, limit, where, conn=conn)
        return found

    async def stream_version(self, stream: str, *, conn: Conn | None = None) -> int:
        """How many events ``stream`` has (0: none)."""
        return await self._backend.events.stream_version(validate_stream_name(stream), conn=conn)

    # -- snapshots ---------------------------------------------------------------------

    async def snapshot(
        self, stream: str, *, conn: Conn | None = None
    ) -> tuple[int, JsonObject] | None:
        """The latest snapshot of ``stream``: ``(version, state)``, or None."""
        return await self._backend.events.get_snapshot(validate_stream_name(stream), conn=conn)

    async def save_snapshot(
        self, stream: str, version: int, state: JsonObject, *, conn: Conn | None = None
    ) -> None:
        """Keep ``state``, folded from ``stream`` up to ``version``, to start later loads
        from (an older snapshot never replaces a newer one)."""
        stream = validate_stream_name(stream)
        validate_count(version, "version", MAX_VERSION)
        encoded = encode_payload(state, "snapshot state", MAX_SNAPSHOT_BYTES)
        await self._backend.events.put_snapshot(stream, version, encoded, conn=conn)

    # -- subscriptions (operators' side; ``Subscription`` runs them) --------------------

    async def subscriptions(self) -> list[SubscriptionInfo]:
        return await self._backend.subscriptions.list_all()

    async def subscription(self, name: str) -> SubscriptionInfo | None:
        return await self._backend.subscriptions.get(validate_subscription_name(name))

    async def reset_subscription(self, name: str, *, to_end: bool = False) -> Checkpoint:
        """Move a subscription back to the beginning (its handler will see every event
        again), or with ``to_end`` past every event deliverable now (an event still held
        back by an older open transaction is delivered later, not skipped). Returns the
        checkpoint."""
        name = validate_subscription_name(name)
        to = await self._backend.subscriptions.end() if to_end else Checkpoint()
        if not await self._backend.subscriptions.reset(name, to):
            raise SubscriptionNotFoundError(name)
        return to

    async def parked_events(self, name: str, limit: int = 100) -> list[ParkedEvent]:
        """Events the subscription's handler kept failing on (skipped, kept here)."""
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        return await self._backend.subscriptions.parked(validate_subscription_name(name), limit)
