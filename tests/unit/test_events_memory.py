"""The event store contract against the in-memory backend."""

from __future__ import annotations

from typing import Any

import pytest

from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock
from commandbus.testing.contracts.events import EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    async def backend(self) -> InMemoryBackend:
        return InMemoryBackend(clock=VirtualClock())

    async def advance(self, backend: Any, seconds: float) -> None:
        await backend.clock.advance(seconds)
