"""pytest plugin (auto-loaded when commandbus is installed): fixtures for users' tests.

- ``virtual_clock``: a ``VirtualClock`` (time moves only when the test advances it);
- ``commandbus_memory``: an ``InMemoryBackend`` on that clock;
- ``commandbus_postgres``: a ``PostgresBackend`` on a fresh database cloned from a
  template with the schema applied (``DATABASE_URL`` or the embedded server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
def virtual_clock() -> Any:
    from commandbus.testing.clock import VirtualClock

    return VirtualClock()


@pytest.fixture
def commandbus_memory(virtual_clock: Any) -> Any:
    from commandbus.memory import InMemoryBackend

    return InMemoryBackend(clock=virtual_clock)


@pytest.fixture
async def commandbus_postgres() -> AsyncIterator[Any]:
    from commandbus.testing.pg import fresh_backend

    async with fresh_backend() as backend:
        yield backend
