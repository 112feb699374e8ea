"""Process manager behaviour on the in-memory backend (virtual clock, no sleeps)."""

from __future__ import annotations

import pytest

from commandbus.memory import InMemoryBackend
from commandbus.ports import Backend
from commandbus.testing.clock import VirtualClock
from commandbus.testing.process_behaviour import ProcessBehaviourContract


class TestProcessBehaviourInMemory(ProcessBehaviourContract):
    @pytest.fixture
    async def backend(self) -> InMemoryBackend:
        return InMemoryBackend(clock=VirtualClock())

    async def advance(self, backend: Backend, seconds: float) -> None:
        assert isinstance(backend.clock, VirtualClock)
        await backend.clock.advance(seconds)
