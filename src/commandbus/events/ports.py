"""The ports of the event store: what a backend that stores events offers.

``EventBackend`` is a ``Backend`` with two more stores; ``PostgresBackend`` and
``InMemoryBackend`` are both, and one contract suite (``commandbus.testing.contracts``)
holds them to the same behaviour. Arguments arrive validated (``commandbus.events.store``
checks them); the stores only store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable
from uuid import UUID

from commandbus.events.models import (
    AppendResult,
    Checkpoint,
    ParkedEvent,
    RecordedEvent,
    SubscriptionInfo,
)
from commandbus.models import JsonObject
from commandbus.ports import Backend, Conn

__all__ = [
    "EVENTS_CHANNEL",
    "EncodedEvent",
    "EventBackend",
    "EventFilter",
    "EventStorage",
    "FoldedEvent",
    "StreamAppend",
    "SubscriptionStorage",
    "Taken",
]

#: The wake-up channel of appends: consumers ``listen([EVENTS_CHANNEL])`` like a queue.
EVENTS_CHANNEL = "$events"


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A validated event to append, its data and metadata already encoded as JSON text."""

    event_id: UUID
    event_type: str
    data: str
    metadata: str
    correlation_id: UUID | None
    causation_id: UUID | None


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events to append to one stream at ``expected_version`` (0: a new stream)."""

    stream: str
    expected_version: int
    events: Sequence[EncodedEvent]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader of all streams wants (None: all)."""

    categories: tuple[str, ...] | None = None
    event_types: tuple[str, ...] | None = None


#: How far past its checkpoint a filtered subscription looks per batch, as a multiple of
#: the batch size (and at least ``MIN_LOOK_AHEAD`` events): the events it does not want
#: in that window are passed for good, so each stored event is looked at once, not on
#: every poll until a wanted one comes.
LOOK_AHEAD_FACTOR = 10
MIN_LOOK_AHEAD = 1000


def look_ahead(limit: int, where: EventFilter) -> int:
    """How many events after its checkpoint a subscription taking ``limit`` looks at."""
    if where.categories is None and where.event_types is None:
        return limit  # every event is wanted: the batch is the window
    return max(limit * LOOK_AHEAD_FACTOR, MIN_LOOK_AHEAD)


class FoldedEvent(NamedTuple):
    """What folding a stream needs of each event (``load_streams``): a ``RecordedEvent``
    has the same fields, and more."""

    version: int
    event_id: UUID
    event_type: str
    data: JsonObject


@dataclass(frozen=True, slots=True)
class Taken:
    """A subscription's next batch, taken under its row lock: its checkpoint, the events
    after it that it wants, and ``passed``: the last event it looked at when fewer than
    the batch were wanted (None otherwise) — nothing between the checkpoint and it is
    wanted but ``events``, so the checkpoint may move there."""

    checkpoint: Checkpoint
    events: list[RecordedEvent]
    passed: Checkpoint | None = None

    @classmethod
    def of_window(
        cls,
        checkpoint: Checkpoint,
        events: list[RecordedEvent],
        window_end: Checkpoint | None,
        limit: int,
    ) -> Taken:
        """What a storage took: the wanted ``events`` (at most ``limit``) among those up
        to ``window_end``, the last event it looked at (None: it looked at none). Only
        when fewer than a batch were wanted is every other event up to it passed."""
        return cls(checkpoint, events, window_end if len(events) < limit else None)

    def checkpoint_after(self) -> Checkpoint:
        """Where the checkpoint goes once ``events`` are handled."""
        last = self.events[-1].checkpoint if self.events else self.checkpoint
        return self.passed if self.passed is not None and self.passed > last else last


