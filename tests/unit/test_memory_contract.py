"""The backend contract suite against the in-memory backend on a virtual clock."""

from __future__ import annotations

from typing import Any

import pytest

from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock
from commandbus.testing.contracts import BackendContract


class TestInMemoryBackendContract(BackendContract):
    @pytest.fixture
    async def backend(self) -> InMemoryBackend:
        return InMemoryBackend(clock=VirtualClock())

    async def advance(self, backend: Any, seconds: float) -> None:
        assert isinstance(backend.clock, VirtualClock)
        await backend.clock.advance(seconds)
