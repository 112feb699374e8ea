"""The outbox of an in-memory "cluster": ``OutboxStore`` and the routing command store.

What ``commandbus.postgres.outbox_store`` does with ``commandbus.outbox``,
``commandbus.forwarded`` and ``commandbus.relay_received``, on ``TxTable`` s, so that
several ``InMemoryBackend`` s of one ``Topology`` behave like several PostgreSQL clusters
(``commandbus.memory.clusters``): remote sends go to the outbox in the sender's
transaction, a relay pass locks what it takes (``SKIP LOCKED`` for other relays), and
what a target receives is applied idempotently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from commandbus.clusters.ports import (
    Forwarded,
    OutboxEntry,
    OutboxKind,
    Outgoing,
    OutgoingMessage,
    RelayLag,
)
from commandbus.clusters.routing import outbox_payload, received_request, route_sends
from commandbus.clusters.topology import Topology
from commandbus.errors import DuplicateCommandError
from commandbus.memory.batches import BatchTables
from commandbus.memory.commands import InMemoryCommandStore
from commandbus.memory.queue import InMemoryMessageQueue
from commandbus.memory.rows import TxTable
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.models import SendRequest, SendResult
from commandbus.ports import Conn
from commandbus.process.withdrawal import withdraw_relayed_entries

__all__ = ["InMemoryOutboxStore", "RoutingInMemoryCommandStore"]


@dataclass(frozen=True)
class _Row:
    entry: OutboxEntry
    created_at: datetime
    #: Set when its target refused it (``park``): relays no longer take it.
    error: str | None = None


class InMemoryOutboxStore:
    """``commandbus.clusters.ports.OutboxStore`` in memory."""

    def __init__(
        self, backend: MemoryHost, queue: InMemoryMessageQueue, commands: InMemoryCommandStore
    ) -> None:
        self._backend = backend
        self._queue = queue
        self._commands = commands
        self._rows: TxTable[int, _Row] = TxTable()
        self._forwarded: TxTable[tuple[UUID, str], datetime] = TxTable()
        self._received: TxTable[tuple[UUID, int], datetime] = TxTable()
        self._next_id = 1

    # -- the sender's side ----------------------------------------------------------------

    async def add_commands(
        self, tx: MemoryTransaction, requests: Sequence[SendRequest], default_max_attempts: int
    ) -> list[int]:
        now = self._backend.clock.now()
        duplicates: list[SendRequest] = []
        seen: set[tuple[UUID, str]] = set()
        for r in requests:
            key = (r.command_id, r.domain)
            if key in seen or await self._forwarded.unique(tx, key) is not None:
                duplicates.append(r)
            seen.add(key)
        if duplicates:
            domain = duplicates[0].domain
            raise DuplicateCommandError(
                domain, [r.command_id for r in duplicates if r.domain == domain]
            )
        ids = []
        for r in requests:
            self._forwarded.insert(tx, (r.command_id, r.domain), now)
            payload = json.loads(json.dumps(outbox_payload(r, default_max_attempts)))
            ids.append(self._add(tx, OutboxKind.COMMAND, r.domain, r.command_id, payload))
        return ids

    def _add(
        self,
        tx: MemoryTransaction,
        kind: OutboxKind,
        domain: str,
        command_id: UUID,
        payload: dict[str, object],
    ) -> int:
        row_id = self._next_id
        self._next_id += 1
        entry = OutboxEntry(row_id, kind, domain, command_id, payload)
        self._rows.insert(tx, row_id, _Row(entry, self._backend.clock.now()))
        return row_id

    # -- the relay ----------------------------------------------------------------------

    async def take(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        conn: Conn,
        domains: Sequence[str] | None = None,
    ) -> Outgoing:
        async with self._backend.transaction(conn) as tx:
            entries: list[OutboxEntry] = []
            for _, cell in sorted(self._rows.items()):
                if len(entries) == limit:
                    break
                if cell.held_by_other(tx):
                    continue  # another relay (or a withdrawal) holds it
                seen = cell.seen_by(tx)
                if seen is None or seen.error is not None:
                    continue  # gone, or parked: its target refused it
                if domains is not None and seen.entry.target_domain not in domains:
                    continue
                row = await cell.lock(tx)
                if row is not None:
                    entries.append(row.entry)
            picked = [p for queue in queues for p in self._queue.pick(tx, queue, limit)]
            picked.sort(key=lambda p: p[1].msg_id)
            messages = []
            for message_cell, msg in picked[:limit]:
                await message_cell.lock(tx)
                messages.append(OutgoingMessage(msg.msg_id, msg.queue, msg.decode()))
            return Outgoing(tuple(entries), tuple(messages))

    async def drop(self, outgoing: Outgoing, *, conn: Conn) -> int:
        dropped = 0
        async with self._backend.transaction(conn) as tx:
            for entry in outgoing.entries:
                cell = self._rows.cell(entry.id)
                if cell is not None and await cell.lock(tx) is not None:
                    self._rows.delete(tx, cell)
                    dropped += 1
            for message in outgoing.messages:
                taken = await self._queue.take(tx, message.queue, message.msg_id)
                if taken is not None:
                    self._queue.remove(tx, *taken)
                    dropped += 1
        return dropped

    async def receive(self, outgoing: Outgoing, *, conn: Conn) -> int:
        received = 0
        async with self._backend.transaction(conn) as tx:
            requests = [
                received_request(e.payload)
                for e in outgoing.entries
                if e.kind is OutboxKind.COMMAND
            ]
            received += await self._commands.receive(tx, requests)
            now = self._backend.clock.now()
            for message in outgoing.messages:
                key = message.relay_key
                if await self._received.unique(tx, key) is not None:
                    continue  # relayed before (a relay died before its source committed)
                self._received.insert(tx, key, now)
                await self._queue.enqueue(message.queue, [message.message], conn=tx)
                received += 1
            received += await withdraw_relayed_entries(
                self._commands, self._queue, outgoing.entries, conn=tx
            )
        return received

    async def park(self, entry_id: int, error: str) -> bool:
        async with self._backend.transaction() as tx:
            found = await self._rows.locked(tx, entry_id)
            if found is None:
                return False
            cell, row = found
            cell.write(tx, replace(row, error=error))
            return True

    async def lag(self) -> RelayLag:
        async with self._backend.transaction() as tx:
            rows = self._rows.seen_by(tx)
        waiting = [r for r in rows if r.error is None]
        parked = len(rows) - len(waiting)
        if not waiting:
            return RelayLag(0, 0.0, parked)
        oldest = min(r.created_at for r in waiting)
        age = (self._backend.clock.now() - oldest).total_seconds()
        return RelayLag(len(waiting), max(age, 0.0), parked)

    async def prune(self, before: datetime) -> int:
        pruned = 0
        async with self._backend.transaction() as tx:
            waiting = {r.entry.command_id for r in self._rows.seen_by(tx)}
            for table, keep in ((self._received, set()), (self._forwarded, waiting)):
                for key, cell in list(table.items()):
                    at = cell.seen_by(tx)
                    if at is None or at >= before or key[0] in keep:
                        continue
                    if await cell.lock(tx) is not None:
                        table.delete(tx, cell)
                        pruned += 1
        return pruned

    # -- withdrawals ----------------------------------------------------------------------

    async def lock_forwarded(self, command_id: UUID, *, conn: Conn) -> Forwarded | None:
        async with self._backend.transaction(conn) as tx:
            domains = [
                key[1]
                for key, cell in self._forwarded.items()
                if key[0] == command_id and cell.seen_by(tx) is not None
            ]
            if not domains:
                return None
            domain = domains[-1]
            for _, cell in sorted(self._rows.items()):
                row = cell.seen_by(tx)
                if row is None or row.entry.command_id != command_id:
                    continue
                if row.entry.kind is not OutboxKind.COMMAND or row.entry.target_domain != domain:
                    continue
                # Waits for a relay holding it; once that relay committed, it is gone.
                if await cell.lock(tx) is not None:
                    return Forwarded(command_id, domain, pending=True)
            return Forwarded(command_id, domain, pending=False)

    async def withdraw_forwarded(
        self, forwarded: Forwarded, process_id: UUID, reason: str, *, conn: Conn
    ) -> bool:
        async with self._backend.transaction(conn) as tx:
            if forwarded.pending:
                for _, cell in list(self._rows.items()):
                    row = cell.seen_by(tx)
                    if (
                        row is not None
                        and row.entry.command_id == forwarded.command_id
                        and row.entry.kind is OutboxKind.COMMAND
                        and await cell.lock(tx) is not None
                    ):
                        self._rows.delete(tx, cell)
                return True
            payload: dict[str, object] = {"process_id": str(process_id), "reason": reason}
            self._add(tx, OutboxKind.WITHDRAW, forwarded.domain, forwarded.command_id, payload)
            return False


class RoutingInMemoryCommandStore(InMemoryCommandStore):
    """The command store of the in-memory cluster ``dsn`` of ``topology``: sends to other
    clusters' domains go to its outbox, in the same transaction."""

    def __init__(
        self,
        backend: MemoryHost,
        queue: InMemoryMessageQueue,
        batches: BatchTables,
        topology: Topology,
        dsn: str,
    ) -> None:
        super().__init__(backend, queue, batches)
        self.topology = topology
        self.dsn = dsn
        self.outbox: InMemoryOutboxStore | None = None  # set by the backend that wires it

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Conn | None = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        if prepare is not None:  # routed (or delayed) by what the requests really are
            requests = [prepare(r) for r in requests]
        routed = route_sends(self.topology, self.dsn, requests)
        if not routed.remote:
            return await super().insert(requests, default_max_attempts, conn=conn)
        assert self.outbox is not None
        async with self._backend.transaction(conn) as tx:
            sent = (
                await super().insert(routed.local, default_max_attempts, conn=tx)
                if routed.local
                else []
            )
            ids = await self.outbox.add_commands(tx, routed.remote, default_max_attempts)
        return routed.results(requests, sent, ids)
