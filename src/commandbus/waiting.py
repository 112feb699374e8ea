"""Idle waiting shared by the consumers (``Worker``, ``ProcessReplyRouter``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from commandbus.ports import Clock, Waiter


async def wait_for_work(
    wake: asyncio.Event, waiter: Waiter | None, clock: Clock, poll_interval: float
) -> None:
    """Return on a notification (``waiter``), after ``poll_interval`` seconds on ``clock``,
    or when ``wake`` is set (stop requested) — whichever comes first.

    The poll timer runs even with notifications: they are hints, and delayed messages
    (retries, timers) become visible without one.
    """
    wake.clear()
    sleeper: asyncio.Task[Any] = asyncio.create_task(
        waiter.wait(poll_interval) if waiter else clock.sleep(poll_interval)
    )
    stopper = asyncio.create_task(wake.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
        for task in (sleeper, stopper):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
