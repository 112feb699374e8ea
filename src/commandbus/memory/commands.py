"""In-memory command store: metadata rows, audit trail and archive beside the queues.

Rows are keyed by ``(domain, command_id)``; audit events by command id in write order;
archived messages by ``(domain, command_id)``. Every mutation goes through the
transaction's undo log (see ``commandbus.memory.transaction``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

from commandbus.errors import DuplicateCommandError
from commandbus.memory.queue import InMemoryMessageQueue, StoredMessage
from commandbus.memory.transaction import MemoryHost, MemoryTransaction, visible_to
from commandbus.models import (
    AuditEvent,
    AuditEventType,
    ClaimedCommand,
    Command,
    CommandMetadata,
    CommandQuery,
    CommandStatus,
    JsonObject,
    OperatorSettlement,
    SendRequest,
    SendResult,
    SettleAction,
    Settlement,
    TroubleshootingItem,
)
from commandbus.ports import Conn
from commandbus.validation import command_queue

__all__ = ["InMemoryCommandStore", "command_message"]

RowKey = tuple[str, UUID]


def command_message(
    domain: str,
    command_type: str,
    command_id: UUID,
    data: JsonObject,
    correlation_id: UUID | None,
    reply_to: str | None,
) -> JsonObject:
    """The queue message of a command (its payload as stored and archived)."""
    return {
        "domain": domain,
        "command_type": command_type,
        "command_id": str(command_id),
        "correlation_id": str(correlation_id) if correlation_id is not None else None,
        "reply_to": reply_to,
        "data": data,
    }


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _encode(value: object) -> str:
    """JSON as ``jsonb`` would take it (no NaN); stored encoded, so never shared."""
    return _ENCODER.encode(value)


def _decode_object(body: str | None) -> JsonObject | None:
    if body is None:
        return None
    value: Any = json.loads(body)
    return value if isinstance(value, dict) else None


@dataclass(slots=True, eq=False)
class CommandRow:
    domain: str
    command_id: UUID
    command_type: str
    status: CommandStatus
    attempts: int
    max_attempts: int
    correlation_id: UUID | None
    reply_to: str | None
    created_at: datetime
    updated_at: datetime
    last_error_type: str | None = None
    last_error_code: str | None = None
    last_error_msg: str | None = None
    msg_id: int | None = None
    batch_id: UUID | None = None
    tx: MemoryTransaction | None = None  # inserting transaction until it commits
    # While a transaction has changed the row and not committed yet: that transaction and
    # the last committed version, which every other transaction still reads (MVCC).
    dirty: MemoryTransaction | None = None
    committed: CommandRow | None = None

    def seen_by(self, tx: MemoryTransaction) -> CommandRow:
        """The version of the row ``tx`` reads."""
        if self.dirty is None or self.dirty is tx.root or self.committed is None:
            return self
        return self.committed

    def clone(self) -> CommandRow:
        return CommandRow(
            self.domain,
            self.command_id,
            self.command_type,
            self.status,
            self.attempts,
            self.max_attempts,
            self.correlation_id,
            self.reply_to,
            self.created_at,
            self.updated_at,
            self.last_error_type,
            self.last_error_code,
            self.last_error_msg,
            self.msg_id,
            self.batch_id,
        )

    def metadata(self) -> CommandMetadata:
        return CommandMetadata(
            domain=self.domain,
            command_id=self.command_id,
            command_type=self.command_type,
            status=self.status,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_error_type=self.last_error_type,
            last_error_code=self.last_error_code,
            last_error_msg=self.last_error_msg,
            msg_id=self.msg_id,
            batch_id=self.batch_id,
        )

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.attempts,
            self.updated_at,
            self.last_error_type,
            self.last_error_code,
            self.last_error_msg,
            self.msg_id,
        )

    def restore(self, snap: tuple[Any, ...]) -> None:
        (
            self.status,
            self.attempts,
            self.updated_at,
            self.last_error_type,
            self.last_error_code,
            self.last_error_msg,
            self.msg_id,
        ) = snap


@dataclass(slots=True, eq=False)
class AuditRow:
    domain: str
    command_id: UUID
    event_type: AuditEventType
    timestamp: datetime
    details: str | None
    tx: MemoryTransaction | None

    def event(self) -> AuditEvent:
        return AuditEvent(
            domain=self.domain,
            command_id=self.command_id,
            event_type=self.event_type,
            timestamp=self.timestamp,
            details=_decode_object(self.details),
        )


@dataclass(slots=True, eq=False)
class ArchivedMessage:
    msg_id: int
    queue: str
    body: str
    enqueued_at: datetime
    archived_at: datetime
    read_ct: int
    tx: MemoryTransaction | None


def _lock_key(domain: str, command_id: UUID) -> tuple[str, str, UUID]:
    return ("command", domain, command_id)


class InMemoryCommandStore:
    """``CommandStore`` port in memory; see ``commandbus.ports.CommandStore``."""

    def __init__(self, backend: MemoryHost, queue: InMemoryMessageQueue) -> None:
        self._backend = backend
        self._queue = queue
        self._rows: dict[RowKey, CommandRow] = {}
        self._by_domain: dict[str, dict[UUID, CommandRow]] = {}
        self._audit: dict[UUID, list[AuditRow]] = {}
        # Archived messages by (queue, command_id); command_id None: orphaned messages.
        self._archive: dict[tuple[str, UUID | None], list[ArchivedMessage]] = {}

    # -- sending -----------------------------------------------------------------------

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Conn | None = None,
    ) -> list[SendResult]:
        async with self._backend.transaction(conn) as tx:
            await self._check_duplicates(tx, requests)
            now = self._backend.clock.now()
            results: list[SendResult] = []
            for req in requests:
                body = _encode(
                    command_message(
                        req.domain,
                        req.command_type,
                        req.command_id,
                        req.data,
                        req.correlation_id,
                        req.reply_to,
                    )
                )
                msg_id = self._queue.put(tx, command_queue(req.domain), body, req.delay or 0.0)
                row = CommandRow(
                    domain=req.domain,
                    command_id=req.command_id,
                    command_type=req.command_type,
                    status=CommandStatus.PENDING,
                    attempts=0,
                    max_attempts=(
                        req.max_attempts if req.max_attempts is not None else default_max_attempts
                    ),
                    correlation_id=req.correlation_id,
                    reply_to=req.reply_to,
                    created_at=now,
                    updated_at=now,
                    msg_id=msg_id,
                    tx=tx.root,
                )
                self._add_row(tx, row)
                self._append(
                    tx, req.domain, req.command_id, AuditEventType.SENT, now, {"msg_id": msg_id}
                )
                results.append(SendResult(command_id=req.command_id, msg_id=msg_id))
            return results

    async def _check_duplicates(
        self, tx: MemoryTransaction, requests: Sequence[SendRequest]
    ) -> None:
        while True:
            seen: set[RowKey] = set()
            duplicates: list[RowKey] = []
            pending: MemoryTransaction | None = None
            for req in requests:
                key = (req.domain, req.command_id)
                if key in seen:
                    duplicates.append(key)
                    continue
                seen.add(key)
                row = self._rows.get(key)
                if row is None:
                    continue
                if visible_to(row.tx, tx):
                    duplicates.append(key)
                else:
                    pending = row.tx
            if duplicates:
                domain = duplicates[0][0]
                ids = list(dict.fromkeys(cid for d, cid in duplicates if d == domain))
                raise DuplicateCommandError(domain, ids)
            if pending is None:
                return
            # Another open transaction inserted the same key: like the unique index, wait
            # for it to end, then decide (duplicate if it committed).
            await pending.wait_ended()

    # -- worker ------------------------------------------------------------------------

    async def claim(
        self,
        domain: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Conn | None = None,
    ) -> list[ClaimedCommand]:
        async with self._backend.transaction(conn) as tx:
            queue = command_queue(domain)
            now = self._backend.clock.now()
            vt = now + timedelta(seconds=float(visibility_timeout))
            # Like the SQL claim: pick up to ``limit`` visible messages; delete those of
            # terminal commands (stale redeliveries), archive those without a command row
            # (nothing is lost), lease the rest.
            live: list[tuple[StoredMessage, CommandRow, JsonObject]] = []
            for msg in self._queue.pick(tx, queue, limit):
                message = _decode_object(msg.body) or {}
                row = self._message_row(tx, domain, message)
                if row is None:
                    self._queue.remove(tx, queue, msg.msg_id)
                    self._archive_message(tx, None, msg, now)
                elif row.seen_by(tx).status.is_terminal:
                    self._queue.remove(tx, queue, msg.msg_id)
                else:
                    self._queue.lease(tx, msg, vt)
                    live.append((msg, row, message))
            claimed: list[ClaimedCommand] = []
            live.sort(key=lambda item: item[0].msg_id)
            for msg, row, message in live:
                # Updating the row waits for a transaction that holds it (an operator), then
                # re-checks it: a command that became terminal meanwhile is not claimed.
                await tx.lock(_lock_key(domain, row.command_id))
                if row.status.is_terminal:
                    continue
                self._update_row(
                    tx, row, status=CommandStatus.IN_PROGRESS, attempts=row.attempts + 1, now=now
                )
                self._append(
                    tx,
                    domain,
                    row.command_id,
                    AuditEventType.RECEIVED,
                    now,
                    {"attempt": row.attempts, "msg_id": msg.msg_id},
                )
                data = message.get("data")
                claimed.append(
                    ClaimedCommand(
                        msg_id=msg.msg_id,
                        command=Command(
                            domain=domain,
                            command_type=row.command_type,
                            command_id=row.command_id,
                            data=data if isinstance(data, dict) else {},
                            correlation_id=row.correlation_id,
                            reply_to=row.reply_to,
                            created_at=row.created_at,
                        ),
                        attempt=row.attempts,
                        max_attempts=row.max_attempts,
                    )
                )
            return claimed

    def _message_row(
        self, tx: MemoryTransaction, domain: str, message: JsonObject
    ) -> CommandRow | None:
        try:
            command_id = UUID(str(message.get("command_id")))
        except ValueError:
            return None
        return self._live_row(tx, domain, command_id)

    async def settle(self, settlements: Sequence[Settlement], *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            # Like the SQL: a settlement is applied only if its row is still IN_PROGRESS
            # with the settlement's attempts (the current delivery), one at most per row;
            # any other settlement writes nothing.
            current: list[tuple[Settlement, CommandRow]] = []
            settled: set[tuple[str, UUID]] = set()
            for s in settlements:
                key = (s.domain, s.command_id)
                row = await self._locked_row(tx, s.domain, s.command_id)
                if (
                    row is not None
                    and key not in settled
                    and row.status is CommandStatus.IN_PROGRESS
                    and row.attempts == s.attempts
                ):
                    settled.add(key)
                    current.append((s, row))
            for s, row in current:
                now = self._backend.clock.now()
                queue = command_queue(s.domain)
                if s.action is SettleAction.DELETE:
                    self._queue.remove(tx, queue, s.msg_id)
                elif s.action is SettleAction.ARCHIVE:
                    msg = self._queue.remove(tx, queue, s.msg_id)
                    if msg is not None:
                        self._archive_message(tx, s.command_id, msg, now)
                else:
                    stored = self._queue.find(tx, queue, s.msg_id)
                    if stored is not None:
                        self._queue.set_vt(tx, stored, now + timedelta(seconds=s.retry_delay))
                errors: dict[str, Any] = {}
                if s.error_type is not None:
                    errors = {
                        "last_error_type": s.error_type,
                        "last_error_code": s.error_code,
                        "last_error_msg": s.error_message,
                    }
                self._update_row(tx, row, status=s.status, attempts=s.attempts, now=now, **errors)
                for event_type, details in s.audit:
                    self._append(tx, s.domain, s.command_id, event_type, now, details)
                if s.reply is not None:
                    self._queue.put(tx, s.reply.queue, _encode(s.reply.reply.to_message()))
            return len(current)

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> CommandMetadata | None:
        async with self._backend.transaction(conn) as tx:
            row = self._live_row(tx, domain, command_id)
            return row.seen_by(tx).metadata() if row is not None else None

    async def lock(self, domain: str, command_id: UUID, *, conn: Conn) -> CommandMetadata | None:
        async with self._backend.transaction(conn) as tx:
            row = await self._locked_row(tx, domain, command_id)
            return row.metadata() if row is not None else None

    async def query(
        self, query: CommandQuery, *, conn: Conn | None = None
    ) -> list[CommandMetadata]:
        async with self._backend.transaction(conn) as tx:
            if query.domain is not None:
                candidates: Any = self._by_domain.get(query.domain, {}).values()
            else:
                candidates = self._rows.values()
            rows = [
                row
                for row in (r.seen_by(tx) for r in candidates if visible_to(r.tx, tx))
                if (query.status is None or row.status == query.status)
                and (query.command_type is None or row.command_type == query.command_type)
                and (query.created_after is None or row.created_at >= query.created_after)
                and (query.created_before is None or row.created_at < query.created_before)
            ]
            rows.sort(key=lambda r: (r.created_at, r.command_id), reverse=True)
            start = max(query.offset, 0)
            return [row.metadata() for row in rows[start : start + max(query.limit, 0)]]

    async def audit_trail(
        self, command_id: UUID, domain: str | None = None, *, conn: Conn | None = None
    ) -> list[AuditEvent]:
        async with self._backend.transaction(conn) as tx:
            return [
                event.event()
                for event in self._audit.get(command_id, ())
                if visible_to(event.tx, tx) and (domain is None or event.domain == domain)
            ]

    async def archived_message(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> JsonObject | None:
        async with self._backend.transaction(conn) as tx:
            archived = self._latest_archived(tx, domain, command_id)
            return _decode_object(archived.body) if archived is not None else None

    async def apply_operator(self, settlement: OperatorSettlement, *, conn: Conn) -> bool:
        domain, command_id = settlement.domain, settlement.command_id
        async with self._backend.transaction(conn) as tx:
            msg_id: int | None = None
            if settlement.requeue:
                archived = self._latest_archived(tx, domain, command_id)
                if archived is None:
                    return False
                msg_id = self._queue.put(tx, command_queue(domain), archived.body)
            await self.set_status(
                domain,
                command_id,
                settlement.status,
                attempts=0 if settlement.requeue else None,
                msg_id=msg_id,
                conn=tx,
            )
            await self.append_audit(domain, command_id, settlement.audit, conn=tx)
            if settlement.reply is not None:
                body = _encode(settlement.reply.reply.to_message())
                self._queue.put(tx, settlement.reply.queue, body)
        return True

    async def list_troubleshooting(
        self,
        domain: str,
        command_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        conn: Conn | None = None,
    ) -> list[TroubleshootingItem]:
        async with self._backend.transaction(conn) as tx:
            rows = self._troubleshooting_rows(tx, domain, command_type)
            rows.sort(key=lambda r: r.command_id)
            rows.sort(key=lambda r: r.created_at)
            start = max(offset, 0)
            items: list[TroubleshootingItem] = []
            for row in rows[start : start + max(limit, 0)]:
                archived = self._latest_archived(tx, domain, row.command_id)
                message = _decode_object(archived.body) if archived is not None else None
                data = message.get("data") if message is not None else None
                items.append(
                    TroubleshootingItem(
                        domain=row.domain,
                        command_id=row.command_id,
                        command_type=row.command_type,
                        data=data if isinstance(data, dict) else {},
                        attempts=row.attempts,
                        max_attempts=row.max_attempts,
                        last_error_type=row.last_error_type,
                        last_error_code=row.last_error_code,
                        last_error_msg=row.last_error_msg,
                        correlation_id=row.correlation_id,
                        reply_to=row.reply_to,
                        created_at=row.created_at,
                        updated_at=row.updated_at,
                    )
                )
            return items

    async def count_troubleshooting(
        self, domain: str, command_type: str | None = None, *, conn: Conn | None = None
    ) -> int:
        async with self._backend.transaction(conn) as tx:
            return len(self._troubleshooting_rows(tx, domain, command_type))

    # -- operator writes -------------------------------------------------------------------

    async def append_audit(
        self,
        domain: str,
        command_id: UUID,
        events: Sequence[tuple[AuditEventType, JsonObject | None]],
        *,
        conn: Conn | None = None,
    ) -> None:
        async with self._backend.transaction(conn) as tx:
            now = self._backend.clock.now()
            for event_type, details in events:
                self._append(tx, domain, command_id, event_type, now, details)

    async def set_status(
        self,
        domain: str,
        command_id: UUID,
        status: CommandStatus,
        *,
        attempts: int | None = None,
        msg_id: int | None = None,
        last_error: tuple[str, str, str] | None = None,
        conn: Conn | None = None,
    ) -> None:
        async with self._backend.transaction(conn) as tx:
            row = await self._locked_row(tx, domain, command_id)
            if row is None:  # like an UPDATE matching no row
                return
            changes: dict[str, Any] = {}
            if msg_id is not None:
                changes["msg_id"] = msg_id
            if last_error is not None:
                error_type, error_code, error_msg = last_error
                changes.update(
                    last_error_type=error_type, last_error_code=error_code, last_error_msg=error_msg
                )
            self._update_row(
                tx,
                row,
                status=status,
                attempts=row.attempts if attempts is None else attempts,
                now=self._backend.clock.now(),
                **changes,
            )

    # -- helpers (inside an open transaction) ----------------------------------------------

    def _live_row(self, tx: MemoryTransaction, domain: str, command_id: UUID) -> CommandRow | None:
        """The row, if its insert is visible to ``tx`` (writers use it; readers go through
        ``seen_by``)."""
        row = self._rows.get((domain, command_id))
        if row is None or not visible_to(row.tx, tx):
            return None
        return row

    async def _locked_row(
        self, tx: MemoryTransaction, domain: str, command_id: UUID
    ) -> CommandRow | None:
        """The row locked by ``tx`` (``SELECT … FOR UPDATE``), waiting for its holder."""
        if self._live_row(tx, domain, command_id) is None:
            return None  # unknown, or an uncommitted insert of another transaction
        await tx.lock(_lock_key(domain, command_id))
        return self._live_row(tx, domain, command_id)

    def _add_row(self, tx: MemoryTransaction, row: CommandRow) -> None:
        key = (row.domain, row.command_id)
        self._rows[key] = row
        by_id = self._by_domain.setdefault(row.domain, {})
        by_id[row.command_id] = row

        def undo() -> None:
            if self._rows.get(key) is row:
                del self._rows[key]
                del by_id[row.command_id]

        def publish() -> None:
            row.tx = None

        tx.record_undo(undo)
        tx.on_commit(publish)

    def _update_row(
        self,
        tx: MemoryTransaction,
        row: CommandRow,
        *,
        status: CommandStatus,
        attempts: int,
        now: datetime,
        **fields: Any,
    ) -> None:
        # Writers hold the row lock, so no other transaction has uncommitted changes here.
        assert row.dirty is None or row.dirty is tx.root, "row updated without its lock"
        if row.dirty is None:
            row.dirty = tx.root
            row.committed = row.clone()

            def clean() -> None:
                row.dirty = None
                row.committed = None

            tx.record_undo(clean)  # runs after the restore below on rollback
            tx.on_commit(clean)
        snap = row.snapshot()
        row.status = status
        row.attempts = attempts
        row.updated_at = now
        for name, value in fields.items():
            setattr(row, name, value)
        tx.record_undo(lambda: row.restore(snap))

    def _append(
        self,
        tx: MemoryTransaction,
        domain: str,
        command_id: UUID,
        event_type: AuditEventType,
        now: datetime,
        details: JsonObject | None,
    ) -> None:
        event = AuditRow(
            domain,
            command_id,
            AuditEventType(event_type),
            now,
            _encode(details) if details is not None else None,
            tx.root,
        )
        _append_in_transaction(tx, self._audit.setdefault(command_id, []), event)

    def _archive_message(
        self,
        tx: MemoryTransaction,
        command_id: UUID | None,
        msg: StoredMessage,
        now: datetime,
    ) -> None:
        """Move a removed message to the archive, found by ``(queue, command_id)``."""
        entry = ArchivedMessage(
            msg.msg_id, msg.queue, msg.body, msg.enqueued_at, now, msg.read_ct, tx.root
        )
        key = (msg.queue, command_id)
        _append_in_transaction(tx, self._archive.setdefault(key, []), entry)

    def _latest_archived(
        self, tx: MemoryTransaction, domain: str, command_id: UUID
    ) -> ArchivedMessage | None:
        for entry in reversed(self._archive.get((command_queue(domain), command_id), ())):
            if visible_to(entry.tx, tx):
                return entry
        return None

    def _troubleshooting_rows(
        self, tx: MemoryTransaction, domain: str, command_type: str | None
    ) -> list[CommandRow]:
        return [
            row
            for row in (
                r.seen_by(tx)
                for r in self._by_domain.get(domain, {}).values()
                if visible_to(r.tx, tx)
            )
            if row.status == CommandStatus.IN_TROUBLESHOOTING_QUEUE
            and (command_type is None or row.command_type == command_type)
        ]


class _Published(Protocol):
    #: The transaction that wrote the row until it commits (then None: visible to all).
    tx: MemoryTransaction | None


_P = TypeVar("_P", bound=_Published)


def _append_in_transaction(tx: MemoryTransaction, rows: list[_P], row: _P) -> None:
    """Append ``row``: removed again if ``tx`` rolls back, visible to all once it commits."""
    rows.append(row)

    def undo() -> None:
        for i in range(len(rows) - 1, -1, -1):
            if rows[i] is row:
                del rows[i]
                break

    def publish() -> None:
        row.tx = None

    tx.record_undo(undo)
    tx.on_commit(publish)
