"""Process manager behaviour on PostgreSQL (a fresh cloned database per test)."""

from __future__ import annotations

import asyncio

import pytest

from commandbus.ports import Backend
from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import make_due
from commandbus.testing.process_behaviour import ProcessBehaviourContract


class TestProcessBehaviourPostgres(ProcessBehaviourContract):
    @pytest.fixture
    async def backend(self, pg_backend: PostgresBackend) -> PostgresBackend:
        return pg_backend

    async def advance(self, backend: Backend, seconds: float) -> None:
        # The database keeps its own time: move every visibility deadline back instead.
        assert isinstance(backend, PostgresBackend)
        await make_due(backend, seconds)

    async def let_others_run(self) -> None:
        await asyncio.sleep(0.3)
