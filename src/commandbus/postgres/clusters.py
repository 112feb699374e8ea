"""Open a topology of PostgreSQL clusters: a pool and a routing backend per DSN.

clusters = await connect_clusters(Topology({"orders": A, "billing": B}))
worker = Worker(clusters.backend_for("billing"), "billing", registry)
...
await clusters.close()  # closes the pools it opened
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.clusters.backends import ClusterBackends
from commandbus.clusters.ports import ClusterBackend
from commandbus.clusters.topology import Topology
from commandbus.postgres.connections import probe_connection, translate_errors
from commandbus.postgres.outbox import cluster_backend

__all__ = ["connect_clusters"]


async def connect_clusters(
    topology: Topology,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    **pool_kwargs: Any,
) -> ClusterBackends:
    """A pool on every cluster DSN of ``topology`` (each tried first, so a cluster that
    is down fails at once with ``DatabaseUnavailableError`` naming why) and its routing
    backend (``cluster_backend``). ``close()`` closes the pools."""
    pools: dict[str, AsyncConnectionPool[Any]] = {}

    async def close() -> None:
        for pool in pools.values():
            await pool.close()

    try:
        for dsn in topology.clusters:
            await probe_connection(dsn, connect_timeout)
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                dsn, min_size=min_size, max_size=max_size, open=False, **pool_kwargs
            )
            pools[dsn] = pool
            with translate_errors():
                await pool.open(wait=True, timeout=connect_timeout)
    except BaseException:
        await close()
        raise
    backends: dict[str, ClusterBackend] = {
        dsn: cluster_backend(pool, topology, dsn) for dsn, pool in pools.items()
    }
    return ClusterBackends(topology, backends, close=close)
