"""The composition root: the one place that knows the adapters.

It registers them with ``commandbus.backends`` when ``commandbus`` is imported, so that
the core (``CommandBus(pool)``, ``Worker(pool, …)``, ``CommandBus.in_memory()``) can take a
pool or build a memory backend without importing ``postgres/`` or ``memory/``. Adapters
are imported lazily, on first use.
"""

from __future__ import annotations

from commandbus.backends import (
    register_adapter_export,
    register_backend_adapter,
    register_memory_backend,
)
from commandbus.ports import Backend, Clock


def postgres_backend_for(obj: object, clock: Clock | None) -> Backend | None:
    """A ``PostgresBackend`` around a ``psycopg_pool.AsyncConnectionPool``; None otherwise."""
    try:
        from psycopg_pool import AsyncConnectionPool
    except ImportError:  # pragma: no cover - psycopg_pool is a dependency
        return None
    if not isinstance(obj, AsyncConnectionPool):
        return None
    from commandbus.postgres import PostgresBackend

    return PostgresBackend(obj) if clock is None else PostgresBackend(obj, clock=clock)


def memory_backend(clock: Clock | None) -> Backend:
    from commandbus.memory import InMemoryBackend

    return InMemoryBackend(clock=clock)


def postgres_process_repository() -> object:
    from commandbus.postgres.process_repository import PostgresProcessRepository

    return PostgresProcessRepository


register_backend_adapter(postgres_backend_for)
# The seed's ``from commandbus.process import PostgresProcessRepository``.
register_adapter_export("PostgresProcessRepository", postgres_process_repository)
register_memory_backend(memory_backend)
