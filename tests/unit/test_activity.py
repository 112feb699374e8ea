"""commandbus.activity: percentiles as PostgreSQL's percentile_cont, a minute series with
its gaps filled, and the in-memory backend's figures on a virtual clock (exact values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from commandbus import CommandBus, HandlerRegistry, PermanentCommandError, RetryPolicy, Worker
from commandbus.activity import CommandActivity, Durations, MinuteActivity, percentile
from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([2.0, 4.0, 10.0], 0.95) == pytest.approx(9.4)
    assert Durations.of([]) is None
    assert Durations.of([3.0, 1.0, 2.0]) == Durations(3, 2.0, pytest.approx(2.9), 3.0)


def test_a_series_has_every_minute_of_the_window() -> None:
    busy = MinuteActivity(T0 + timedelta(minutes=2), 5, 1, Durations.of([1.0]))
    activity = CommandActivity(T0, 4, {"payments": {2: busy}})
    assert activity.series("payments") == [
        MinuteActivity(T0),
        MinuteActivity(T0 + timedelta(minutes=1)),
        busy,
        MinuteActivity(T0 + timedelta(minutes=3)),
    ]
    assert [m.completed for m in activity.series("elsewhere")] == [0, 0, 0, 0]


async def test_the_memory_backend_counts_per_minute_and_times_each_command() -> None:
    clock = VirtualClock(T0)
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
    registry = HandlerRegistry()

    @registry.handler("payments", "Debit")
    async def debit(command: object, context: object) -> None:
        if getattr(command, "data", {}).get("fail"):
            raise PermanentCommandError("NO", "refused")

    worker = Worker(backend, "payments", registry)
    await clock.advance(30)
    for _ in range(2):
        await bus.send("payments", "Debit", uuid4(), {})
    await clock.advance(10)
    await worker.drain()  # both done at 0:40, 10 s after they were sent
    await bus.send("payments", "Debit", uuid4(), {})
    await bus.send("payments", "Debit", uuid4(), {"fail": True})
    await clock.advance(75)
    await worker.drain()  # at 1:55: one done 75 s after, one in the TSQ
    found = await backend.commands.activity(T0, minutes=3)
    series = found.series("payments")
    assert [(m.completed, m.failed) for m in series] == [(2, 0), (1, 1), (0, 0)]
    assert series[0].latency == Durations(2, 10.0, 10.0, 10.0)
    assert series[1].latency == Durations(1, 75.0, 75.0, 75.0)
    assert (found.scanned, found.truncated, found.covered_from) == (4, False, T0)
    # Commands count in the window they were sent in: from 0:40 on, only the last two.
    later = await backend.commands.activity(T0 + timedelta(seconds=40), minutes=2)
    assert [(m.completed, m.failed) for m in later.series("payments")] == [(0, 0), (1, 1)]
    assert later.scanned == 2
    # Shorter than the wait: the minute they ended in is past the window.
    assert sum(m.completed for m in (await backend.commands.activity(T0, minutes=1)).series(
        "payments")) == 2  # fmt: skip
