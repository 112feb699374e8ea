"""The seeded simulation of event-driven processes (``tests/event_simulation.py``) on
PostgreSQL, for a few seeds."""

from __future__ import annotations

import pytest
from tests.event_simulation import simulate

from commandbus.postgres import PostgresBackend


@pytest.mark.parametrize("seed", range(3))
async def test_invariants_hold(pg_backend: PostgresBackend, seed: int) -> None:
    async def advance(seconds: float) -> None:
        # The database keeps its own time: make delayed messages (timers) due instead.
        async with pg_backend.pool.connection() as conn:
            await conn.execute(
                "UPDATE commandbus.queue_message SET vt = vt - make_interval(secs => %s)",
                (float(seconds),),
            )

    report = await simulate(pg_backend, seed, advance=advance)
    assert report.problems == [], report
    assert report.events > 30 and report.processes > 0
