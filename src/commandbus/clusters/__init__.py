"""Domains on separate PostgreSQL clusters: which cluster holds which domain
(``Topology``), and the outbox that carries commands and replies between them
(``commandbus.postgres.outbox``). See ``docs/scaling.md``."""

from commandbus.clusters.topology import Topology

__all__ = ["Topology"]
