"""Fuzzed properties of the event store and subscriptions, for the memory and the
PostgreSQL suites (``tests/unit/test_fuzz_events.py``, ``tests/integration/...``).

- an append with any stream name, event type, data, metadata, id or expected version
  either succeeds and reads back what JSON makes of its input, or raises a
  ``CommandBusError`` and writes nothing;
- a handler that raises anything on any events never stops its subscription: every event
  is handled or parked, and the subscription ends caught up.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from hypothesis import strategies as st

from commandbus.events import (
    Checkpoint,
    EventContext,
    EventStore,
    NewEvent,
    RecordedEvent,
    Subscription,
)
from commandbus.events.ports import EventFilter
from tests import fuzz_strategies as fs
from tests.fuzz_support import expect_bus_error_only, json_equivalent, short

stream_names = st.one_of(
    st.sampled_from(["order-1", "order", "a_b-x/y#1", "Order-ÄÖ", "order-" + "x" * 201]),
    st.sampled_from(["", "-1", "1a-b", "order 1", "order-\x00", "order-a b", "order\n-1"]),
    st.sampled_from([None, 5, b"order-1", ["order-1"]]),
    st.text(max_size=10),
)
event_types = st.one_of(st.sampled_from(["Happened", "Order.Placed-v2"]), fs.command_types)
event_ids = st.one_of(st.none(), fs.uuids)
expected_versions = st.one_of(
    st.none(),
    st.integers(-2, 3),
    st.sampled_from([2**62, 2**63, 10**30, True, 1.5, "0"]),
)
events = st.lists(
    st.tuples(event_types, fs.payloads, st.one_of(st.just({}), fs.payloads), event_ids),
    max_size=4,
)


async def _seen(store: EventStore) -> int:
    """Every event stored (deliverable to readers yet or not)."""
    return await store.backend.events.count_after(Checkpoint(), EventFilter())


async def check_append(backend: Any, stream: Any, specs: Any, expected: Any) -> None:
    store = EventStore(backend)
    built = []
    for event_type, data, metadata, event_id in specs:
        chosen = fs.resolve_uuid(event_id) if event_id is not None else uuid4()
        built.append(
            NewEvent(event_type, fs.realize(data), event_id=chosen, metadata=fs.realize(metadata))
        )
    before = await _seen(store)
    result, error = await expect_bus_error_only(
        store.append(stream, built, expected_version=expected)
    )
    if error is not None:
        assert await _seen(store) == before, f"{type(error).__name__} ({error}) but wrote"
        return
    assert result is not None and len(result.positions) == len(built)
    stored = await store.read_stream(stream, result.version - len(built) + 1)
    # An id given as text (any case, braces) is stored as the UUID it spells.
    assert [e.event_id for e in stored] == [UUID(str(e.event_id)) for e in built]
    for got, sent in zip(stored, built, strict=True):
        assert got.event_type == sent.event_type
        assert json_equivalent(sent.data, got.data), short(got.data)
        assert json_equivalent(sent.metadata, got.metadata), short(got.metadata)
    assert await _seen(store) == before + len(built)


class Boom(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


FAILURES = [ValueError("bad"), KeyError("k"), Boom(), RuntimeError("\x00\ud800"), TypeError()]


async def check_subscription(backend: Any, outcomes: list[int], batch_size: int) -> None:
    """``outcomes[i]``: event i's handler fails that many times (9: always)."""
    store = EventStore(backend)
    category = f"fuzz{uuid4().hex[:8]}"
    appended = await store.append(
        f"{category}-1", [NewEvent("Happened", {"i": i}) for i in range(len(outcomes))]
    )
    left = {p: n for p, n in zip(appended.positions, outcomes, strict=True)}
    handled: list[int] = []

    async def handle(event: RecordedEvent, context: EventContext) -> None:
        if left[event.position]:
            left[event.position] -= 1
            raise FAILURES[event.position % len(FAILURES)]
        handled.append(event.position)

    name = category
    subscription = Subscription(
        backend, name, handle, categories=[category], batch_size=batch_size, retry_delay=0
    )
    await store.read_all(wait=60)  # deliverable (another program's transaction may delay it)
    for _ in range(10 * len(outcomes) + 10):
        if not await subscription.process_once():
            break
    info = await store.subscription(name)
    assert info is not None and info.lag == 0, info
    parked = {p.event.position for p in await store.parked_events(name)}
    assert parked == {p for p, n in zip(appended.positions, outcomes, strict=True) if n >= 3}
    # Each event handled for good once (earlier tries of a batch were rolled back).
    assert set(handled) | parked == set(appended.positions)
    assert info.handled == len(appended.positions) - len(parked)
