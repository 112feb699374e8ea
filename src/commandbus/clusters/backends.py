"""A topology's backends, one per cluster, and a bus that sends each domain's commands to
its cluster.

``ClusterBackends`` is what ``commandbus.postgres.clusters.connect_clusters(topology)``
(a pool per DSN) and ``commandbus.memory.clusters.memory_clusters(topology)`` return:
``backend_for(domain)`` is the backend to give a ``Worker``, a ``ProcessReplyRouter``, a
``TroubleshootingQueue`` or a ``CommandBus`` of that domain; ``relays()`` the relays to
run, ``lag()`` how far behind each outbox is.

``ClusterBus`` sends like ``CommandBus`` but to the right cluster: a send on its own goes
straight to the cluster of its domain (one transaction there); a send inside a caller's
transaction (``conn``) goes to the outbox of that transaction's cluster, named by
``home`` (a domain of it), when its domain lives elsewhere: it commits with the caller's
writes and is relayed exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any
from uuid import UUID

from commandbus.bus import CommandBus
from commandbus.clusters.ports import ClusterBackend, RelayLag
from commandbus.clusters.relay import OutboxRelay
from commandbus.clusters.topology import Topology
from commandbus.errors import ValidationError
from commandbus.models import (
    AuditEvent,
    CommandMetadata,
    JsonObject,
    ReceivedReply,
    SendRequest,
    SendResult,
)
from commandbus.ports import Conn

__all__ = ["ClusterBackends", "ClusterBus"]


class ClusterBackends:
    """The backend of every cluster of ``topology`` (``backends``: DSN -> backend).
    ``close`` (when given) runs on ``close()``: the pools an opener made."""

    def __init__(
        self,
        topology: Topology,
        backends: Mapping[str, ClusterBackend],
        *,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        missing = [dsn for dsn in topology.clusters if dsn not in backends]
        if missing:
            raise ValidationError(f"no backend for {len(missing)} cluster(s) of the topology")
        self.topology = topology
        self.backends: dict[str, ClusterBackend] = dict(backends)
        self._close = close

    def backend_for(self, domain: str) -> ClusterBackend:
        """The backend of the cluster holding ``domain`` (``ValidationError`` for a
        domain the topology does not name)."""
        return self.backends[self.topology.dsn_of(domain)]

    def bus_for(self, domain: str, **options: Any) -> CommandBus:
        """A ``CommandBus`` on the cluster of ``domain`` (its sends to other clusters'
        domains go through that cluster's outbox); ``options`` go to ``CommandBus``."""
        return CommandBus(self.backend_for(domain), **options)

    def relay(self, dsn: str, **options: Any) -> OutboxRelay:
        """The relay of the cluster at ``dsn``; ``options`` go to ``OutboxRelay``."""
        return OutboxRelay(self.topology, dsn, self.backends, **options)

    def relays(self, **options: Any) -> list[OutboxRelay]:
        """One relay per cluster (run them anywhere, as many copies as you like)."""
        return [self.relay(dsn, **options) for dsn in self.topology.clusters]

    async def lag(self) -> dict[str, RelayLag]:
        """Each cluster's outbox lag, by DSN."""
        return {dsn: await self.backends[dsn].outbox.lag() for dsn in self.topology.clusters}

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
        if self._close is not None:
            await self._close()

    async def __aenter__(self) -> ClusterBackends:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ClusterBus:
    """``CommandBus`` over a topology: each command goes to the cluster of its domain
    (see the module doc). ``options`` go to every cluster's ``CommandBus``."""

    def __init__(self, clusters: ClusterBackends, **options: Any) -> None:
        self.clusters = clusters
        self._buses = {
            dsn: CommandBus(backend, **options) for dsn, backend in clusters.backends.items()
        }

    def bus_for(self, domain: str) -> CommandBus:
        """The bus of the cluster holding ``domain``."""
        return self._buses[self.clusters.topology.dsn_of(domain)]

    def _sender(self, domain: str, conn: Conn | None, home: str | None) -> CommandBus:
        if conn is None:
            return self.bus_for(home if home is not None else domain)
        if home is None:
            raise ValidationError(
                "a send in your transaction (conn) needs home=<a domain of that "
                "connection's cluster>: a command for another cluster goes to its outbox"
            )
        return self.bus_for(home)

    async def send(
        self,
        domain: str,
        command_type: str,
        command_id: UUID | str | None = None,
        data: JsonObject | None = None,
        correlation_id: UUID | str | None = None,
        reply_to: str | None = None,
        max_attempts: int | None = None,
        delay: float | None = None,
        conn: Conn | None = None,
        batch_id: UUID | str | None = None,
        *,
        home: str | None = None,
    ) -> SendResult:
        """``CommandBus.send`` on the right cluster. Without ``conn``: on the cluster of
        ``domain`` (or of ``home``, through its outbox). With ``conn``: in that
        transaction, on the cluster of ``home`` (required then)."""
        return await self._sender(domain, conn, home).send(
            domain,
            command_type,
            command_id=command_id,
            data=data,
            correlation_id=correlation_id,
            reply_to=reply_to,
            max_attempts=max_attempts,
            delay=delay,
            conn=conn,
            batch_id=batch_id,
        )

    async def send_batch(
        self,
        requests: Iterable[SendRequest],
        conn: Conn | None = None,
        *,
        home: str | None = None,
    ) -> list[SendResult]:
        """Send many commands atomically: in one transaction on the cluster of ``home``
        (default: the first request's domain), the others through its outbox."""
        requests = list(requests)  # read once: a generator of requests works too
        if not requests:
            return []
        sender = self._sender(requests[0].domain, conn, home)
        return await sender.send_batch(requests, conn=conn)

    async def get_command(self, domain: str, command_id: UUID | str) -> CommandMetadata | None:
        return await self.bus_for(domain).get_command(domain, command_id)

    async def get_audit_trail(self, command_id: UUID | str, domain: str) -> list[AuditEvent]:
        return await self.bus_for(domain).get_audit_trail(command_id, domain)

    async def read_replies(
        self, queue: str, limit: int = 10, visibility_timeout: float = 30
    ) -> list[ReceivedReply]:
        """Replies on ``queue``, read on the cluster of the queue's domain."""
        return await self._queue_bus(queue).read_replies(queue, limit, visibility_timeout)

    async def ack_reply(self, queue: str, msg_id: int) -> bool:
        return await self._queue_bus(queue).ack_reply(queue, msg_id)

    def _queue_bus(self, queue: str) -> CommandBus:
        return self.bus_for(queue.split("__", 1)[0])
