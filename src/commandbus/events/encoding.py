"""Checks on what callers give the event store, before anything reaches a database."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from commandbus.errors import DuplicateEventError, ValidationError
from commandbus.events.models import NewEvent
from commandbus.events.ports import EncodedEvent, EventFilter
from commandbus.validation import (
    COMMAND_TYPE_PATTERN,
    MAX_PAYLOAD_BYTES,
    NAME_PATTERN,
    encode_payload,
    validate_uuid,
)

__all__ = [
    "MAX_EVENTS_PER_APPEND",
    "encode_events",
    "event_filter",
    "validate_category",
    "validate_event_type",
    "validate_stream_name",
    "validate_subscription_name",
]

#: ``category`` or ``category-id``: the category as a Python identifier, the id any
#: printable ASCII without spaces (``order-42``, ``pullrequest-acme/web#17``).
STREAM_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}(-[\x21-\x7e]{1,200})?$")
CATEGORY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_EVENTS_PER_APPEND = 10_000


def validate_stream_name(value: object) -> str:
    if not isinstance(value, str) or not STREAM_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid stream name {value!r}: use 'category-id' (e.g. 'order-42'): a category "
            "of letters, digits and '_' starting with a letter, then '-' and an id of up to "
            "200 printable ASCII characters without spaces"
        )
    return value


def validate_category(value: object) -> str:
    if not isinstance(value, str) or not CATEGORY_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid stream category {value!r}: letters, digits and '_', starting with a letter"
        )
    return value


def validate_event_type(value: object) -> str:
    if not isinstance(value, str) or not COMMAND_TYPE_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid event type {value!r}: use 1-128 characters of letters, digits, '_', '.' "
            "or '-', starting with a letter (e.g. 'OrderPlaced')"
        )
    return value


def validate_subscription_name(value: object) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid subscription name {value!r}: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter (e.g. 'order_emails')"
        )
    return value


def _names(values: object, check: object, what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValidationError(f"{what} must be a list of names, got {values!r}")
    names = tuple(check(v) for v in values)  # type: ignore[operator]
    if not names:
        raise ValidationError(f"{what} must not be empty (None means all)")
    return tuple(sorted(set(names)))


def event_filter(categories: object = None, event_types: object = None) -> EventFilter:
    """An ``EventFilter`` from the caller's lists (None: no filter)."""
    return EventFilter(
        categories=_names(categories, validate_category, "categories"),
        event_types=_names(event_types, validate_event_type, "event_types"),
    )


def encode_events(events: object, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[EncodedEvent]:
    """Validate a non-empty list of ``NewEvent``s and encode their data and metadata."""
    if isinstance(events, NewEvent):
        events = [events]
    if not isinstance(events, Sequence) or isinstance(events, str | bytes):
        raise ValidationError(f"events must be a list of NewEvent, got {type(events).__name__}")
    if not events:
        raise ValidationError("events must not be empty: append at least one event")
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValidationError(
            f"{len(events)} events in one append; at most {MAX_EVENTS_PER_APPEND}"
        )
    encoded = []
    seen: set[object] = set()
    repeated = []
    for index, event in enumerate(events):
        if not isinstance(event, NewEvent):
            raise ValidationError(f"events[{index}] must be a NewEvent, got {type(event).__name__}")
        event_id = validate_uuid(event.event_id, "event_id")
        if event_id in seen:
            repeated.append(event_id)
        seen.add(event_id)
        encoded.append(
            EncodedEvent(
                event_id=event_id,
                event_type=validate_event_type(event.event_type),
                data=encode_payload(event.data, f"events[{index}].data", max_bytes),
                metadata=encode_payload(event.metadata, f"events[{index}].metadata", max_bytes),
                correlation_id=None
                if event.correlation_id is None
                else validate_uuid(event.correlation_id, "correlation_id"),
                causation_id=None
                if event.causation_id is None
                else validate_uuid(event.causation_id, "causation_id"),
            )
        )
    if repeated:
        raise DuplicateEventError(repeated)
    return encoded
