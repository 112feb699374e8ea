"""A virtual clock for deterministic tests and simulations.

``VirtualClock`` implements ``commandbus.ports.Clock``. Time only moves when a test moves
it: ``sleep()`` parks the caller until ``advance()``/``advance_to()`` carries the clock past
its deadline, so a test of retries with a 300 s backoff runs in microseconds and always
takes the same path.

Sleepers wake in deadline order (ties in the order they went to sleep). While waking them,
the clock stands at each sleeper's deadline and yields to the event loop so the woken task
runs (and may go back to sleep, e.g. a polling loop) before time moves on.

    clock = VirtualClock()
    task = asyncio.create_task(worker.run())
    await clock.advance(30)       # 30 virtual seconds; due sleepers ran
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import UTC, datetime, timedelta

__all__ = ["DEFAULT_START", "VirtualClock"]

#: Where a ``VirtualClock`` starts when no start is given.
DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


class VirtualClock:
    """A ``Clock`` whose time moves only when told to.

    ``yields_per_wake`` is how many times the clock yields to the event loop after waking
    a sleeper (and after the final move): enough for the woken task to run its next step
    through a few awaits that do not block (in-memory backend calls, locks that are free).
    """

    def __init__(self, start: datetime | None = None, *, yields_per_wake: int = 20) -> None:
        if start is None:
            start = DEFAULT_START
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start (e.g. tzinfo=UTC)")
        if yields_per_wake < 1:
            raise ValueError("yields_per_wake must be at least 1")
        self._now = start
        self._yields = yields_per_wake
        self._seq = 0
        # (deadline, sequence, future); cancelled futures stay until popped.
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    @property
    def pending_sleepers(self) -> int:
        """How many ``sleep()`` calls are parked (cancelled ones not counted)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest deadline of a parked sleeper, or None when nobody sleeps."""
        self._drop_done()
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        """Park until the clock reaches ``now + seconds``; ``seconds <= 0`` only yields."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), self._seq, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking due sleepers in deadline order."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards ({seconds} s)")
        await self.advance_to(self._now + timedelta(seconds=seconds))

    async def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when``, waking due sleepers in deadline order.

        A sleeper that goes back to sleep with a deadline still within ``when`` is woken
        again during the same call.
        """
        if when < self._now:
            raise ValueError(f"cannot move a clock backwards (from {self._now} to {when})")
        while True:
            self._drop_done()
            if not self._sleepers or self._sleepers[0][0] > when:
                break
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await self._yield()
        self._now = when
        await self._yield()

    async def run_until_idle(self, max_seconds: float | None = None) -> None:
        """Advance from deadline to deadline until nobody sleeps (or ``max_seconds`` passed).

        Useful when the tasks under test eventually finish; with a poller that sleeps
        forever in a loop, give ``max_seconds``.
        """
        limit = None if max_seconds is None else self._now + timedelta(seconds=max_seconds)
        await self._yield()
        while True:
            deadline = self.next_deadline
            if deadline is None or (limit is not None and deadline > limit):
                break
            await self.advance_to(deadline)
        if limit is not None:
            await self.advance_to(limit)

    async def settle(self) -> None:
        """Yield to the event loop without moving time, so ready tasks run."""
        await self._yield()

    def _drop_done(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def _yield(self) -> None:
        for _ in range(self._yields):
            await asyncio.sleep(0)
