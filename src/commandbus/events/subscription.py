"""``Subscription``: a durable, named consumer of the events of all streams.

    async def send_welcome(event: RecordedEvent, context: EventContext) -> None:
        await context.conn.execute("INSERT INTO outbox ...")   # same transaction

    subscription = Subscription(pool, "welcome_emails", send_welcome,
                                categories=["customer"], event_types=["CustomerJoined"])
    await subscription.run()            # until subscription.stop()

Each batch is one transaction: the subscription's row is locked (a second consumer of
the same name skips it and waits, so two never handle the same event at once), the
handler runs for each event on that transaction's connection, and the checkpoint moves
past the batch in the same transaction. So what the handler writes through
``context.conn`` happens exactly once per event; anything else it does is at least once.
A subscription with a filter moves its checkpoint past the events it does not want, too
(each is looked at once, however rarely a wanted one comes).

A handler that raises rolls its batch back. The events before the failing one are
handled again on their own, then the failing one is tried ``max_attempts`` times (the
count is stored, so restarts do not reset it), ``retry_delay`` seconds apart when
running; after the last attempt it is **parked** with its error — kept, listed by
``EventStore.parked_events`` and ``commandbus subscription list`` — and the subscription
goes on with the next event. One bad event never stops a subscription.

``batch_handler=`` instead of a handler receives each batch whole (the event-driven
process engine applies a batch in a few statements that way); when it raises, the
batch's events are taken one by one until the failing one is found and treated as above.

Events arrive in commit order, and an event is delivered only once every writing
transaction older than it has ended (see ``commandbus.postgres.events``): none is skipped
when transactions commit out of order. ``drain()`` waits (up to ``wait`` seconds) for
events committed but held back that way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from commandbus.backends import BackendSource
from commandbus.consuming import ConsumerLoop
from commandbus.errors import DatabaseUnavailableError, StorageError
from commandbus.events.encoding import event_filter, validate_subscription_name
from commandbus.events.models import RecordedEvent
from commandbus.events.ports import EVENTS_CHANNEL, EventBackend
from commandbus.events.store import event_backend
from commandbus.ports import Clock, Conn, Waiter
from commandbus.sanitise import describe_exception, storable_text
from commandbus.validation import (
    MAX_ATTEMPTS_LIMIT,
    MAX_BATCH_LIMIT,
    validate_count,
    validate_seconds,
)

__all__ = ["BatchHandler", "EventContext", "EventHandler", "Subscription"]

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = 3_600.0
#: How many windows with no wanted event one ``process_once`` passes at most (each in a
#: statement of bounded cost; the next call goes on).
PASSES_PER_BATCH = 50


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler gets besides the event: the batch's open transaction."""

    #: The connection of the subscription's transaction: write here for exactly-once.
    conn: Conn
    subscription: str


#: ``async def handle(event, context)``; what it returns is not used.
EventHandler = Callable[[RecordedEvent, EventContext], Awaitable[object]]
#: ``async def handle(events, context)``: a whole batch at once (when it raises, the
#: subscription takes those events one by one, to find the one that fails).
BatchHandler = Callable[[list[RecordedEvent], EventContext], Awaitable[object]]


class _HandlerFailed(Exception):
    def __init__(self, index: int, event: RecordedEvent, error: BaseException) -> None:
        self.index = index
        self.event = event
        self.error = error


class _Narrow(Exception):
    """A batch handler failed on a batch of ``size`` events."""

    def __init__(self, size: int) -> None:
        self.size = size


