"""The seeded simulation of event-driven processes (``tests/event_simulation.py``) on
PostgreSQL, for a few seeds."""

from __future__ import annotations

import pytest
from tests.event_simulation import simulate

from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import make_due


@pytest.mark.parametrize("seed", range(3))
async def test_invariants_hold(pg_backend: PostgresBackend, seed: int) -> None:
    async def advance(seconds: float) -> None:
        await make_due(pg_backend, seconds)  # the database keeps its own time

    report = await simulate(pg_backend, seed, advance=advance)
    assert report.problems == [], report
    assert report.events > 30 and report.processes > 0
