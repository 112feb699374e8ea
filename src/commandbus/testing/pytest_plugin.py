"""pytest plugin (auto-loaded when commandbus is installed): fixtures for users' tests.

The fixtures are async-friendly: use pytest-asyncio with ``asyncio_mode = "auto"``
(docs/testing.md, "The pytest plugin").

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
    """A ``VirtualClock``: time moves only when the test advances it
    (``await virtual_clock.advance(seconds)``); sleeping on it returns at once."""
    from commandbus.testing.clock import VirtualClock

    return VirtualClock()


@pytest.fixture
def commandbus_memory(virtual_clock: Any) -> Any:
    """An ``InMemoryBackend`` on ``virtual_clock``: pass it wherever a pool or a backend is
    taken (``CommandBus(commandbus_memory)``, ``Worker(commandbus_memory, …)``)."""
    from commandbus.memory import InMemoryBackend

    return InMemoryBackend(clock=virtual_clock)


@pytest.fixture
async def commandbus_postgres() -> AsyncIterator[Any]:
    """A ``PostgresBackend`` on a fresh database with the schema applied, cloned from a
    template on ``DATABASE_URL``'s server (or the embedded one) and dropped afterwards."""
    from commandbus.testing.pg import fresh_backend

    async with fresh_backend() as backend:
        yield backend
