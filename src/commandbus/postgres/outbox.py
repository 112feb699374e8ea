"""Commands between clusters on PostgreSQL: the routing command store and the relay.

``RoutingCommandStore`` is the command store of one cluster of a ``Topology``: a send to
a domain of this cluster is written as always; a send to a domain of another cluster is
written to this cluster's ``commandbus.outbox`` instead, in the same transaction (so a
process's decision to send it commits, or not, with the process row), and recorded in
``commandbus.forwarded`` (a second send of the same command id is a
``DuplicateCommandError``, as on one cluster).

``OutboxRelay(topology, dsn, pools)`` is ``commandbus.clusters.relay.OutboxRelay`` on a
pool per cluster: see there for what a pass does and why it is safe to crash, restart
and run several times over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.clusters.ports import ClusterBackend, RelayLag
from commandbus.clusters.relay import DEFAULT_REPLY_SUFFIXES
from commandbus.clusters.relay import OutboxRelay as _Relay
from commandbus.clusters.routing import outbox_payload, route_sends
from commandbus.clusters.topology import Topology
from commandbus.errors import DuplicateCommandError
from commandbus.models import SendRequest, SendResult
from commandbus.postgres.backend import PostgresBackend
from commandbus.postgres.commands import PostgresCommandStore
from commandbus.postgres.connections import transaction_conn
from commandbus.postgres.outbox_store import PostgresOutboxStore
from commandbus.postgres.queue import PostgresMessageQueue, dumps
from commandbus.postgres.sending import repeated_ids

__all__ = ["OutboxRelay", "RelayLag", "RoutingCommandStore", "cluster_backend"]


class RoutingCommandStore(PostgresCommandStore):
    """The command store of the cluster at ``dsn`` in ``topology`` (see the module doc)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        topology: Topology,
        dsn: str,
        outbox: PostgresOutboxStore | None = None,
    ) -> None:
        super().__init__(pool)
        self.topology = topology
        self.dsn = dsn
        self._outbox = (
            outbox
            if outbox is not None
            else PostgresOutboxStore(pool, self, PostgresMessageQueue(pool))
        )

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Any | None = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        if prepare is not None:  # routed (or delayed) by what the requests really are
            requests = [prepare(r) for r in requests]
        routed = route_sends(self.topology, self.dsn, requests)
        if not routed.remote:
            return await super().insert(requests, default_max_attempts, conn=conn)
        repeated = repeated_ids(requests)
        if repeated is not None:
            raise DuplicateCommandError(*repeated)
        payloads = [dumps(outbox_payload(r, default_max_attempts)) for r in routed.remote]
        async with transaction_conn(self._pool, conn) as c:
            sent = (
                await super().insert(routed.local, default_max_attempts, conn=c)
                if routed.local
                else []
            )
            outbox_ids = await self._outbox.add_commands(routed.remote, payloads, conn=c)
        return routed.results(requests, sent, outbox_ids)


def cluster_backend(
    pool: AsyncConnectionPool[Any], topology: Topology, dsn: str
) -> PostgresBackend:
    """A ``PostgresBackend`` of the cluster at ``dsn`` whose sends to other clusters'
    domains go to its outbox (give it to ``CommandBus``, workers, routers, the TSQ)."""
    backend = PostgresBackend(pool)
    backend.commands = RoutingCommandStore(pool, topology, dsn, backend.postgres_outbox)
    return backend


class OutboxRelay(_Relay):
    """``commandbus.clusters.relay.OutboxRelay`` on an open pool per cluster DSN."""

    def __init__(
        self,
        topology: Topology,
        dsn: str,
        pools: Mapping[str, AsyncConnectionPool[Any]],
        *,
        batch_size: int = 200,
        reply_suffixes: Sequence[str] = DEFAULT_REPLY_SUFFIXES,
    ) -> None:
        backends: dict[str, ClusterBackend] = {
            at: cluster_backend(pool, topology, at) for at, pool in pools.items()
        }
        super().__init__(
            topology, dsn, backends, batch_size=batch_size, reply_suffixes=reply_suffixes
        )
        self.pools = pools