class Subscription(ConsumerLoop):
    """Runs ``handler`` once for every event of the matching streams, in commit order."""

    consumer_name = "subscription"

    def __init__(
        self,
        backend: BackendSource,
        name: str,
        handler: EventHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        categories: Sequence[str] | None = None,
        event_types: Sequence[str] | None = None,
        batch_size: int = 100,
        max_attempts: int = 3,
        retry_delay: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise TypeError("give a Subscription either a handler or a batch_handler")
        given = handler if handler is not None else batch_handler
        plain = inspect.isfunction(given) or inspect.ismethod(given)
        if not callable(given) or (plain and not inspect.iscoroutinefunction(given)):
            raise TypeError(
                "a subscription handler must be an async function "
                "(async def handle(event, context)): it writes through context.conn"
            )
        events_backend: EventBackend = event_backend(backend, clock)
        super().__init__(events_backend, clock or events_backend.clock)
        self._events_backend = events_backend
        self.name = validate_subscription_name(name)
        self.handler = handler
        self.batch_handler = batch_handler
        self.where = event_filter(categories, event_types)
        self.batch_size = validate_count(batch_size, "batch_size", MAX_BATCH_LIMIT)
        self.max_attempts = validate_count(max_attempts, "max_attempts", MAX_ATTEMPTS_LIMIT)
        self.retry_delay = validate_seconds(
            retry_delay, "retry_delay", MAX_RETRY_DELAY, allow_zero=True
        )
        self._ensured = False
        # After a failure in a batch: handle only the events before it, then it alone.
        self._limit: int | None = None
        # After a batch handler failed on a batch: that many events are taken one by one.
        self._one_by_one = 0
        self._backing_off = False

    def listened_queues(self) -> list[str]:
        return [EVENTS_CHANNEL]

    async def drain(self, max_batches: int = 1_000_000, *, wait: float = 10.0) -> int:
        """Handle events until caught up with every event committed so far; returns how
        many were taken. An event is delivered only once the transactions that started
        before it have ended (see the module docstring): when events are stored but not
        deliverable yet, wait up to ``wait`` seconds for those transactions."""
        validate_seconds(wait, "wait", MAX_RETRY_DELAY, allow_zero=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        total = 0
        for _ in range(max_batches):
            taken = await self.process_once()
            if taken:
                total += taken
                continue
            info = await self._events_backend.subscriptions.get(self.name)
            if info is None or info.lag == 0 or loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)  # another transaction is still open: real time
        return total

    async def process_once(self, limit: int | None = None) -> int:
        """Handle one batch; returns how many events it took (0: none new, or another
        consumer holds the subscription). A failing event counts as taken."""
        subscriptions = self._events_backend.subscriptions
        if not self._ensured:
            await subscriptions.ensure(self.name, self.where)
            self._ensured = True
        size = min(limit or self.batch_size, self._limit or self.batch_size)
        if self._one_by_one:
            size = 1
        try:
            async with self._backend.transaction() as conn:
                taken = await subscriptions.take(self.name, size, self.where, conn=conn)
                # Windows of events this subscription does not want are passed for good,
                # a few in this transaction (see ``look_ahead``).
                for _ in range(PASSES_PER_BATCH):
                    if taken is None or taken.events or taken.passed is None:
                        break
                    await subscriptions.advance(
                        self.name, [], self.where, conn=conn, to=taken.passed
                    )
                    taken = await subscriptions.take(self.name, size, self.where, conn=conn)
                if taken is None or not taken.events:
                    return 0
                context = EventContext(conn, self.name)
                await self._handle(taken.events, context)
                try:
                    await subscriptions.advance(
                        self.name,
                        taken.events,
                        self.where,
                        conn=conn,
                        to=taken.checkpoint_after(),
                    )
                except StorageError as exc:
                    if isinstance(exc, DatabaseUnavailableError):
                        raise
                    # The handler left the transaction broken (e.g. a failed statement of
                    # its own): blame the batch's last event, then narrow down.
                    raise _HandlerFailed(len(taken.events) - 1, taken.events[-1], exc) from exc
        except _HandlerFailed as failed:
            return await self._failed(failed)
        except _Narrow as narrow:
            self._one_by_one = narrow.size  # which event failed is not known: try each alone
            return narrow.size
        self._limit = None
        self._one_by_one = max(0, self._one_by_one - 1)
        self._backing_off = False
        return len(taken.events)

    async def _handle(self, events: list[RecordedEvent], context: EventContext) -> None:
        if self.batch_handler is not None:
            try:
                await self.batch_handler(events, context)
            except Exception as exc:
                if len(events) > 1:
                    raise _Narrow(len(events)) from exc
                raise _HandlerFailed(0, events[0], exc) from exc
            return
        assert self.handler is not None
        for index, event in enumerate(events):
            try:
                await self.handler(event, context)
            except Exception as exc:
                raise _HandlerFailed(index, event, exc) from exc

    async def _failed(self, failed: _HandlerFailed) -> int:
        error = storable_text(describe_exception(failed.error))
        event = failed.event
        # The attempt counts either way; only the subscription's next event can be parked
        # (the checkpoint moves past it), so one behind others is first retried alone,
        # after those others have been handled in a batch of their own.
        next_event = failed.index == 0
        parked = await self._events_backend.subscriptions.record_failure(
            self.name, event, error, self.max_attempts if next_event else None
        )
        self._limit = 1 if next_event else failed.index
        if parked:
            logger.warning(
                "subscription %s parked event %s (%s #%d of %s) after %d attempts: %s",
                self.name,
                event.position,
                event.event_type,
                event.version,
                event.stream,
                self.max_attempts,
                error,
            )
            self._limit = None
        else:
            logger.warning(
                "subscription %s: handler failed on event %s (%s of %s), will retry: %s",
                self.name,
                event.position,
                event.event_type,
                event.stream,
                error,
            )
            self._backing_off = next_event
        return 1

    async def run(self, poll_interval: float = 1.0, *, use_notify: bool = True) -> None:
        """Handle events until ``stop()``: woken by appends (NOTIFY) and every
        ``poll_interval`` seconds in any case."""
        await self._run(1, poll_interval, use_notify)

    async def _serve(
        self, stack: AsyncExitStack, waiter: Waiter | None, concurrency: int, poll_interval: float
    ) -> None:
        while not self._stop_requested:
            try:
                n = await self.process_once()
            except Exception as exc:
                logger.warning(
                    "subscription %s: batch failed: %s", self.name, describe_exception(exc)
                )
                n = 0
            if self._stop_requested:
                break
            if self._backing_off:
                self._backing_off = False
                await self._clock.sleep(self.retry_delay)
            elif n == 0:
                await self._idle(waiter, poll_interval)

    async def _on_stop_timeout(self) -> None:
        # The batch in progress is one transaction: it commits or rolls back on its own.
        return
