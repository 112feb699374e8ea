"""Commands between clusters: the outbox of the sending cluster and the relay.

``RoutingCommandStore`` is the command store of one cluster of a ``Topology``: a send to
a domain of this cluster is written as always; a send to a domain of another cluster is
written to this cluster's ``commandbus.outbox`` instead, in the same transaction (so a
process's decision to send it commits, or not, with the process row).

``OutboxRelay`` moves what waits on one cluster to the others, in two transactions:
it locks a batch of outbox rows (and of messages on this cluster's queues of other
clusters' domains — the replies to their processes) with ``SKIP LOCKED``, inserts them on
their target cluster and commits there, then deletes them here and commits. A relay that
dies between the two commits leaves the rows in place and the next pass relays them again:
a command is inserted with its id as the key (``ON CONFLICT DO NOTHING``: it exists once),
and a reply delivered twice is a duplicate, which the process router records as ignored.
Several relays may run at once (each locks rows the others skip); any may be killed and
started again. ``lag()`` says how far behind the outbox is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.clusters.topology import Topology
from commandbus.errors import DatabaseUnavailableError, ValidationError
from commandbus.models import SendRequest, SendResult
from commandbus.postgres.backend import PostgresBackend
from commandbus.postgres.commands import PostgresCommandStore
from commandbus.postgres.connections import transaction_conn, translate_errors
from commandbus.postgres.queries import Queries
from commandbus.postgres.queue import dumps

__all__ = ["OutboxRelay", "RelayLag", "RoutingCommandStore", "cluster_backend"]

logger = logging.getLogger("commandbus.relay")

Q = Queries("outbox_queries.sql")
COMMANDS = Queries()


def _payload(request: SendRequest, default_max_attempts: int) -> str:
    return dumps(
        {
            "domain": request.domain,
            "command_type": request.command_type,
            "command_id": str(request.command_id),
            "data": request.data,
            "correlation_id": str(request.correlation_id) if request.correlation_id else None,
            "reply_to": request.reply_to,
            "max_attempts": request.max_attempts or default_max_attempts,
            "delay": request.delay or 0.0,
            "headers": request.headers,
        }
    )


class RoutingCommandStore(PostgresCommandStore):
    """The command store of the cluster at ``dsn`` in ``topology`` (see the module doc)."""

    def __init__(self, pool: AsyncConnectionPool[Any], topology: Topology, dsn: str) -> None:
        super().__init__(pool)
        self.topology = topology
        self.dsn = dsn

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Any | None = None,
    ) -> list[SendResult]:
        remote = [r for r in requests if self.topology.is_remote(r.domain, self.dsn)]
        if not remote:
            return await super().insert(requests, default_max_attempts, conn=conn)
        if any(r.batch_id is not None for r in remote):
            raise ValidationError("a batch's commands live on its cluster: batch_id is local")
        local = [r for r in requests if not self.topology.is_remote(r.domain, self.dsn)]
        params = {
            "domains": [r.domain for r in remote],
            "command_ids": [r.command_id for r in remote],
            "payloads": [_payload(r, default_max_attempts) for r in remote],
        }
        async with transaction_conn(self._pool, conn) as c:
            sent = await super().insert(local, default_max_attempts, conn=c) if local else []
            cur = await c.execute(Q.add_to_outbox, params)
            row = await cur.fetchone()
        # A remote command has no queue message here: its msg_id is its outbox row's id.
        by_id = {s.command_id: s for s in sent}
        outbox_ids = iter(row[0] if row is not None else [])
        results = []
        for r in requests:
            if self.topology.is_remote(r.domain, self.dsn):
                results.append(SendResult(command_id=r.command_id, msg_id=next(outbox_ids)))
            else:
                results.append(by_id[r.command_id])
        return results


def cluster_backend(
    pool: AsyncConnectionPool[Any], topology: Topology, dsn: str
) -> PostgresBackend:
    """A ``PostgresBackend`` of the cluster at ``dsn`` whose sends to other clusters'
    domains go to its outbox (give it to ``CommandBus``, workers, routers, the TSQ)."""
    backend = PostgresBackend(pool)
    backend.commands = RoutingCommandStore(pool, topology, dsn)
    return backend


@dataclass(frozen=True)
class RelayLag:
    """How far behind a cluster's outbox is: rows waiting, and the oldest one's age."""

    pending: int
    oldest_seconds: float


class OutboxRelay:
    """Relays the outbox (and outgoing replies) of the cluster at ``dsn`` to the others
    of ``topology``. ``pools`` holds an open pool per cluster DSN."""

    def __init__(
        self,
        topology: Topology,
        dsn: str,
        pools: dict[str, AsyncConnectionPool[Any]],
        *,
        batch_size: int = 200,
        reply_suffixes: Sequence[str] = ("process_replies", "replies"),
    ) -> None:
        self.topology = topology
        self.dsn = dsn
        self.pools = pools
        self.batch_size = batch_size
        #: Queues of other clusters' domains whose messages are relayed to them.
        self.outgoing_queues = sorted(
            f"{d}__{suffix}" for d in topology.remote_domains(dsn) for suffix in reply_suffixes
        )
        self.relayed = 0
        self._stop = asyncio.Event()

    async def relay_once(self) -> int:
        """Relay one batch; returns how many rows and messages were relayed."""
        source = self.pools[self.dsn]
        with translate_errors():
            async with source.connection() as src, src.transaction():
                cur = await src.execute(Q.take_outbox, {"limit": self.batch_size})
                rows = await cur.fetchall()
                cur = await src.execute(
                    Q.take_outgoing_messages,
                    {"queues": self.outgoing_queues, "limit": self.batch_size},
                )
                messages = await cur.fetchall()
                if not rows and not messages:
                    return 0
                await self._deliver(rows, messages)
                # Only once every target committed: a crash before this line relays the
                # same rows again, which the targets absorb (see the module doc).
                await src.execute(
                    Q.drop_relayed,
                    {"ids": [r[0] for r in rows], "msg_ids": [m[0] for m in messages]},
                )
        self.relayed += len(rows) + len(messages)
        return len(rows) + len(messages)

    async def _deliver(self, rows: list[Any], messages: list[Any]) -> None:
        by_target: dict[str, tuple[list[Any], list[Any]]] = {}
        for row in rows:
            by_target.setdefault(self.topology.dsn_of(row[1]), ([], []))[0].append(row[3])
        for msg in messages:
            domain = msg[1].split("__", 1)[0]
            by_target.setdefault(self.topology.dsn_of(domain), ([], []))[1].append(msg)
        for dsn, (commands, replies) in by_target.items():
            async with self.pools[dsn].connection() as dst, dst.transaction():
                if commands:
                    await dst.execute(Q.receive_commands, _receive_params(commands))
                for queue in sorted({m[1] for m in replies}):
                    batch = [dumps(m[2]) for m in replies if m[1] == queue]
                    await dst.execute(
                        COMMANDS.enqueue, {"queue": queue, "messages": batch, "delay": 0.0}
                    )

    async def lag(self) -> RelayLag:
        async with self.pools[self.dsn].connection() as conn:
            cur = await conn.execute(Q.outbox_lag)
            row = await cur.fetchone()
        assert row is not None
        pending, oldest, now = row
        age = (now - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
        return RelayLag(int(pending), max(age, 0.0))

    async def run(self, poll_interval: float = 0.2) -> None:
        """Relay until ``stop()``; an unreachable cluster is retried after a pause."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                moved = await self.relay_once()
            except DatabaseUnavailableError as exc:
                logger.warning("relay from %s paused: %s", self.dsn, exc)
                moved = 0
            if moved == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll_interval)

    def stop(self) -> None:
        self._stop.set()


def _receive_params(payloads: list[Any]) -> dict[str, Any]:
    return {
        "domains": [p["domain"] for p in payloads],
        "command_ids": [p["command_id"] for p in payloads],
        "command_types": [p["command_type"] for p in payloads],
        "data": [dumps(p["data"]) for p in payloads],
        "correlation_ids": [p["correlation_id"] for p in payloads],
        "reply_tos": [p["reply_to"] for p in payloads],
        "max_attempts": [int(p["max_attempts"]) for p in payloads],
        "delays": [float(p["delay"]) for p in payloads],
        "headers": [None if p["headers"] is None else dumps(p["headers"]) for p in payloads],
    }
