"""The one place that knows the adapters: turn what a user passes into a ``Backend``.

Public classes (``CommandBus``, ``Worker``, ``TroubleshootingQueue``, ``ProcessReplyRouter``)
accept either a ``psycopg_pool.AsyncConnectionPool`` — the common case — or any ``Backend``
(e.g. ``commandbus.memory.InMemoryBackend``). Adapters are imported lazily here so that the
core never depends on them.
"""

from __future__ import annotations

from typing import Any

from commandbus.ports import Backend, Clock


def is_backend(obj: object) -> bool:
    return all(hasattr(obj, attr) for attr in ("transaction", "commands", "queue", "listen"))


def backend_from(obj: Any, clock: Clock | None = None) -> Backend:
    """Return ``obj`` if it is a Backend; wrap a psycopg ``AsyncConnectionPool``."""
    if is_backend(obj):
        backend: Backend = obj
        return backend
    from psycopg_pool import AsyncConnectionPool

    if isinstance(obj, AsyncConnectionPool):
        from commandbus.postgres import PostgresBackend

        return PostgresBackend(obj) if clock is None else PostgresBackend(obj, clock=clock)
    raise TypeError(
        "expected a psycopg_pool.AsyncConnectionPool or a commandbus Backend "
        f"(PostgresBackend, InMemoryBackend), got {type(obj).__name__}"
    )


def in_memory_backend(clock: Clock | None = None) -> Backend:
    from commandbus.memory import InMemoryBackend

    return InMemoryBackend(clock=clock)
