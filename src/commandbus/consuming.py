"""The consumer loop that ``Worker`` and ``ProcessReplyRouter`` share.

Both read a queue in batches (``process_once``), both run until ``stop()``, both wait for
work the same way when the queue is empty: a LISTEN/NOTIFY wake-up (``use_notify``) or a
``poll_interval`` timer, whichever comes first — notifications are hints, and delayed
messages (retries, timers) become visible without one. What differs is what one batch
does and what a stop that times out abandons; subclasses provide those.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Generator
from contextlib import AsyncExitStack
from typing import Any

from commandbus.ports import Backend, Clock, Waiter
from commandbus.validation import validate_count, validate_seconds
from commandbus.waiting import wait_for_work

#: Bounds on ``run``'s arguments: far above any sane value, so a typo fails loudly.
MAX_CONCURRENCY = 10_000
MAX_POLL_SECONDS = 3_600.0


class Stopping(Coroutine[Any, Any, None]):
    """What ``stop()`` returns. The stop is requested when ``stop()`` is called, so a plain
    ``consumer.stop()`` (the seed's router) stops the run; ``await consumer.stop()`` (or a
    task made of it) also waits for the work in progress to finish. The waiting coroutine
    is only made when awaited, so a plain call leaves no "never awaited" warning."""

    def __init__(self, consumer: ConsumerLoop, timeout: float | None) -> None:
        self._consumer = consumer
        self._timeout = timeout
        self._waiting: Coroutine[Any, Any, None] | None = None

    def _wait(self) -> Coroutine[Any, Any, None]:
        if self._waiting is None:
            self._waiting = self._consumer._wait_stopped(self._timeout)
        return self._waiting

    def send(self, value: Any) -> Any:
        return self._wait().send(value)

    def throw(self, *args: Any) -> Any:
        return self._wait().throw(*args)

    def close(self) -> None:
        if self._waiting is not None:
            self._waiting.close()

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()


class ConsumerLoop(ABC):
    """Run, stop, drain and the idle wait of a queue consumer."""

    #: What the consumer is called in messages ("worker", "router").
    consumer_name = "consumer"

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock
        self._stop_requested = False
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def is_running(self) -> bool:
        return self._running

    @abstractmethod
    async def process_once(self, limit: int | None = None) -> int:
        """Handle one batch; return how many messages it read (0: nothing visible)."""

    @abstractmethod
    def listened_queues(self) -> list[str]:
        """The queues whose notifications wake the consumer."""

    @abstractmethod
    async def _serve(
        self, stack: AsyncExitStack, waiter: Waiter | None, concurrency: int, poll_interval: float
    ) -> None:
        """Consume until ``_stop_requested`` (``stack`` closes with the run)."""

    @abstractmethod
    async def _on_stop_timeout(self) -> None:
        """Called when ``stop(timeout)`` ran out before the run finished."""

    async def drain(self, max_batches: int = 1_000_000) -> int:
        """Run ``process_once`` until nothing is visible; returns how many were read."""
        total = 0
        for _ in range(max_batches):
            n = await self.process_once()
            if n == 0:
                break
            total += n
        return total

    async def _run(self, concurrency: int, poll_interval: float, use_notify: bool) -> None:
        """Consume until ``stop()`` is called (each subclass's ``run`` calls this)."""
        validate_count(concurrency, "concurrency", MAX_CONCURRENCY)
        validate_seconds(poll_interval, "poll_interval", MAX_POLL_SECONDS)
        if self._running:
            raise RuntimeError(f"this {self.consumer_name} is already running")
        self._running = True
        self._stop_requested = False
        self._finished.clear()
        try:
            async with AsyncExitStack() as stack:
                waiter: Waiter | None = None
                if use_notify:
                    waiter = await stack.enter_async_context(
                        self._backend.listen(self.listened_queues())
                    )
                await self._serve(stack, waiter, concurrency, poll_interval)
        finally:
            self._running = False
            self._finished.set()

    def stop(self, timeout: float | None = None) -> Stopping:
        """Stop after the work in progress. Awaiting the result waits up to ``timeout``
        seconds for that work (what happens to work still running then is the subclass's
        ``_on_stop_timeout``); not awaiting it only requests the stop."""
        self._stop_requested = True
        self._wake.set()
        return Stopping(self, timeout)

    async def _wait_stopped(self, timeout: float | None) -> None:
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            await self._on_stop_timeout()

    async def _idle(self, waiter: Waiter | None, poll_interval: float) -> None:
        await wait_for_work(self._wake, waiter, self._clock, poll_interval)
