"""The backend contract suite against PostgreSQL (a fresh cloned database per test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from commandbus.postgres import PostgresBackend
from commandbus.testing.contracts import BackendContract
from commandbus.testing.pg import make_due


class TestPostgresBackendContract(BackendContract):
    @pytest.fixture
    async def backend(self, pg_backend: PostgresBackend) -> PostgresBackend:
        return pg_backend

    async def advance(self, backend: Any, seconds: float) -> None:
        # The database keeps time with its own clock: instead of moving it, move every
        # visibility deadline back, which is what the passing of time means to a queue.
        assert isinstance(backend, PostgresBackend)
        await make_due(backend, seconds)

    async def let_others_run(self) -> None:
        # Other transactions run on other connections: give them real time to block.
        await asyncio.sleep(0.3)
