"""VirtualClock: time moves only when the test moves it; sleepers wake in deadline order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from commandbus.ports import Clock
from commandbus.testing.clock import DEFAULT_START, VirtualClock

START = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def test_implements_the_clock_port_and_starts_where_told() -> None:
    assert isinstance(VirtualClock(), Clock)
    assert VirtualClock().now() == DEFAULT_START
    assert VirtualClock(START).now() == START


def test_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        VirtualClock(datetime(2030, 1, 1))


async def test_sleep_parks_until_the_clock_passes_the_deadline() -> None:
    clock = VirtualClock(START)
    task = asyncio.ensure_future(clock.sleep(10))
    await clock.settle()
    assert clock.pending_sleepers == 1

    await clock.advance(9.5)
    assert not task.done()
    assert clock.now() == START + timedelta(seconds=9.5)

    await clock.advance(0.5)
    assert task.done()
    assert clock.pending_sleepers == 0
    assert clock.now() == START + timedelta(seconds=10)


async def test_sleepers_wake_in_deadline_order_and_see_their_deadline() -> None:
    clock = VirtualClock(START)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, (clock.now() - START).total_seconds()))

    tasks = [
        asyncio.ensure_future(sleeper(name, seconds))
        for name, seconds in (("c", 30), ("a", 10), ("b", 20), ("a2", 10))
    ]
    await clock.settle()
    await clock.advance(25)
    assert woke == [("a", 10.0), ("a2", 10.0), ("b", 20.0)]
    assert clock.now() == START + timedelta(seconds=25)
    await clock.advance_to(START + timedelta(seconds=30))
    assert woke[-1] == ("c", 30.0)
    await asyncio.gather(*tasks)


async def test_a_sleeper_that_sleeps_again_is_woken_again_within_one_advance() -> None:
    clock = VirtualClock(START)
    ticks: list[float] = []

    async def poller() -> None:
        while True:
            await clock.sleep(3)
            ticks.append((clock.now() - START).total_seconds())

    task = asyncio.ensure_future(poller())
    await clock.settle()
    await clock.advance(10)
    assert ticks == [3.0, 6.0, 9.0]
    assert clock.pending_sleepers == 1
    assert clock.next_deadline == START + timedelta(seconds=12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_sleepers == 0
    assert clock.next_deadline is None


async def test_cancelled_sleepers_are_skipped() -> None:
    clock = VirtualClock(START)
    gone = asyncio.ensure_future(clock.sleep(5))
    kept = asyncio.ensure_future(clock.sleep(8))
    await clock.settle()
    gone.cancel()
    await clock.settle()
    assert clock.pending_sleepers == 1
    await clock.advance(10)
    assert gone.cancelled()
    assert kept.done() and not kept.cancelled()


async def test_zero_and_negative_sleeps_return_without_moving_time() -> None:
    clock = VirtualClock(START)
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == START
    assert clock.pending_sleepers == 0


async def test_time_never_moves_backwards() -> None:
    clock = VirtualClock(START)
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance_to(START - timedelta(microseconds=1))
    assert clock.now() == START


async def test_run_until_idle_runs_finite_work_to_the_end() -> None:
    clock = VirtualClock(START)
    done: list[str] = []

    async def job(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
        done.append(name)

    tasks = [asyncio.ensure_future(job("x", 5, 5)), asyncio.ensure_future(job("y", 60))]
    await clock.run_until_idle()
    assert done == ["x", "y"]
    assert clock.now() == START + timedelta(seconds=60)
    await asyncio.gather(*tasks)


async def test_run_until_idle_with_a_limit_stops_an_endless_poller() -> None:
    clock = VirtualClock(START)
    ticks = 0

    async def poller() -> None:
        nonlocal ticks
        while True:
            await clock.sleep(1)
            ticks += 1

    task = asyncio.ensure_future(poller())
    await clock.run_until_idle(max_seconds=30)
    assert ticks == 30
    assert clock.now() == START + timedelta(seconds=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
