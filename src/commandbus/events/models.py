"""Events: what an application appends (``NewEvent``), what a reader gets back
(``RecordedEvent``), where a reader of all streams stands (``Checkpoint``), and what a
subscription reports (``SubscriptionInfo``, ``ParkedEvent``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from commandbus.models import JsonObject

__all__ = [
    "AppendResult",
    "Checkpoint",
    "NewEvent",
    "ParkedEvent",
    "RecordedEvent",
    "SubscriptionInfo",
    "stream_category",
]


def stream_category(stream: str) -> str:
    """The category of a stream: its name up to the first ``-`` (``order-42`` -> ``order``)."""
    return stream.split("-", 1)[0]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``event_id`` identifies it for good: appending an id that is
    already stored raises ``DuplicateEventError`` and writes nothing."""

    event_type: str
    data: JsonObject = field(default_factory=dict)
    event_id: UUID = field(default_factory=uuid4)
    metadata: JsonObject = field(default_factory=dict)
    #: The business flow the event belongs to (carried over from the command or event
    #: that led to it).
    correlation_id: UUID | None = None
    #: The message that caused this event.
    causation_id: UUID | None = None


@dataclass(frozen=True, order=True, slots=True)
class Checkpoint:
    """A place in the order of all events (commit order): the inserting transaction and
    the global position of the last event read. ``Checkpoint()`` is the beginning."""

    transaction_id: int = 0
    position: int = 0


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A stored event. ``version`` numbers it within its stream (from 1); ``position``
    within all streams."""

    stream: str
    version: int
    position: int
    transaction_id: int
    event_id: UUID
    event_type: str
    data: JsonObject
    metadata: JsonObject
    correlation_id: UUID | None
    causation_id: UUID | None
    recorded_at: datetime

    @property
    def category(self) -> str:
        return stream_category(self.stream)

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint of a reader that has read this event."""
        return Checkpoint(self.transaction_id, self.position)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote: the stream's version after it, and the events' positions."""

    stream: str
    version: int
    positions: list[int]


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A durable subscription as stored."""

    name: str
    checkpoint: Checkpoint
    categories: list[str] | None
    event_types: list[str] | None
    handled: int
    parked: int
    #: Events after the checkpoint that match the subscription's filters.
    lag: int
    failing_position: int | None
    failures: int
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a subscription's handler kept failing on: skipped, with the last error."""

    subscription: str
    event: RecordedEvent
    attempts: int
    error: str
    parked_at: datetime
