"""From what a user passes to a ``Backend``, without the core importing any adapter.

Public classes (``CommandBus``, ``Worker``, ``TroubleshootingQueue``, ``ProcessReplyRouter``)
accept a ``Backend`` (``PostgresBackend``, ``InMemoryBackend``) or what an adapter knows how
to wrap — a ``psycopg_pool.AsyncConnectionPool`` is the common case. Adapters register
here; ``commandbus.wiring``, the composition root outside the core, registers the
PostgreSQL and memory adapters when ``commandbus`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from commandbus.ports import Backend, Clock

if TYPE_CHECKING:  # a type only: the core never imports the driver or an adapter
    from psycopg_pool import AsyncConnectionPool

#: What the public classes take: a backend, or a psycopg pool (wrapped in a PostgresBackend).
BackendSource: TypeAlias = "Backend | AsyncConnectionPool[Any]"

#: Wraps an object (e.g. a connection pool) in a Backend, or returns None if it cannot.
BackendAdapter = Callable[[object, Clock | None], Backend | None]
MemoryBackendFactory = Callable[[Clock | None], Backend]

_adapters: list[BackendAdapter] = []
_memory_factories: list[MemoryBackendFactory] = []
#: Public names an adapter offers through a core package (e.g. the seed's
#: ``from commandbus.process import PostgresProcessRepository``): name -> a loader that
#: imports the adapter on first use.
_adapter_exports: dict[str, Callable[[], object]] = {}


def register_backend_adapter(adapter: BackendAdapter) -> None:
    """Let ``backend_from`` wrap what ``adapter`` recognises (registering twice is a no-op)."""
    if adapter not in _adapters:
        _adapters.append(adapter)


def register_memory_backend(factory: MemoryBackendFactory) -> None:
    """The factory of ``in_memory_backend`` (the last registered wins)."""
    _memory_factories.append(factory)


def register_adapter_export(name: str, load: Callable[[], object]) -> None:
    """Offer ``name`` (loaded by ``load`` on first use) to ``adapter_export``."""
    _adapter_exports[name] = load


def adapter_export(name: str) -> object | None:
    """The adapter object registered as ``name``, or None. Core packages re-export adapter
    classes the seeds import from them through this, so they never import an adapter."""
    load = _adapter_exports.get(name)
    return None if load is None else load()


def is_backend(obj: object) -> bool:
    return all(hasattr(obj, attr) for attr in ("transaction", "commands", "queue", "listen"))


def backend_from(obj: BackendSource | object, clock: Clock | None = None) -> Backend:
    """``obj`` itself if it is a Backend, else what a registered adapter makes of it."""
    if is_backend(obj):
        backend: Backend = obj  # type: ignore[assignment]  # structural check above
        return backend
    for adapter in _adapters:
        wrapped = adapter(obj, clock)
        if wrapped is not None:
            return wrapped
    raise TypeError(
        "expected a psycopg_pool.AsyncConnectionPool or a commandbus Backend "
        f"(PostgresBackend, InMemoryBackend), got {type(obj).__name__}"
    )


def in_memory_backend(clock: Clock | None = None) -> Backend:
    """A fresh in-memory backend (``CommandBus.in_memory()``)."""
    if not _memory_factories:
        raise RuntimeError("no in-memory backend is registered (import commandbus first)")
    return _memory_factories[-1](clock)
