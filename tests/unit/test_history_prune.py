"""Retention outside the database: durations, validation, and ``prune_history`` on the
in-memory backend (the contract suite covers ``prune_finished`` on both backends)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.cli.history import describe_duration, parse_duration
from commandbus.errors import ValidationError
from commandbus.memory import InMemoryBackend
from commandbus.models import Command, PrunedHistory
from commandbus.ops.history import prune_history
from commandbus.testing.clock import VirtualClock

DAY = 24 * 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        (" 90m ", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_durations_are_described_in_their_largest_unit() -> None:
    described = [describe_duration(parse_duration(t)) for t in ("30d", "14d", "1h", "90m", "61s")]
    assert described == ["30 days", "2 weeks", "1 hour", "90 minutes", "61 seconds"]


@pytest.mark.parametrize(
    "text", ["", "30", "d", "1.5d", "-1d", "0h", "3 days", "1y", "9" * 30 + "d"]
)
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


async def test_prune_history_validates_before_touching_anything() -> None:
    backend = InMemoryBackend(clock=VirtualClock())
    for bad, match in [
        ({"older_than": timedelta(0)}, "positive"),
        ({"older_than": timedelta(days=-1)}, "positive"),
        ({"older_than": 30}, "positive"),
        ({"older_than": timedelta(days=1), "domain": "Bad Domain"}, "invalid domain"),
        ({"older_than": timedelta(days=1), "batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ValidationError, match=match):
            await prune_history(backend, **bad)


async def test_prune_history_keeps_what_finished_recently() -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend)
    registry = HandlerRegistry()

    @registry.handler("billing", "Charge")
    async def charge(command: Command, ctx: Any) -> None:
        return None

    worker = Worker(backend, "billing", registry)
    old, recent = uuid4(), uuid4()
    await bus.send("billing", "Charge", old, {"n": 1})
    assert await worker.drain() == 1
    await clock.advance(20 * DAY)
    await bus.send("billing", "Charge", recent, {"n": 2})
    assert await worker.drain() == 1
    await clock.advance(15 * DAY)

    seen: list[PrunedHistory] = []
    pruned = await prune_history(backend, timedelta(days=30), on_batch=seen.append)

    assert pruned == PrunedHistory(commands=1, audit_events=3, archived_messages=0)
    assert seen == [pruned]
    assert await bus.get_command("billing", old) is None
    assert await bus.get_command("billing", recent) is not None
