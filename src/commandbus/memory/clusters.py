"""A topology of in-memory clusters: one ``InMemoryBackend`` per cluster name, each with
its outbox, sharing one clock (``commandbus.clusters.backends.ClusterBackends``)::

    clusters = memory_clusters(Topology({"orders": "memory://a", "billing": "memory://b"}))
    bus = clusters.bus_for("orders")  # sends to billing go to a's outbox
    relays = clusters.relays()        # await relay.relay_once() moves them to b
"""

from __future__ import annotations

from commandbus.clusters.backends import ClusterBackends
from commandbus.clusters.ports import ClusterBackend
from commandbus.clusters.topology import Topology
from commandbus.memory.backend import InMemoryBackend
from commandbus.ports import Clock, SystemClock

__all__ = ["memory_clusters"]


def memory_clusters(topology: Topology, clock: Clock | None = None) -> ClusterBackends:
    """An ``InMemoryBackend`` for every cluster of ``topology`` (its DSNs are only names
    here), on ``clock`` (e.g. a ``VirtualClock``; default: the system clock)."""
    shared = clock if clock is not None else SystemClock()
    backends: dict[str, ClusterBackend] = {
        dsn: InMemoryBackend(shared, topology=topology, cluster=dsn) for dsn in topology.clusters
    }
    return ClusterBackends(topology, backends)
