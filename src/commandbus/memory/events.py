"""The event store ports in memory, with the PostgreSQL adapter's visibility rules.

Rows are ``TxCell``s (``commandbus.memory.rows``): a stream's head in a ``TxTable`` (its
row lock serialises appends to one stream), events in one ``TxLog`` per stream, event ids
in a ``TxTable`` (the unique key). Like PostgreSQL, each transaction that appends gets a
transaction number when it first does, and readers of all streams see only events of
transactions numbered below the oldest one still open (``pg_snapshot_xmin``), in
``(transaction, position)`` order: a reader never passes an event whose transaction is
still open. Data is stored as JSON text and decoded on every read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import count
from uuid import UUID

from commandbus.errors import DuplicateEventError, WrongExpectedVersionError
from commandbus.events.models import (
    AppendResult,
    Checkpoint,
    ParkedEvent,
    RecordedEvent,
    SubscriptionInfo,
    stream_category,
)
from commandbus.events.ports import (
    EVENTS_CHANNEL,
    EncodedEvent,
    EventFilter,
    FoldedEvent,
    StreamAppend,
    Taken,
    look_ahead,
)
from commandbus.memory.rows import TxCell, TxLog, TxTable
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.models import JsonObject
from commandbus.ports import Conn

__all__ = ["InMemoryEventStorage", "InMemorySubscriptionStorage"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    stream: str
    category: str
    version: int
    position: int
    transaction_id: int
    event_id: UUID
    event_type: str
    data: str
    metadata: str
    correlation_id: UUID | None
    causation_id: UUID | None
    recorded_at: datetime

    def matches(self, where: EventFilter) -> bool:
        return (where.categories is None or self.category in where.categories) and (
            where.event_types is None or self.event_type in where.event_types
        )

    def recorded(self) -> RecordedEvent:
        return RecordedEvent(
            stream=self.stream,
            version=self.version,
            position=self.position,
            transaction_id=self.transaction_id,
            event_id=self.event_id,
            event_type=self.event_type,
            data=json.loads(self.data),
            metadata=json.loads(self.metadata),
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            recorded_at=self.recorded_at,
        )


class InMemoryEventStorage:
    def __init__(self, backend: MemoryHost) -> None:
        self._backend = backend
        self._heads: TxTable[str, int] = TxTable()
        self._streams: dict[str, TxLog[StoredEvent]] = {}
        self._ids: TxTable[UUID, int] = TxTable()
        #: Every event cell in position order (a rolled-back one reads as None).
        self._all: list[TxCell[StoredEvent]] = []
        self._positions = count(1)
        self._transaction_numbers = count(1)
        self._numbers: dict[MemoryTransaction, int] = {}
        self._snapshots: TxTable[str, tuple[int, str]] = TxTable()

    # -- transaction numbers -----------------------------------------------------------

    def _number_of(self, tx: MemoryTransaction) -> int:
        root = tx.root
        number = self._numbers.get(root)
        if number is None:
            number = self._numbers[root] = next(self._transaction_numbers)

            def forget() -> None:
                self._numbers.pop(root, None)

            root.on_commit(forget)
            root.record_undo(forget)
        return number

    def horizon(self) -> float:
        """Events of transactions numbered below this are final (no open transaction)."""
        return min(self._numbers.values(), default=float("inf"))

    # -- the port ----------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[EncodedEvent],
        expected_version: int | None,
        *,
        conn: Conn | None = None,
    ) -> AppendResult:
        async with self._backend.transaction(conn) as tx:
            head = await self._heads.unique(tx, stream)
            version = 0 if head is None else await head.lock(tx)
            assert version is not None
            if expected_version is not None and version != expected_version:
                raise WrongExpectedVersionError(stream, expected_version, version)
            stored = [e.event_id for e in events if await self._ids.unique(tx, e.event_id)]
            if stored:
                raise DuplicateEventError(stored)
            # No await from here on: the checks above still hold when the rows go in.
            if head is None:
                self._heads.insert(tx, stream, version + len(events))
            else:
                head.write(tx, version + len(events))
            log = self._streams.setdefault(stream, TxLog())
            number = self._number_of(tx)
            now = self._backend.clock.now()
            positions = []
            for offset, event in enumerate(events, start=1):
                position = next(self._positions)
                row = StoredEvent(
                    stream=stream,
                    category=stream_category(stream),
                    version=version + offset,
                    position=position,
                    transaction_id=number,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    data=event.data,
                    metadata=event.metadata,
                    correlation_id=event.correlation_id,
                    causation_id=event.causation_id,
                    recorded_at=now,
                )
                self._all.append(log.append(tx, row))
                self._ids.insert(tx, event.event_id, position)
                positions.append(position)
            tx.notify(EVENTS_CHANNEL)
            return AppendResult(stream=stream, version=version + len(events), positions=positions)

    async def read_stream(
        self, stream: str, from_version: int, limit: int, *, conn: Conn | None = None
    ) -> list[RecordedEvent]:
        async with self._backend.transaction(conn) as tx:
            log = self._streams.get(stream)
            rows = [] if log is None else log.seen_by(tx)
            return [r.recorded() for r in rows if r.version >= from_version][:limit]

    async def read_all(
        self, after: Checkpoint, limit: int, where: EventFilter, *, conn: Conn | None = None
    ) -> list[RecordedEvent]:
        async with self._backend.transaction(conn) as tx:
            return [r.recorded() for r in self.final_after(tx, after, limit, where)]

    def final_after(
        self, tx: MemoryTransaction, after: Checkpoint, limit: int, where: EventFilter
    ) -> list[StoredEvent]:
        """``read_all``'s rows: final events after ``after`` in ``(transaction, position)``
        order."""
        return [row for row in self._final_rows(tx, after) if row.matches(where)][:limit]

    def window_after(
        self, tx: MemoryTransaction, after: Checkpoint, limit: int, where: EventFilter
    ) -> tuple[list[StoredEvent], Checkpoint | None]:
        """A subscription's look: the wanted rows among the next ``look_ahead`` final
        events after ``after`` (up to ``limit``), and the last of those events."""
        window = self._final_rows(tx, after)[: look_ahead(limit, where)]
        end = Checkpoint(window[-1].transaction_id, window[-1].position) if window else None
        return [row for row in window if row.matches(where)][:limit], end

    def _final_rows(self, tx: MemoryTransaction, after: Checkpoint) -> list[StoredEvent]:
        horizon = self.horizon()
        key = (after.transaction_id, after.position)
        self._all = [c for c in self._all if c.value is not None or c.holder is not None]
        rows = [
            row
            for cell in self._all
            if (row := cell.seen_by(tx)) is not None
            and row.transaction_id < horizon
            and (row.transaction_id, row.position) > key
        ]
        rows.sort(key=lambda r: (r.transaction_id, r.position))
        return rows

    async def count_after(
        self, after: Checkpoint, where: EventFilter, *, conn: Conn | None = None
    ) -> int:
        async with self._backend.transaction(conn) as tx:
            return self.count_seen_after(tx, after, where)

    def count_seen_after(self, tx: MemoryTransaction, after: Checkpoint, where: EventFilter) -> int:
        key = (after.transaction_id, after.position)
        return sum(
            1
            for cell in self._all
            if (row := cell.seen_by(tx)) is not None
            and (row.transaction_id, row.position) > key
            and row.matches(where)
        )

    def stored(self, tx: MemoryTransaction, position: int) -> StoredEvent | None:
        for cell in self._all:
            row = cell.seen_by(tx)
            if row is not None and row.position == position:
                return row
        return None

    async def stream_version(self, stream: str, *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            return self._heads.get(tx, stream) or 0

    async def get_snapshot(
        self, stream: str, *, conn: Conn | None = None
    ) -> tuple[int, JsonObject] | None:
        async with self._backend.transaction(conn) as tx:
            found = self._snapshots.get(tx, stream)
            return None if found is None else (found[0], json.loads(found[1]))

    async def _load_stream(
        self, stream: str, limit: int, *, conn: Conn | None = None
    ) -> tuple[tuple[int, JsonObject] | None, list[FoldedEvent]]:
        async with self._backend.transaction(conn) as tx:
            snapshot = await self.get_snapshot(stream, conn=tx)
            after = 0 if snapshot is None else snapshot[0]
            events = await self.read_stream(stream, after + 1, limit, conn=tx)
            return snapshot, [
                FoldedEvent(e.version, e.event_id, e.event_type, e.data) for e in events
            ]

    async def load_streams(
        self, streams: Sequence[str], limit: int, *, conn: Conn | None = None
    ) -> dict[str, tuple[tuple[int, JsonObject] | None, list[FoldedEvent]]]:
        async with self._backend.transaction(conn) as tx:
            return {s: await self._load_stream(s, limit, conn=tx) for s in dict.fromkeys(streams)}

    async def stored_event_ids(
        self, event_ids: Sequence[UUID], *, conn: Conn | None = None
    ) -> set[UUID]:
        async with self._backend.transaction(conn) as tx:
            return {e for e in event_ids if await self._ids.unique(tx, e) is not None}

    async def append_many(self, appends: Sequence[StreamAppend], *, conn: Conn) -> None:
        async with self._backend.transaction(conn) as tx:
            for a in appends:
                await self.append(a.stream, a.events, a.expected_version, conn=tx)

    async def put_snapshot(
        self, stream: str, version: int, state: str, *, conn: Conn | None = None
    ) -> None:
        async with self._backend.transaction(conn) as tx:
            cell = await self._snapshots.unique(tx, stream)
            if cell is None:
                self._snapshots.insert(tx, stream, (version, state))
                return
            current = await cell.lock(tx)
            if current is not None and current[0] < version:
                cell.write(tx, (version, state))


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    name: str
    checkpoint: Checkpoint
    where: EventFilter
    handled: int
    failing_position: int | None
    failures: int
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ParkedRow:
    position: int
    attempts: int
    error: str
    parked_at: datetime


class InMemorySubscriptionStorage:
    def __init__(self, backend: MemoryHost, events: InMemoryEventStorage) -> None:
        self._backend = backend
        self._events = events
        self._rows: TxTable[str, SubscriptionRow] = TxTable()
        self._parked: dict[str, TxTable[int, ParkedRow]] = {}

    async def ensure(self, name: str, where: EventFilter, *, conn: Conn | None = None) -> None:
        async with self._backend.transaction(conn) as tx:
            cell = await self._rows.unique(tx, name)
            now = self._backend.clock.now()
            if cell is None:
                row = SubscriptionRow(name, Checkpoint(), where, 0, None, 0, None, now)
                self._rows.insert(tx, name, row)

    async def take(self, name: str, limit: int, where: EventFilter, *, conn: Conn) -> Taken | None:
        async with self._backend.transaction(conn) as tx:
            cell = self._rows.cell(name)
            if cell is None or cell.held_by_other(tx):
                return None
            row = await cell.lock(tx)
            if row is None:
                return None
            rows, window_end = self._events.window_after(tx, row.checkpoint, limit, where)
            events = [r.recorded() for r in rows]
            return Taken.of_window(row.checkpoint, events, window_end, limit)

    async def advance(
        self,
        name: str,
        handled: Sequence[RecordedEvent],
        where: EventFilter,
        *,
        conn: Conn,
        to: Checkpoint | None = None,
    ) -> None:
        async with self._backend.transaction(conn) as tx:
            found = await self._rows.locked(tx, name)
            if found is not None:
                cell, row = found
                cleared = row.failing_position in {e.position for e in handled}
                cell.write(
                    tx,
                    replace(
                        row,
                        checkpoint=handled[-1].checkpoint if to is None else to,
                        where=where,
                        handled=row.handled + len(handled),
                        failing_position=None if cleared else row.failing_position,
                        failures=0 if cleared else row.failures,
                        last_error=None if cleared else row.last_error,
                        updated_at=self._backend.clock.now(),
                    ),
                )

    async def record_failure(
        self, name: str, event: RecordedEvent, error: str, park_after: int | None
    ) -> bool:
        async with self._backend.transaction() as tx:
            found = await self._rows.locked(tx, name)
            if found is None:
                return False
            cell, row = found
            if row.checkpoint >= event.checkpoint:
                return False
            failures = row.failures + 1 if row.failing_position == event.position else 1
            now = self._backend.clock.now()
            if park_after is None or failures < park_after:
                cell.write(
                    tx,
                    replace(
                        row,
                        failing_position=event.position,
                        failures=failures,
                        last_error=error,
                        updated_at=now,
                    ),
                )
                return False
            parked = self._parked.setdefault(name, TxTable())
            entry = ParkedRow(event.position, failures, error, now)
            existing = await parked.unique(tx, event.position)
            if existing is None:
                parked.insert(tx, event.position, entry)
            else:
                await existing.lock(tx)
                existing.write(tx, entry)
            cell.write(
                tx,
                replace(
                    row,
                    checkpoint=event.checkpoint,
                    failing_position=None,
                    failures=0,
                    last_error=error,
                    updated_at=now,
                ),
            )
            return True

    async def get(self, name: str) -> SubscriptionInfo | None:
        found = [s for s in await self.list_all() if s.name == name]
        return found[0] if found else None

    async def list_all(self) -> list[SubscriptionInfo]:
        async with self._backend.transaction() as tx:
            rows = sorted(self._rows.seen_by(tx), key=lambda r: r.name)
            return [
                SubscriptionInfo(
                    name=r.name,
                    checkpoint=r.checkpoint,
                    categories=None if r.where.categories is None else list(r.where.categories),
                    event_types=None if r.where.event_types is None else list(r.where.event_types),
                    handled=r.handled,
                    parked=len(self._parked_rows(tx, r.name)),
                    lag=self._events.count_seen_after(tx, r.checkpoint, r.where),
                    failing_position=r.failing_position,
                    failures=r.failures,
                    last_error=r.last_error,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]

    def _parked_rows(self, tx: MemoryTransaction, name: str) -> list[ParkedRow]:
        table = self._parked.get(name)
        return [] if table is None else table.seen_by(tx)

    async def reset(self, name: str, to: Checkpoint) -> bool:
        async with self._backend.transaction() as tx:
            found = await self._rows.locked(tx, name)
            if found is None:
                return False
            cell, row = found
            cell.write(
                tx,
                replace(
                    row,
                    checkpoint=to,
                    failing_position=None,
                    failures=0,
                    last_error=None,
                    updated_at=self._backend.clock.now(),
                ),
            )
            return True

    async def end(self) -> Checkpoint:
        async with self._backend.transaction() as tx:
            rows = self._events.final_after(tx, Checkpoint(), 2**62, EventFilter())
            return rows[-1].recorded().checkpoint if rows else Checkpoint()

    async def parked(self, name: str, limit: int) -> list[ParkedEvent]:
        async with self._backend.transaction() as tx:
            found = []
            for entry in self._parked_rows(tx, name):
                stored = self._events.stored(tx, entry.position)
                if stored is not None:
                    found.append(
                        ParkedEvent(
                            name, stored.recorded(), entry.attempts, entry.error, entry.parked_at
                        )
                    )
            found.sort(key=lambda p: p.event.checkpoint)
            return found[:limit]
