"""Event streams and durable subscriptions on PostgreSQL (or in memory).

``EventStore`` appends events to streams atomically with the caller's own writes and reads
them back; ``Subscription`` runs a handler once per event, in commit order, with its
checkpoint in the handler's transaction. See ``docs/events.md``.
"""

from commandbus.errors import (
    DuplicateEventError,
    SubscriptionNotFoundError,
    WrongExpectedVersionError,
)
from commandbus.events.models import (
    AppendResult,
    Checkpoint,
    NewEvent,
    ParkedEvent,
    RecordedEvent,
    SubscriptionInfo,
    stream_category,
)
from commandbus.events.store import EventStore
from commandbus.events.subscription import EventContext, EventHandler, Subscription

__all__ = [
    "AppendResult",
    "Checkpoint",
    "DuplicateEventError",
    "EventContext",
    "EventHandler",
    "EventStore",
    "NewEvent",
    "ParkedEvent",
    "RecordedEvent",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionNotFoundError",
    "WrongExpectedVersionError",
    "stream_category",
]
