"""Batches in memory: the rows of ``commandbus.batch`` and the ``BatchStore`` port.

``BatchTables`` is the table and what the SQL does to it (create, grow, close, count
members' status changes); the command store and the process repository call
``count_changes`` in the transaction that changes a member's status, as the PostgreSQL
statements call ``count_batch_changes``. The counting rules are the pure functions of
``commandbus.batches.counting``. Rows are ``TxCell`` s, so concurrent transactions see
PostgreSQL's visibility and row locks (``commandbus.memory.rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from commandbus.batches.counting import Counts, recount
from commandbus.batches.models import (
    BatchKind,
    BatchMetadata,
    BatchNotice,
    BatchQuery,
    BatchStatus,
    NewBatch,
)
from commandbus.batches.ports import MemberChange
from commandbus.errors import DuplicateBatchError
from commandbus.memory.command_tables import encode
from commandbus.memory.queue import InMemoryMessageQueue
from commandbus.memory.rows import TxCell, TxTable
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.ports import Conn

__all__ = ["BatchChange", "BatchRow", "BatchTables", "InMemoryBatchStore"]

#: A member of batch ``(domain, batch_id)`` that went from one status to another.
BatchChange = MemberChange


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One version of a batch row (replaced, never changed, as every in-memory row)."""

    domain: str
    batch_id: UUID
    kind: BatchKind
    name: str | None
    reply_to: str | None
    counts: Counts
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None

    def metadata(self) -> BatchMetadata:
        c = self.counts
        return BatchMetadata(
            domain=self.domain,
            batch_id=self.batch_id,
            kind=self.kind,
            name=self.name,
            status=c.status,
            is_open=c.is_open,
            reply_to=self.reply_to,
            total=c.total,
            completed=c.completed,
            failed=c.failed,
            canceled=c.canceled,
            in_troubleshooting=c.in_troubleshooting,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
        )

    def notice(self) -> BatchNotice:
        c = self.counts
        return BatchNotice(
            batch_id=self.batch_id,
            domain=self.domain,
            kind=self.kind,
            name=self.name,
            status=c.status,
            total=c.total,
            completed=c.completed,
            failed=c.failed,
            canceled=c.canceled,
            in_troubleshooting=c.in_troubleshooting,
        )


