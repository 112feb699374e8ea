"""In-memory process repository: processes, audit trails and the message log.

Behaves like ``PostgresProcessRepository`` (same contract suite,
``commandbus.testing.process_contracts``) on top of ``InMemoryBackend`` transactions:
processes, audit entries and logged messages are rows of ``commandbus.memory.rows``, as
those of the command store and the queues, so what an open transaction creates, changes
or deletes is invisible to others until it commits and a rollback leaves nothing;
``lock`` and every update take the row lock, and an insert (or a lock or an update) of a
key another open transaction inserted waits for it (like a unique index). Stored states
and payloads are kept JSON-encoded, so callers never share mutable data with the store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from commandbus.activity import (
    DEFAULT_ACTIVITY_LIMIT,
    AuditSample,
    ProcessActivity,
    check_window,
)
from commandbus.memory.batches import BatchChange, BatchTables
from commandbus.memory.rows import TxCell, TxLog, TxTable
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.models import ReplyOutcome
from commandbus.ports import Conn
from commandbus.process.errors import ProcessAlreadyExistsError, ProcessVersionConflictError
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.process.repository import ProcessWrites, completed_steps, state_to_json
from commandbus.validation import json_text

__all__ = ["InMemoryProcessRepository"]

Key = tuple[str, UUID]
AnyProcess = ProcessMetadata[Any, Any]


def _encode(value: object) -> str:
    return json_text(value)


def _encode_opt(value: object) -> str | None:
    return None if value is None else _encode(value)


def _decode(body: str | None) -> Any:
    return None if body is None else json.loads(body)


#: A stored process: ``state`` and ``initial_data`` are JSON encodings (str).
_Row = TxCell[AnyProcess]


def _read(p: AnyProcess) -> AnyProcess:
    initial_data = _decode(p.initial_data)  # type: ignore[arg-type]  # str when stored
    return p.copy(state=_decode(p.state), initial_data=initial_data)


def _read_entry(e: ProcessAuditEntry) -> ProcessAuditEntry:
    return replace(
        e,
        command_data=_decode(e.command_data),  # type: ignore[arg-type]
        reply_data=_decode(e.reply_data),  # type: ignore[arg-type]
    )


@dataclass(slots=True, eq=False)
class _LogRow:
    record: ProcessMessageRecord
    body: str  # the message, JSON-encoded


def _stored_entry(entry: ProcessAuditEntry) -> ProcessAuditEntry:
    return replace(
        entry,
        # A text column in PostgreSQL: a StrEnum step comes back as the plain str.
        step_name=str(entry.step_name),
        command_data=_encode(entry.command_data) if entry.command_data is not None else None,  # type: ignore[arg-type]
        reply_data=_encode(entry.reply_data) if entry.reply_data is not None else None,  # type: ignore[arg-type]
        reply_outcome=ReplyOutcome(entry.reply_outcome) if entry.reply_outcome else None,
        kind=AuditEntryKind(entry.kind),
    )


class InMemoryProcessRepository:
    """``ProcessRepository`` in memory; see ``commandbus.process.repository``."""

    def __init__(self, backend: MemoryHost, batches: BatchTables | None = None) -> None:
        self._backend = backend
        #: Processes of batches move between their batch's counters in the transaction
        #: that changes their status (as the SQL update calls count_batch_changes).
        self._batches = batches
        self._rows: TxTable[Key, AnyProcess] = TxTable()
        # Entries JSON-encoded (command_data / reply_data are str), in write order.
        self._audit: dict[Key, TxLog[ProcessAuditEntry]] = {}
        self._log: TxLog[_LogRow] = TxLog()
        self._seq = 0
        # Every audit entry in write order, as PostgreSQL's identity column orders them.
        self._written: list[tuple[Key, TxCell[ProcessAuditEntry]]] = []

    # -- helpers -------------------------------------------------------------------------

    async def _count(self, tx: MemoryTransaction, changes: list[BatchChange]) -> None:
        if self._batches is None:
            raise RuntimeError(
                "a process of a batch changed in an InMemoryProcessRepository built without "
                "the backend's batch tables; use InMemoryBackend().processes"
            )
        await self._batches.count_changes(tx, changes)

    def _stored(
        self, process: AnyProcess, version: int, now: datetime, *, initial_data: str | None
    ) -> AnyProcess:
        """The row to store; ``initial_data`` is the encoded start input (the new one on
        insert, the row's own on update: it is never updated)."""
        state = state_to_json(process.state)
        step = process.current_step
        return process.copy(
            state=state,
            initial_data=initial_data,
            current_step=str(step) if step is not None else None,
            status=ProcessStatus(process.status),
            version=version,
            updated_at=now,
        )

    async def _locked(self, tx: MemoryTransaction, key: Key) -> tuple[_Row, AnyProcess] | None:
        """The row of ``key`` locked by ``tx`` and its latest version; another
        transaction's uncommitted insert of it is waited for first (None if it rolls
        back)."""
        row = await self._rows.unique(tx, key)
        if row is None:
            return None
        stored = await row.lock(tx)
        return (row, stored) if stored is not None else None

    def _append_audit(self, tx: MemoryTransaction, key: Key, entry: ProcessAuditEntry) -> None:
        # One sequence numbers audit entries and logged messages (the log's ids).
        self._seq += 1
        log = self._audit.get(key)
        if log is None:
            log = self._audit[key] = TxLog()
        self._written.append((key, log.append(tx, _stored_entry(entry))))

    async def _update_audit(
        self, tx: MemoryTransaction, key: Key, command_id: UUID, entry: ProcessAuditEntry
    ) -> None:
        log = self._audit.get(key)
        for cell in reversed(log.cells() if log is not None else []):
            seen = cell.seen_by(tx)
            if seen is not None and seen.command_id == command_id:
                # An UPDATE: waits for another transaction holding the entry.
                old = await cell.lock(tx)
                if old is None:
                    return
                new = _stored_entry(entry)
                updated = replace(
                    old,
                    reply_outcome=new.reply_outcome,
                    reply_data=new.reply_data,
                    received_at=new.received_at,
                    error_code=new.error_code,
                    error_message=new.error_message,
                    timed_out_at=new.timed_out_at,
                )
                cell.write(tx, updated)
                return

    def _audit_of(self, tx: MemoryTransaction, key: Key) -> list[ProcessAuditEntry]:
        log = self._audit.get(key)
        seen = log.seen_by(tx) if log is not None else []
        seen.sort(key=lambda entry: entry.sent_at)  # stable: ties stay in write order
        return [_read_entry(entry) for entry in seen]

    def _add_log(self, tx: MemoryTransaction, record: ProcessMessageRecord) -> None:
        self._seq += 1
        stored = replace(record, id=self._seq, recorded_at=self._backend.clock.now())
        self._log.append(tx, _LogRow(stored, _encode(record.message)))

    # -- the seed's API ------------------------------------------------------------------

    async def save(self, process: AnyProcess, conn: Conn | None = None) -> None:
        async with self._backend.transaction(conn) as tx:
            key = (process.domain, process.process_id)
            if await self._rows.unique(tx, key) is not None:
                raise ProcessAlreadyExistsError(process.domain, process.process_id)
            now = self._backend.clock.now()
            stored = self._stored(process, 1, now, initial_data=_encode_opt(process.initial_data))
            self._rows.insert(tx, key, stored)
        process.version = 1
        process.updated_at = now

    async def update(self, process: AnyProcess, conn: Conn | None = None) -> None:
        await self.apply(ProcessWrites(updates=[process]), conn=conn)

    async def get_by_id(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> AnyProcess | None:
        async with self._backend.transaction(conn) as tx:
            stored = self._rows.get(tx, (domain, process_id))
            return _read(stored) if stored is not None else None

    async def find_by_status(
        self,
        domain: str,
        statuses: Sequence[ProcessStatus],
        conn: Conn | None = None,
        *,
        limit: int | None = None,
    ) -> list[AnyProcess]:
        wanted = {ProcessStatus(s) for s in statuses}
        async with self._backend.transaction(conn) as tx:
            found = [
                _read(p)
                for (d, _), row in self._rows.items()
                if d == domain and (p := row.seen_by(tx)) is not None and p.status in wanted
            ]
        found.sort(key=lambda p: (p.created_at, str(p.process_id)))
        return found[:limit] if limit is not None else found

    async def log_step(
        self,
        domain: str,
        process_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        await self.apply(ProcessWrites(audit_inserts=[(domain, process_id, entry)]), conn=conn)

    async def update_step_reply(
        self,
        domain: str,
        process_id: UUID,
        command_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        entry = replace(entry, command_id=command_id)
        await self.apply(ProcessWrites(audit_updates=[(domain, process_id, entry)]), conn=conn)

    async def get_audit_trail(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        async with self._backend.transaction(conn) as tx:
            return self._audit_of(tx, (domain, process_id))

    async def get_completed_steps(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[str]:
        return completed_steps(await self.get_audit_trail(domain, process_id, conn=conn))

    # -- engine --------------------------------------------------------------------------

    async def insert_new(self, processes: Sequence[AnyProcess], *, conn: Conn) -> list[UUID]:
        async with self._backend.transaction(conn) as tx:
            now = self._backend.clock.now()
            inserted: list[UUID] = []
            for process in processes:
                key = (process.domain, process.process_id)
                if await self._rows.unique(tx, key) is not None:
                    continue
                initial_data = _encode_opt(process.initial_data)
                stored = self._stored(
                    process, max(process.version, 1), now, initial_data=initial_data
                )
                self._rows.insert(tx, key, stored)
                inserted.append(process.process_id)
            return inserted

    async def lock(
        self,
        domains: Sequence[str],
        process_ids: Sequence[UUID],
        *,
        conn: Conn,
        with_audit: bool = True,
    ) -> list[ProcessSnapshot[Any, Any]]:
        async with self._backend.transaction(conn) as tx:
            keys = sorted(
                {(d, p) for d in domains for p in process_ids if (d, p) in self._rows},
                key=lambda k: (k[0], str(k[1])),
            )
            result: list[ProcessSnapshot[Any, Any]] = []
            for key in keys:
                locked = await self._locked(tx, key)
                if locked is not None:
                    audit = self._audit_of(tx, key) if with_audit else []
                    result.append(ProcessSnapshot(_read(locked[1]), audit))
            return result

    async def apply(self, writes: ProcessWrites, *, conn: Conn | None = None) -> None:
        async with self._backend.transaction(conn) as tx:
            now = self._backend.clock.now()
            conflicts: list[AnyProcess] = []
            moved: list[BatchChange] = []
            for process in writes.updates:
                locked = await self._locked(tx, (process.domain, process.process_id))
                if locked is None or locked[1].version != process.version:
                    conflicts.append(process)
                    continue
                row, current = locked
                kept: Any = current.initial_data  # the stored encoding (str)
                stored = self._stored(process, process.version + 1, now, initial_data=kept)
                if stored.batch_id != current.batch_id:  # never updated, as in SQL
                    stored = stored.copy(batch_id=current.batch_id)
                row.write(tx, stored)
                if current.batch_id is not None:
                    moved.append(
                        (
                            current.domain,
                            current.batch_id,
                            current.status.value,
                            stored.status.value,
                        )
                    )
            if conflicts:
                raise ProcessVersionConflictError(
                    conflicts[0].domain, [p.process_id for p in conflicts]
                )
            if moved:
                await self._count(tx, moved)
            for domain, process_id, entry in writes.audit_inserts:
                self._append_audit(tx, (domain, process_id), entry)
            for domain, process_id, entry in writes.audit_updates:
                await self._update_audit(tx, (domain, process_id), entry.command_id, entry)
            for record in writes.messages:
                self._add_log(tx, record)
        for process in writes.updates:
            process.version += 1
            process.updated_at = now

    async def find_stuck(
        self,
        domain: str,
        *,
        deadline_before: datetime,
        updated_before: datetime | None = None,
        limit: int = 1000,
        conn: Conn | None = None,
    ) -> list[AnyProcess]:
        async with self._backend.transaction(conn) as tx:
            found: list[AnyProcess] = []
            for (d, _), row in self._rows.items():
                seen = row.seen_by(tx) if d == domain else None
                if seen is None or seen.status.is_terminal:
                    continue
                p = seen
                overdue = p.deadline_at is not None and p.deadline_at < deadline_before
                idle = updated_before is not None and p.updated_at < updated_before
                if overdue or idle:
                    found.append(_read(p))
        found.sort(key=lambda p: (p.deadline_at or p.updated_at, str(p.process_id)))
        return found[:limit]

    async def list_messages(
        self,
        *,
        domain: str | None = None,
        process_id: UUID | None = None,
        disposition: ProcessMessageDisposition | None = None,
        limit: int = 100,
        record_id: int | None = None,
        conn: Conn | None = None,
    ) -> list[ProcessMessageRecord]:
        async with self._backend.transaction(conn) as tx:
            found: list[ProcessMessageRecord] = []
            for lrow in self._log.seen_by(tx):
                r = lrow.record
                if record_id is not None and r.id != record_id:
                    continue
                if domain is not None and r.domain != domain:
                    continue
                if process_id is not None and r.process_id != process_id:
                    continue
                if disposition is not None and r.disposition != disposition:
                    continue
                found.append(replace(r, message=_decode(lrow.body)))
                if len(found) >= limit:
                    break
            return found

    async def count_by_status(
        self, domain: str, *, conn: Conn | None = None
    ) -> dict[ProcessStatus, int]:
        counts: dict[ProcessStatus, int] = {}
        async with self._backend.transaction(conn) as tx:
            for (d, _), row in self._rows.items():
                seen = row.seen_by(tx) if d == domain else None
                if seen is not None:
                    status = ProcessStatus(seen.status)
                    counts[status] = counts.get(status, 0) + 1
        return counts

    async def activity(
        self, since: datetime, *, limit: int = DEFAULT_ACTIVITY_LIMIT, conn: Conn | None = None
    ) -> ProcessActivity:
        check_window(since, limit)
        samples: list[AuditSample] = []
        async with self._backend.transaction(conn) as tx:
            # As the query reads them: the newest limit + 1 entries, newest first.
            for key, cell in reversed(self._written):
                if len(samples) > limit:
                    break
                entry = cell.seen_by(tx)
                process = self._rows.get(tx, key) if entry is not None else None
                if entry is None or process is None:
                    continue
                samples.append(
                    AuditSample(
                        key[0],
                        key[1],
                        process.process_type,
                        entry.step_name,
                        entry.sent_at,
                        entry.scheduled_for,
                        entry.received_at,
                        process.created_at,
                        process.completed_at,
                    )
                )
        return ProcessActivity.build(since, limit, samples)

    async def delete_message(self, record_id: int, *, conn: Conn | None = None) -> bool:
        async with self._backend.transaction(conn) as tx:
            for cell in self._log.cells():
                lrow = cell.seen_by(tx)
                if lrow is not None and lrow.record.id == record_id:
                    # A DELETE: waits for another transaction deleting the same row.
                    if await cell.lock(tx) is None:
                        return False
                    self._log.delete(tx, cell)
                    return True
            return False