class EventStorage(Protocol):
    async def append(
        self,
        stream: str,
        events: Sequence[EncodedEvent],
        expected_version: int | None,
        *,
        conn: Conn | None = None,
    ) -> AppendResult:
        """Append atomically, after the stream's current events. With
        ``expected_version`` (0: the stream has no events) a stream at another version
        raises ``WrongExpectedVersionError``; an event id already stored raises
        ``DuplicateEventError``; either way nothing is written."""
        ...

    async def read_stream(
        self, stream: str, from_version: int, limit: int, *, conn: Conn | None = None
    ) -> list[RecordedEvent]:
        """Events of one stream with ``version >= from_version``, in version order."""
        ...

    async def read_all(
        self, after: Checkpoint, limit: int, where: EventFilter, *, conn: Conn | None = None
    ) -> list[RecordedEvent]:
        """Events after ``after`` in commit order, only from transactions that have ended:
        once a reader has passed a checkpoint, no event can appear before it."""
        ...

    async def count_after(
        self, after: Checkpoint, where: EventFilter, *, conn: Conn | None = None
    ) -> int:
        """How many events are stored after ``after``, ``read_all`` would return them or
        not yet (their transaction, or an older one, is still open)."""
        ...

    async def stream_version(self, stream: str, *, conn: Conn | None = None) -> int:
        """The stream's version (its number of events; 0 if it has none)."""
        ...

    async def get_snapshot(
        self, stream: str, *, conn: Conn | None = None
    ) -> tuple[int, JsonObject] | None:
        """The stream's latest snapshot: ``(version, state)``, or None."""
        ...

    async def load_streams(
        self, streams: Sequence[str], limit: int, *, conn: Conn | None = None
    ) -> dict[str, tuple[tuple[int, JsonObject] | None, list[FoldedEvent]]]:
        """Each stream's latest snapshot (or None) and up to ``limit`` events after it
        (after version 0 without one), for several streams in one read (every stream
        asked for is a key, with ``(None, [])`` when it has nothing). Only what folding
        needs of each event is read (``FoldedEvent``): loading a process runs for every
        input it gets."""
        ...

    async def stored_event_ids(
        self, event_ids: Sequence[UUID], *, conn: Conn | None = None
    ) -> set[UUID]:
        """Which of these event ids are stored."""
        ...

    async def append_many(self, appends: Sequence[StreamAppend], *, conn: Conn) -> None:
        """Append to several streams at once, each at its expected version, in ``conn``'s
        transaction, for a caller that serialises the writers of these streams itself
        (no savepoint: on ``WrongExpectedVersionError`` or ``DuplicateEventError`` the
        caller rolls its transaction back)."""
        ...

    async def put_snapshot(
        self, stream: str, version: int, state: str, *, conn: Conn | None = None
    ) -> None:
        """Store a snapshot (``state`` encoded as JSON) unless a newer one is stored."""
        ...


class SubscriptionStorage(Protocol):
    async def ensure(self, name: str, where: EventFilter, *, conn: Conn | None = None) -> None:
        """Create the subscription at the beginning, with its filter, if it does not exist
        (never waiting for a consumer that holds it)."""
        ...

    async def take(self, name: str, limit: int, where: EventFilter, *, conn: Conn) -> Taken | None:
        """Lock the subscription (held until ``conn``'s transaction ends) and read the
        events after its checkpoint; None if another consumer holds it."""
        ...

    async def advance(
        self,
        name: str,
        handled: Sequence[RecordedEvent],
        where: EventFilter,
        *,
        conn: Conn,
        to: Checkpoint | None = None,
    ) -> None:
        """Move the locked subscription's checkpoint past ``handled`` (the batch just
        handled, in order; may be empty), or to ``to`` when given (``Taken.
        checkpoint_after``: past the unwanted events looked at too), in the handler's
        transaction; record the filter it used."""
        ...

    async def record_failure(
        self, name: str, event: RecordedEvent, error: str, park_after: int | None
    ) -> bool:
        """Count a failed attempt at ``event``; once ``park_after`` of them have failed
        (None: never, for an event that is not next), park it and move the checkpoint
        past it (True). Does nothing if the checkpoint has already passed the event."""
        ...

    async def get(self, name: str) -> SubscriptionInfo | None: ...

    async def list_all(self) -> list[SubscriptionInfo]: ...

    async def reset(self, name: str, to: Checkpoint) -> bool:
        """Move the checkpoint (back to the beginning, or to the end); False if unknown."""
        ...

    async def end(self) -> Checkpoint:
        """The checkpoint after the last event a reader can see now."""
        ...

    async def parked(self, name: str, limit: int) -> list[ParkedEvent]: ...


@runtime_checkable
class EventBackend(Backend, Protocol):
    """A backend that also stores events."""

    events: EventStorage
    subscriptions: SubscriptionStorage
