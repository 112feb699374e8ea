"""The port of a cluster's outbox (``OutboxStore``) and the values that cross it.

A backend that can be one cluster of a ``Topology`` has an ``outbox``: its sends to
domains of other clusters are written there in the sender's transaction (by its command
store), and ``commandbus.clusters.relay.OutboxRelay`` moves them, with the replies waiting
on its queues of other clusters' domains, to their cluster. Both adapters implement it
(``commandbus.postgres``, ``commandbus.memory``); ``commandbus.testing.contracts.clusters``
is its contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable
from uuid import UUID

from commandbus.clusters.topology import Topology
from commandbus.models import JsonObject
from commandbus.ports import Backend, Conn

__all__ = [
    "ClusterBackend",
    "Forwarded",
    "OutboxEntry",
    "OutboxKind",
    "OutboxStore",
    "Outgoing",
    "OutgoingMessage",
    "RelayLag",
    "RoutesSends",
]


class OutboxKind(StrEnum):
    """What an outbox row asks of the target cluster."""

    #: Insert the command (idempotent: its ``(command_id, domain)`` is the key).
    COMMAND = "COMMAND"
    #: Withdraw the command if it has not started (idempotent: a second one finds it
    #: canceled); its cluster answers the command's ``reply_to`` with CANCELED.
    WITHDRAW = "WITHDRAW"


@dataclass(frozen=True)
class OutboxEntry:
    """A row of a cluster's outbox. ``payload`` is the send request as JSON (domain,
    command_type, command_id, data, correlation_id, reply_to, max_attempts, delay,
    headers) for a COMMAND, ``{process_id, reason}`` for a WITHDRAW."""

    id: int
    kind: OutboxKind
    target_domain: str
    command_id: UUID
    payload: JsonObject


@dataclass(frozen=True)
class OutgoingMessage:
    """A message on this cluster's queue of another cluster's domain (a reply to it)."""

    msg_id: int
    queue: str
    message: JsonObject

    @property
    def domain(self) -> str:
        return self.queue.split("__", 1)[0]

    @property
    def relay_key(self) -> tuple[UUID, int]:
        """What the target records to receive it once: the command the reply answers
        (ids are unique across clusters, and a command lives on one cluster) and the
        message's id on its source (unique there). A message without a command id gets
        the nil UUID."""
        raw = self.message.get("command_id")
        try:
            command_id = UUID(str(raw)) if raw is not None else UUID(int=0)
        except ValueError:
            command_id = UUID(int=0)
        return command_id, self.msg_id


@dataclass(frozen=True)
class Outgoing:
    """What one relay pass took from its source, locked until the pass ends."""

    entries: tuple[OutboxEntry, ...] = ()
    messages: tuple[OutgoingMessage, ...] = ()

    def __len__(self) -> int:
        return len(self.entries) + len(self.messages)

    def domains(self) -> set[str]:
        return {e.target_domain for e in self.entries} | {m.domain for m in self.messages}

    def for_domains(self, domains: set[str]) -> Outgoing:
        """The part of it addressed to ``domains``."""
        return Outgoing(
            tuple(e for e in self.entries if e.target_domain in domains),
            tuple(m for m in self.messages if m.domain in domains),
        )


@dataclass(frozen=True)
class RelayLag:
    """How far behind a cluster's outbox is: rows waiting, the oldest one's age, and the
    rows parked because their cluster refused them (not counted in ``pending``)."""

    pending: int
    oldest_seconds: float
    parked: int = 0


@dataclass(frozen=True)
class Forwarded:
    """A command this cluster sent to another cluster's domain. ``pending``: still in
    this cluster's outbox (its row is locked by the caller's transaction, so no relay
    takes it meanwhile); otherwise it has been relayed and lives on its cluster."""

    command_id: UUID
    domain: str
    pending: bool


class OutboxStore(Protocol):
    """A cluster's outbox (source side) and what it receives from others (target side).

    Every method with ``conn`` runs in that open transaction of the same backend."""

    async def take(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        conn: Conn,
        domains: Sequence[str] | None = None,
    ) -> Outgoing:
        """Up to ``limit`` outbox rows (only those for ``domains``, when given) and up to
        ``limit`` visible messages of ``queues``, oldest first, locked until ``conn``
        ends, skipping those another transaction holds (several relays share the
        work)."""
        ...

    async def drop(self, outgoing: Outgoing, *, conn: Conn) -> int:
        """Delete what ``take`` returned, once every target committed it."""
        ...

    async def receive(self, outgoing: Outgoing, *, conn: Conn) -> int:
        """On the target: apply what a relay brings, idempotently, and return how much of
        it was new. A command is inserted unless its ``(command_id, domain)`` exists (then
        nothing: no message, no audit event); a withdrawal cancels a command that has not
        started (PENDING or in the troubleshooting queue) with a WITHDRAWN audit event and
        a CANCELED reply to its ``reply_to``, and does nothing otherwise; a message is
        enqueued unless its ``relay_key`` was received before."""
        ...

    async def park(self, entry_id: int, error: str) -> bool:
        """Park the outbox row ``entry_id`` (its target refused it) with ``error``, in a
        transaction of its own: relays no longer take it. False if it is gone."""
        ...

    async def lag(self) -> RelayLag:
        """Rows waiting in the outbox and the age of the oldest one."""
        ...

    async def prune(self, before: datetime) -> int:
        """Forget the relay keys of messages received before ``before`` (a relay can only
        bring a message again while its source still has it: shortly after, unless the
        source was unreachable in between) and the forwarded commands sent before it (a
        withdrawal no longer finds them); returns how many rows were forgotten."""
        ...

    async def lock_forwarded(self, command_id: UUID, *, conn: Conn) -> Forwarded | None:
        """The command if this cluster forwarded it (its outbox row, if still there,
        locked until ``conn`` ends); None otherwise."""
        ...

    async def withdraw_forwarded(
        self, forwarded: Forwarded, process_id: UUID, reason: str, *, conn: Conn
    ) -> bool:
        """Withdraw a forwarded command. Still pending: its outbox row is deleted, it
        never reaches its cluster (True). Relayed: a WITHDRAW row is added to the outbox
        for its cluster, which cancels it there if it has not started (False: whether it
        had is known only there; its reply says so)."""
        ...


class ClusterBackend(Backend, Protocol):
    """A ``Backend`` that can be a cluster of a topology: it has an outbox."""

    outbox: OutboxStore


@runtime_checkable
class RoutesSends(Protocol):
    """A command store that is one cluster of a topology (it routes remote sends to its
    outbox): ``CommandBus`` asks it to refuse a batch of another cluster's domain before
    it touches the batch."""

    topology: Topology
    dsn: str
