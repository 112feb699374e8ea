"""The backend contract suite against PostgreSQL (a fresh cloned database per test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from commandbus.postgres import PostgresBackend
from commandbus.testing.contracts import BackendContract


class TestPostgresBackendContract(BackendContract):
    @pytest.fixture
    async def backend(self, pg_backend: PostgresBackend) -> PostgresBackend:
        return pg_backend

    async def advance(self, backend: Any, seconds: float) -> None:
        # The database keeps time with its own clock: instead of moving it, move every
        # visibility deadline back, which is what the passing of time means to a queue.
        assert isinstance(backend, PostgresBackend)
        async with backend.pool.connection() as conn:
            await conn.execute(
                "UPDATE commandbus.queue_message SET vt = vt - make_interval(secs => %s)",
                (float(seconds),),
            )

    async def let_others_run(self) -> None:
        # Other transactions run on other connections: give them real time to block.
        await asyncio.sleep(0.3)
