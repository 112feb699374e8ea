"""The process repository contract against the in-memory adapter."""

from __future__ import annotations

import pytest

from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock
from commandbus.testing.process_contracts import ProcessRepositoryContract


class TestInMemoryProcessRepository(ProcessRepositoryContract):
    @pytest.fixture
    async def backend(self) -> InMemoryBackend:
        return InMemoryBackend(clock=VirtualClock())
