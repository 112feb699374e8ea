"""The event store contract against PostgreSQL (a fresh cloned database per test)."""

from __future__ import annotations

from typing import Any

import pytest

from commandbus.postgres import PostgresBackend
from commandbus.testing.contracts.events import EventStoreContract


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    async def backend(self, pg_backend: PostgresBackend) -> PostgresBackend:
        return pg_backend

    async def advance(self, backend: Any, seconds: float) -> None:
        raise NotImplementedError("the event store contract does not move time")
