"""The process repository contract against PostgreSQL (a fresh cloned database per test)."""

from __future__ import annotations

import asyncio

import pytest

from commandbus.postgres import PostgresBackend
from commandbus.testing.process_contracts import ProcessRepositoryContract


class TestPostgresProcessRepository(ProcessRepositoryContract):
    @pytest.fixture
    async def backend(self, pg_backend: PostgresBackend) -> PostgresBackend:
        return pg_backend

    async def let_others_run(self) -> None:
        await asyncio.sleep(0.3)
