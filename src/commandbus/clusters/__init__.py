"""Domains on separate PostgreSQL clusters (see ``docs/scaling.md``).

- ``Topology`` (``clusters.topology``): which cluster holds which domain;
- ``clusters.ports``: the outbox port (``OutboxStore``) both adapters implement;
- ``clusters.relay.OutboxRelay``: carries commands, withdrawals and replies between them;
- ``clusters.backends``: ``ClusterBackends`` (a backend per cluster, from
  ``commandbus.postgres.clusters.connect_clusters`` or
  ``commandbus.memory.clusters.memory_clusters``) and ``ClusterBus``.
"""

from commandbus.clusters.topology import Topology

__all__ = ["Topology"]
