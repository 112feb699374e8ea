"""Contract: the event store (``EventStore`` over ``EventStorage``) and subscriptions
(``Subscription`` over ``SubscriptionStorage``), through their public API.

Appends are atomic, versioned and unique by event id; reading all streams follows commit
order and never passes an event whose transaction is still open; a subscription handles
each event once, with its handler's writes in the checkpoint's transaction, and parks an
event its handler keeps failing on instead of stopping."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

from commandbus.errors import (
    DuplicateEventError,
    PayloadTooLargeError,
    SubscriptionNotFoundError,
    ValidationError,
    WrongExpectedVersionError,
)
from commandbus.events import (
    Checkpoint,
    EventContext,
    EventStore,
    NewEvent,
    RecordedEvent,
    Subscription,
)
from commandbus.events.encoding import encode_events
from commandbus.events.ports import EventFilter, FoldedEvent, StreamAppend
from commandbus.testing.contracts._base import ContractBase, _Rollback

#: How long a read of all streams (or a drain) may wait for events held back by a writing
#: transaction still open elsewhere on the server: readers never pass those (see
#: ``EventStore.read_all``); on a shared server another program's long transaction can
#: hold them back for a while.
SETTLE = 60.0


def ev(event_type: str = "Happened", **data: Any) -> NewEvent:
    return NewEvent(event_type, data)


class Recorder:
    """A subscription handler that records what it saw and writes one event per event it
    handles through the subscription's connection (the "user table" of exactly-once), to
    the stream ``effect-<subscription>``: subscribe to other categories only."""

    def __init__(self, store: EventStore, fail: dict[int, int] | None = None) -> None:
        self.store = store
        self.seen: list[int] = []
        #: position -> how many more times to fail on it (-1: always).
        self.fail = dict(fail or {})

    async def __call__(self, event: RecordedEvent, context: EventContext) -> None:
        self.seen.append(event.position)
        left = self.fail.get(event.position, 0)
        if left:
            self.fail[event.position] = left - 1
            raise RuntimeError(f"cannot handle {event.position}")
        await self.store.append(
            f"effect-{context.subscription}",
            [NewEvent("Handled", {"position": event.position})],
            conn=context.conn,
        )

    async def effects(self, subscription: str) -> list[int]:
        events = await self.store.read_stream(f"effect-{subscription}")
        return [e.data["position"] for e in events]


class EventStoreContract(ContractBase):
    """The contract of ``EventStore`` and ``Subscription`` on a backend."""

    @pytest.fixture
    def store(self, backend: Any) -> EventStore:
        return EventStore(backend)

    # -- appending and reading a stream --------------------------------------------------

    async def test_append_numbers_events_and_reads_them_back(self, store: EventStore) -> None:
        cause, flow = uuid4(), uuid4()
        first = NewEvent(
            "OrderPlaced",
            {"total": 30, "lines": [1, 2]},
            metadata={"by": "web"},
            correlation_id=flow,
            causation_id=cause,
        )
        result = await store.append("order-1", [first, ev("OrderPaid")], expected_version=0)
        assert result.stream == "order-1" and result.version == 2
        assert len(result.positions) == 2 and result.positions[0] < result.positions[1]
        again = await store.append("order-1", ev("OrderShipped"), expected_version=2)
        assert again.version == 3 and again.positions[0] > result.positions[1]

        events = await store.read_stream("order-1")
        assert [e.version for e in events] == [1, 2, 3]
        assert [e.event_type for e in events] == ["OrderPlaced", "OrderPaid", "OrderShipped"]
        assert [e.position for e in events] == [*result.positions, *again.positions]
        placed = events[0]
        assert placed.event_id == first.event_id and placed.data == {"total": 30, "lines": [1, 2]}
        assert placed.metadata == {"by": "web"}
        assert (placed.correlation_id, placed.causation_id) == (flow, cause)
        assert placed.stream == "order-1" and placed.category == "order"
        assert [e.version for e in await store.read_stream("order-1", 2, limit=1)] == [2]
        assert await store.stream_version("order-1") == 3
        assert await store.stream_version("order-2") == 0
        assert await store.read_stream("order-2") == []

    async def test_expected_version_refuses_a_concurrent_writer(self, store: EventStore) -> None:
        await store.append("order-1", ev(), expected_version=0)
        with pytest.raises(WrongExpectedVersionError) as refused:
            await store.append("order-1", [ev(), ev()], expected_version=0)
        assert (refused.value.expected, refused.value.actual) == (0, 1)
        with pytest.raises(WrongExpectedVersionError) as refused:
            await store.append("order-1", ev(), expected_version=5)
        assert refused.value.actual == 1
        with pytest.raises(WrongExpectedVersionError) as refused:
            await store.append("order-9", ev(), expected_version=1)
        assert refused.value.actual == 0
        assert await store.stream_version("order-1") == 1
        assert await store.stream_version("order-9") == 0
        assert len(await store.read_all(wait=SETTLE)) == 1
        # Without an expected version an append always goes after the last event.
        assert (await store.append("order-1", ev())).version == 2

    async def test_two_writers_expecting_one_version_one_wins(self, store: EventStore) -> None:
        results = await asyncio.gather(
            *(store.append("order-1", ev(writer=i), expected_version=0) for i in range(2)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], WrongExpectedVersionError)
        assert await store.stream_version("order-1") == 1

    async def test_an_event_id_is_stored_once(self, store: EventStore) -> None:
        event = ev("Paid")
        await store.append("order-1", event)
        with pytest.raises(DuplicateEventError) as duplicate:
            await store.append("order-2", [ev(), event])
        assert duplicate.value.event_ids == [event.event_id]
        with pytest.raises(DuplicateEventError):
            await store.append(
                "order-3",
                [ev("X"), NewEvent("Y", {}, event_id=event.event_id)],
            )
        twice = ev()
        with pytest.raises(DuplicateEventError):
            await store.append("order-4", [twice, twice])
        assert [await store.stream_version(s) for s in ("order-2", "order-3", "order-4")] == [0] * 3
        assert [e.event_id for e in await store.read_all(wait=SETTLE)] == [event.event_id]

    async def test_append_commits_with_the_callers_transaction(
        self, store: EventStore, backend: Any
    ) -> None:
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await store.append("order-1", ev(), conn=conn)
                assert await store.stream_version("order-1", conn=conn) == 1
                raise _Rollback
        assert await store.stream_version("order-1") == 0
        assert await store.read_all(wait=SETTLE) == []

        kept = ev("Kept")
        async with backend.transaction() as conn:
            await store.append("order-1", kept, conn=conn)
            # A refused append undoes itself only: the transaction stays usable.
            with pytest.raises(WrongExpectedVersionError):
                await store.append("order-1", ev(), expected_version=0, conn=conn)
            with pytest.raises(DuplicateEventError):
                await store.append("order-2", kept, conn=conn)
            await store.append("order-2", ev("Other"), conn=conn)
        assert [e.event_type for e in await store.read_all(wait=SETTLE)] == ["Kept", "Other"]

    async def test_bad_input_is_refused_and_writes_nothing(self, store: EventStore) -> None:
        bad_calls: list[tuple[Any, Any, type[Exception]]] = [
            ("", [ev()], ValidationError),
            ("order 1", [ev()], ValidationError),
            ("-1", [ev()], ValidationError),
            ("order-" + "x" * 300, [ev()], ValidationError),
            (42, [ev()], ValidationError),
            ("order-1", [], ValidationError),
            ("order-1", [{"event_type": "X"}], ValidationError),
            ("order-1", "OrderPlaced", ValidationError),
            ("order-1", [NewEvent("bad type!", {})], ValidationError),
            ("order-1", [NewEvent("X", [1, 2])], ValidationError),  # type: ignore[arg-type]
            ("order-1", [NewEvent("X", {"t": {1, 2}})], ValidationError),
            ("order-1", [NewEvent("X", {"nul": "a\x00b"})], ValidationError),
            ("order-1", [NewEvent("X", {}, metadata="m")], ValidationError),  # type: ignore[arg-type]
            ("order-1", [NewEvent("X", {}, event_id="nope")], ValidationError),  # type: ignore[arg-type]
            ("order-1", [NewEvent("X", {"big": "x" * 300_000})], PayloadTooLargeError),
        ]
        for stream, events, error in bad_calls:
            with pytest.raises(error):
                await store.append(stream, events)
        with pytest.raises(ValidationError):
            await store.append("order-1", ev(), expected_version=-1)
        with pytest.raises(ValidationError):
            await store.read_all(limit=0)
        with pytest.raises(ValidationError):
            await store.read_all(categories="order")
        assert await store.read_all(wait=SETTLE) == []

    async def test_snapshots_keep_the_newest(self, store: EventStore, backend: Any) -> None:
        assert await store.snapshot("order-1") is None
        await store.save_snapshot("order-1", 5, {"total": 5})
        await store.save_snapshot("order-1", 3, {"total": 3})  # older: ignored
        assert await store.snapshot("order-1") == (5, {"total": 5})
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await store.save_snapshot("order-1", 9, {"total": 9}, conn=conn)
                raise _Rollback
        assert await store.snapshot("order-1") == (5, {"total": 5})
        await store.save_snapshot("order-1", 9, {"total": 9})
        assert await store.snapshot("order-1") == (9, {"total": 9})
        with pytest.raises(ValidationError):
            await store.save_snapshot("order-1", 10, [1])  # type: ignore[arg-type]

    async def test_append_many_and_load_streams(self, store: EventStore, backend: Any) -> None:
        events = backend.events
        await store.append("order-1", [ev("A"), ev("B")])
        await store.save_snapshot("order-1", 1, {"seen": 1})
        one, two = encode_events([ev("C")]), encode_events([ev("X"), ev("Y")])
        async with backend.transaction() as conn:
            await events.append_many(
                [StreamAppend("order-1", 2, one), StreamAppend("order-2", 0, two)], conn=conn
            )
        assert [e.version for e in await store.read_stream("order-2")] == [1, 2]
        loaded = await events.load_streams(["order-1", "order-2", "order-3"], 100)
        snapshot, tail = loaded["order-1"]
        assert snapshot == (1, {"seen": 1}) and [e.event_type for e in tail] == ["B", "C"]
        # What folding needs of each event, and only that.
        assert tail[1] == FoldedEvent(3, one[0].event_id, "C", {})
        assert loaded["order-2"][0] is None and [e.version for e in loaded["order-2"][1]] == [1, 2]
        assert loaded["order-3"] == (None, [])
        ids = [one[0].event_id, uuid4()]
        assert await events.stored_event_ids(ids) == {one[0].event_id}
        for stale in (
            StreamAppend("order-1", 2, encode_events([ev()])),  # now at 3
            StreamAppend("order-2", 0, encode_events([ev()])),
        ):  # exists
            with pytest.raises(WrongExpectedVersionError):
                async with backend.transaction() as conn:
                    await events.append_many([stale], conn=conn)
        assert await store.stream_version("order-1") == 3
        assert await store.stream_version("order-2") == 2

    # -- reading all streams -------------------------------------------------------------

    async def test_read_all_filters_and_pages_without_gaps(self, store: EventStore) -> None:
        await store.append("order-1", [ev("Placed"), ev("Paid")])
        await store.append("customer-7", ev("Joined"))
        await store.append("order-2", ev("Placed"))
        every = await store.read_all(wait=SETTLE)
        assert [(e.stream, e.event_type) for e in every] == [
            ("order-1", "Placed"),
            ("order-1", "Paid"),
            ("customer-7", "Joined"),
            ("order-2", "Placed"),
        ]
        assert [e.stream for e in await store.read_all(categories=["customer"], wait=SETTLE)] == [
            "customer-7"
        ]
        placed = await store.read_all(categories=["order"], event_types=["Placed"], wait=SETTLE)
        assert [e.stream for e in placed] == ["order-1", "order-2"]
        pages, after = [], None
        while page := await store.read_all(after, limit=3, wait=SETTLE):
            pages.append([e.position for e in page])
            after = page[-1]
        assert pages == [[e.position for e in every[:3]], [every[3].position]]
        assert (
            await store.read_all(
                Checkpoint(every[-1].transaction_id, every[-1].position), wait=SETTLE
            )
            == []
        )

    async def test_read_all_never_passes_an_open_transaction(
        self, store: EventStore, backend: Any
    ) -> None:
        """Two appends committing in the opposite order of their positions: a reader that
        followed positions alone would see the second, move past the first, and lose it."""
        first_in, second_done = asyncio.Event(), asyncio.Event()

        async def slow_writer() -> None:
            async with backend.transaction() as conn:
                await store.append("order-1", ev("First"), conn=conn)
                first_in.set()
                await second_done.wait()

        writer = asyncio.create_task(slow_writer())
        await first_in.wait()
        await store.append("order-2", ev("Second"))
        # The second append is committed and readable as a stream ...
        assert [e.event_type for e in await store.read_stream("order-2")] == ["Second"]
        # ... but a reader of all streams waits for the first transaction to end, though it
        # knows that a committed event is waiting.
        assert await store.read_all() == []
        assert await backend.events.count_after(Checkpoint(), EventFilter()) == 1
        second_done.set()
        await writer
        events = await store.read_all(wait=SETTLE)
        assert [e.event_type for e in events] == ["First", "Second"]
        assert events[0].position < events[1].position

    # -- subscriptions -------------------------------------------------------------------

    async def test_subscription_handles_each_event_once_and_remembers(
        self, store: EventStore, backend: Any
    ) -> None:
        await store.append("order-1", [ev("Placed"), ev("Paid")])
        await store.append("customer-1", ev("Joined"))
        recorder = Recorder(store)
        subscription = Subscription(backend, "orders", recorder, categories=["order"], batch_size=1)
        assert await subscription.drain(wait=SETTLE) == 2
        await store.append("order-2", ev("Placed"))
        # A new runner of the same subscription starts at its stored checkpoint.
        again = Subscription(backend, "orders", recorder, categories=["order"])
        assert await again.drain(wait=SETTLE) == 1
        orders = [e.position for e in await store.read_all(categories=["order"], wait=SETTLE)]
        assert recorder.seen == orders and await recorder.effects("orders") == orders
        info = await store.subscription("orders")
        assert info is not None and info.handled == 3 and info.lag == 0 and info.parked == 0
        assert info.categories == ["order"] and info.event_types is None
        # Past the last event of all: the unwanted ones it looked at are passed too.
        assert info.checkpoint == (await store.read_all(wait=SETTLE))[-1].checkpoint

    async def test_a_filtered_subscription_moves_past_events_it_does_not_want(
        self, store: EventStore, backend: Any
    ) -> None:
        # A long run of other events (more than one look ahead holds) is passed once, not
        # read again on every poll: the checkpoint moves past them with nothing handled.
        await store.append("customer-1", [ev("Joined") for _ in range(2_500)])
        last = (await store.read_all(wait=SETTLE, limit=10_000))[-1].checkpoint
        recorder = Recorder(store)
        subscription = Subscription(backend, "orders", recorder, categories=["order"], batch_size=1)
        assert await subscription.process_once() == 0
        info = await store.subscription("orders")
        assert info is not None and info.checkpoint == last
        assert (info.handled, info.lag) == (0, 0)
        [placed] = (await store.append("order-1", ev("Placed"))).positions
        assert await subscription.drain(wait=SETTLE) == 1
        assert recorder.seen == [placed] and await recorder.effects("orders") == [placed]

    async def test_a_failing_event_is_retried_then_parked_and_the_rest_go_on(
        self, store: EventStore, backend: Any
    ) -> None:
        result = await store.append("order-1", [ev("A"), ev("B"), ev("C")])
        a, b, c = result.positions
        recorder = Recorder(store, fail={b: -1})
        subscription = Subscription(
            backend, "orders", recorder, categories=["order"], max_attempts=3, retry_delay=0
        )
        await subscription.drain(wait=SETTLE)
        # A handled once for good (its first try was rolled back with B's failure).
        assert await recorder.effects("orders") == [a, c]
        assert recorder.seen.count(b) == 3
        info = await store.subscription("orders")
        assert info is not None and info.parked == 1 and info.lag == 0 and info.handled == 2
        [parked] = await store.parked_events("orders")
        assert parked.event.position == b and parked.attempts == 3
        assert parked.error == f"RuntimeError: cannot handle {b}"

    async def test_a_transient_failure_is_retried_and_not_parked(
        self, store: EventStore, backend: Any
    ) -> None:
        [a] = (await store.append("order-1", ev())).positions
        await store.read_all(wait=SETTLE)  # deliverable now (see SETTLE)
        recorder = Recorder(store, fail={a: 1})
        subscription = Subscription(
            backend, "orders", recorder, categories=["order"], max_attempts=3
        )
        assert await subscription.process_once() == 1  # failed
        info = await store.subscription("orders")
        assert info is not None and info.failures == 1 and info.failing_position == a
        assert info.last_error == f"RuntimeError: cannot handle {a}"
        await subscription.drain(wait=SETTLE)
        assert await recorder.effects("orders") == [a]
        info = await store.subscription("orders")
        assert info is not None and (info.failures, info.parked, info.handled) == (0, 0, 1)

    async def test_two_consumers_never_handle_one_batch_at_once(
        self, store: EventStore, backend: Any
    ) -> None:
        await store.append("order-1", [ev(), ev()])
        await store.read_all(wait=SETTLE)  # deliverable now (see SETTLE)
        entered, release = asyncio.Event(), asyncio.Event()
        seen: list[tuple[str, int]] = []

        def handler(who: str) -> Any:
            async def handle(event: RecordedEvent, context: EventContext) -> None:
                seen.append((who, event.version))
                entered.set()
                await release.wait()

            return handle

        first = Subscription(backend, "orders", handler("first"))
        second = Subscription(backend, "orders", handler("second"))
        busy = asyncio.create_task(first.process_once())
        await entered.wait()
        assert await second.process_once() == 0  # the subscription is held: skipped
        release.set()
        assert await busy == 2
        assert await second.process_once() == 0  # nothing new
        assert seen == [("first", 1), ("first", 2)]

    async def test_reset_replays_or_skips(self, store: EventStore, backend: Any) -> None:
        await store.append("order-1", [ev(), ev()])
        recorder = Recorder(store)
        subscription = Subscription(backend, "orders", recorder, categories=["order"])
        await subscription.drain(wait=SETTLE)
        assert await store.reset_subscription("orders") == Checkpoint()
        assert await subscription.drain(wait=SETTLE) == 2
        assert len(recorder.seen) == 4
        await store.append("order-1", ev())
        last = (await store.read_all(wait=SETTLE))[-1].checkpoint  # deliverable now
        assert await store.reset_subscription("orders", to_end=True) == last
        assert await subscription.drain(wait=SETTLE) == 0
        with pytest.raises(SubscriptionNotFoundError):
            await store.reset_subscription("nobody")
        names = [s.name for s in await store.subscriptions()]
        assert names == ["orders"]

    async def test_a_batch_handler_that_fails_is_narrowed_to_the_bad_event(
        self, store: EventStore, backend: Any
    ) -> None:
        result = await store.append("order-1", [ev("A"), ev("B"), ev("C")])
        bad = result.positions[1]
        batches: list[list[int]] = []

        async def handle(events: list[RecordedEvent], context: EventContext) -> None:
            batches.append([e.position for e in events])
            if bad in batches[-1]:
                raise RuntimeError("B is bad")

        subscription = Subscription(
            backend, "orders", batch_handler=handle, max_attempts=2, retry_delay=0
        )
        await subscription.drain(wait=SETTLE)
        [parked] = await store.parked_events("orders")
        assert parked.event.position == bad
        a, _, c = result.positions
        assert batches == [[a, bad, c], [a], [bad], [bad], [c]]
        with pytest.raises(TypeError, match="either a handler or a batch_handler"):
            Subscription(backend, "orders")

    async def test_a_sync_handler_is_refused(self, backend: Any) -> None:
        def handle(event: RecordedEvent, context: EventContext) -> None: ...

        with pytest.raises(TypeError, match="async"):
            Subscription(backend, "orders", handle)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            Subscription(backend, "Orders!", Recorder(EventStore(backend)))
