"""The seeded simulation of event-driven processes (``tests/event_simulation.py``) in
memory, over many seeds: duplicates, out-of-order events, racing consumers, failures,
late replies; every invariant holds."""

from __future__ import annotations

import pytest
from tests.event_simulation import simulate

from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock


@pytest.mark.parametrize("seed", range(25))
async def test_invariants_hold(seed: int) -> None:
    report = await simulate(InMemoryBackend(clock=VirtualClock()), seed)
    assert report.problems == [], report
    assert report.events > 30 and report.processes > 0