class BatchTables:
    """The batch rows and the writes the SQL makes to them (in an open transaction)."""

    def __init__(self, backend: MemoryHost, queue: InMemoryMessageQueue) -> None:
        self._backend = backend
        self._queue = queue
        self._rows: dict[str, TxTable[UUID, BatchRow]] = {}

    def _table(self, domain: str) -> TxTable[UUID, BatchRow]:
        table = self._rows.get(domain)
        if table is None:
            table = self._rows[domain] = TxTable()
        return table

    async def insert(self, tx: MemoryTransaction, batch: NewBatch) -> None:
        table = self._table(batch.domain)
        # Like the primary key: a concurrent insert of the same key is waited for.
        if await table.unique(tx, batch.batch_id) is not None:
            raise DuplicateBatchError(batch.domain, batch.batch_id)
        now = self._backend.clock.now()
        counts = Counts(status=BatchStatus.PENDING, is_open=batch.is_open, total=batch.total)
        row = BatchRow(
            batch.domain, batch.batch_id, batch.kind, batch.name, batch.reply_to, counts, now, now
        )
        table.insert(tx, batch.batch_id, row)

    def get(self, tx: MemoryTransaction, domain: str, batch_id: UUID) -> BatchRow | None:
        table = self._rows.get(domain)
        return table.get(tx, batch_id) if table is not None else None

    async def _locked(
        self, tx: MemoryTransaction, domain: str, batch_id: UUID
    ) -> tuple[TxCell[BatchRow], BatchRow] | None:
        """The batch's cell and row, held for ``tx``; None if it does not exist."""
        table = self._rows.get(domain)
        return await table.locked(tx, batch_id) if table is not None else None

    def rows_seen_by(self, tx: MemoryTransaction, domain: str | None) -> list[BatchRow]:
        tables = [self._rows.get(domain)] if domain is not None else list(self._rows.values())
        return [row for table in tables if table is not None for row in table.seen_by(tx)]

    async def add(
        self, tx: MemoryTransaction, domain: str, batch_id: UUID, kind: BatchKind, count: int
    ) -> bool:
        found = await self._locked(tx, domain, batch_id)
        if found is None:
            return False
        cell, row = found
        if not row.counts.is_open or row.kind is not kind:
            return False
        counts = replace(row.counts, total=row.counts.total + count)
        cell.write(tx, replace(row, counts=counts, updated_at=self._backend.clock.now()))
        return True

    async def close(self, tx: MemoryTransaction, domain: str, batch_id: UUID) -> BatchRow | None:
        found = await self._locked(tx, domain, batch_id)
        if found is None:
            return None
        cell, row = found
        if row.counts.is_open:
            closed = replace(row.counts, is_open=False)
            cell.write(tx, replace(row, counts=closed, updated_at=self._backend.clock.now()))
            await self.count_changes(tx, [(domain, batch_id, None, None)])
        return cell.seen_by(tx)

    async def count_changes(self, tx: MemoryTransaction, changes: Iterable[BatchChange]) -> int:
        """Move batch members between counters, finish the batches that are done and
        write their completion notice; returns how many batches this finished. Batch rows
        are locked in key order, like ``count_batch_changes``."""
        moves: dict[tuple[UUID, str], list[tuple[str | None, str | None]]] = {}
        for domain, batch_id, before, after in changes:
            moves.setdefault((batch_id, domain), []).append((before, after))
        finished = 0
        for batch_id, domain in sorted(moves):
            found = await self._locked(tx, domain, batch_id)
            if found is None:
                continue
            cell, row = found
            counts = recount(row.counts, moves[(batch_id, domain)])
            now = self._backend.clock.now()
            finishing = counts.status.is_finished and not row.counts.status.is_finished
            new = replace(
                row,
                counts=counts,
                updated_at=now,
                completed_at=now if finishing else row.completed_at,
            )
            cell.write(tx, new)
            if finishing:
                finished += 1
                if new.reply_to is not None:
                    self._queue.put(tx, new.reply_to, encode(new.notice().to_message()))
        return finished

    def start(self, tx: MemoryTransaction, domain: str, batch_ids: Sequence[UUID]) -> None:
        """PENDING batches become IN_PROGRESS (a member was claimed); a batch another
        transaction holds is skipped, as the claim's ``SKIP LOCKED`` does."""
        table = self._rows.get(domain)
        if table is None:
            return
        for batch_id in sorted(set(batch_ids)):
            cell = table.cell(batch_id)
            if cell is None or cell.held_by_other(tx):
                continue
            row = cell.seen_by(tx)
            if row is None or row.counts.status is not BatchStatus.PENDING:
                continue
            counts = replace(row.counts, status=BatchStatus.IN_PROGRESS)
            cell.write(tx, replace(row, counts=counts, updated_at=self._backend.clock.now()))


class InMemoryBatchStore:
    """``BatchStore`` in memory; see ``commandbus.batches.ports.BatchStore``."""

    def __init__(self, backend: MemoryHost, tables: BatchTables) -> None:
        self._backend = backend
        self._tables = tables

    async def create(self, batch: NewBatch, *, conn: Conn) -> None:
        async with self._backend.transaction(conn) as tx:
            await self._tables.insert(tx, batch)

    async def add_members(
        self, domain: str, batch_id: UUID, kind: BatchKind, count: int, *, conn: Conn
    ) -> bool:
        async with self._backend.transaction(conn) as tx:
            return await self._tables.add(tx, domain, batch_id, kind, count)

    async def close(
        self, domain: str, batch_id: UUID, *, conn: Conn | None = None
    ) -> BatchMetadata | None:
        async with self._backend.transaction(conn) as tx:
            row = await self._tables.close(tx, domain, batch_id)
            return row.metadata() if row is not None else None

    async def count_changes(self, changes: Sequence[BatchChange], *, conn: Conn) -> int:
        async with self._backend.transaction(conn) as tx:
            return await self._tables.count_changes(tx, changes)

    async def get(
        self, domain: str, batch_id: UUID, *, conn: Conn | None = None
    ) -> BatchMetadata | None:
        async with self._backend.transaction(conn) as tx:
            row = self._tables.get(tx, domain, batch_id)
            return row.metadata() if row is not None else None

    async def query(self, query: BatchQuery, *, conn: Conn | None = None) -> list[BatchMetadata]:
        async with self._backend.transaction(conn) as tx:
            rows = [
                row
                for row in self._tables.rows_seen_by(tx, query.domain)
                if (query.status is None or row.counts.status is query.status)
                and (query.kind is None or row.kind is query.kind)
            ]
            rows.sort(key=lambda r: (r.created_at, r.batch_id), reverse=True)
            start = max(query.offset, 0)
            return [row.metadata() for row in rows[start : start + max(query.limit, 0)]]
