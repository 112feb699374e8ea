"""The command store's tables in memory: command rows, audit events, archived messages.

What PostgreSQL keeps in ``commandbus.command``, ``audit`` and ``queue_archive``, with
the operations the store's SQL performs on them inside a transaction. The store
(``commandbus.memory.commands``) is the port on top; this module is its database. Every
row is a ``TxCell`` (``commandbus.memory.rows``), so uncommitted writes are invisible to
other transactions and a rollback leaves nothing, as for the queue and the process
repository. Command rows are kept per domain by command id, audit events per command id
in write order, archived messages per ``(queue, command_id)``. JSON is stored encoded, so
it is never shared with callers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from commandbus.errors import DuplicateCommandError
from commandbus.memory.queue import StoredMessage
from commandbus.memory.rows import TxCell, TxLog, TxTable
from commandbus.memory.transaction import MemoryTransaction
from commandbus.models import (
    AuditEvent,
    AuditEventType,
    CommandMetadata,
    CommandStatus,
    JsonObject,
    SendRequest,
)
from commandbus.validation import command_queue, json_text

__all__ = ["ArchivedMessage", "AuditRow", "CommandRow", "CommandTables", "RowCell"]

_FINISHED = frozenset({CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.CANCELED})


def encode(value: object) -> str:
    """JSON as PostgreSQL's adapter writes it (``json_text``: no NaN, the registered
    encoders for dates, decimals…); stored encoded, so never shared."""
    return json_text(value)


def decode_object(body: str | None) -> JsonObject | None:
    if body is None:
        return None
    value: Any = json.loads(body)
    return value if isinstance(value, dict) else None


#: The last error of a command: type, code, message.
ErrorFields = tuple[str | None, str | None, str | None]


@dataclass(slots=True, eq=False)
class CommandRow:
    """One version of a command row; never changed once stored (``updated`` makes the
    next one), so other transactions can go on reading the committed version."""

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

    def updated(
        self,
        status: CommandStatus,
        attempts: int,
        now: datetime,
        *,
        msg_id: int | None = None,
        error: ErrorFields | None = None,
    ) -> CommandRow:
        """The next version: ``msg_id`` and ``error`` kept unless given."""
        error_type, error_code, error_msg = (
            error
            if error is not None
            else (self.last_error_type, self.last_error_code, self.last_error_msg)
        )
        # Positional: this runs for every claim and settlement (dataclasses.replace is
        # several times slower).
        return CommandRow(
            self.domain,
            self.command_id,
            self.command_type,
            status,
            attempts,
            self.max_attempts,
            self.correlation_id,
            self.reply_to,
            self.created_at,
            now,
            error_type,
            error_code,
            error_msg,
            self.msg_id if msg_id is None else msg_id,
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


#: A stored command row: its versions and its row lock.
RowCell = TxCell[CommandRow]


@dataclass(slots=True, eq=False)
class AuditRow:
    domain: str
    command_id: UUID
    event_type: AuditEventType
    timestamp: datetime
    details: str | None

    def event(self) -> AuditEvent:
        return AuditEvent(
            domain=self.domain,
            command_id=self.command_id,
            event_type=self.event_type,
            timestamp=self.timestamp,
            details=decode_object(self.details),
        )


@dataclass(slots=True, eq=False)
class ArchivedMessage:
    msg_id: int
    queue: str
    body: str
    enqueued_at: datetime
    archived_at: datetime
    read_ct: int


class CommandTables:
    """The rows of the command store and the writes and lookups its SQL makes (all in an
    open transaction)."""

    def __init__(self) -> None:
        self._rows: dict[str, TxTable[UUID, CommandRow]] = {}
        self._audit: dict[UUID, TxLog[AuditRow]] = {}
        # Archived messages by (queue, command_id); command_id None: orphaned messages.
        self._archive: dict[tuple[str, UUID | None], TxLog[ArchivedMessage]] = {}

    # -- command rows ------------------------------------------------------------------

    def row_cell(self, tx: MemoryTransaction, domain: str, command_id: UUID) -> RowCell | None:
        """The row's cell if the row exists for ``tx`` (read it with ``seen_by``)."""
        table = self._rows.get(domain)
        cell = table.cell(command_id) if table is not None else None
        if cell is None or cell.seen_by(tx) is None:
            return None
        return cell

    def get(self, tx: MemoryTransaction, domain: str, command_id: UUID) -> CommandRow | None:
        table = self._rows.get(domain)
        return table.get(tx, command_id) if table is not None else None

    async def locked_row(
        self, tx: MemoryTransaction, domain: str, command_id: UUID
    ) -> tuple[RowCell, CommandRow] | None:
        """The row locked by ``tx`` (``SELECT … FOR UPDATE``), waiting for its holder;
        None if unknown, or another transaction's insert it cannot see yet."""
        cell = self.row_cell(tx, domain, command_id)
        if cell is None:
            return None
        row = await cell.lock(tx)
        return (cell, row) if row is not None else None

    def rows_seen_by(self, tx: MemoryTransaction, domain: str | None) -> list[CommandRow]:
        """The rows of ``domain`` (None: of every domain) as ``tx`` reads them."""
        if domain is not None:
            table = self._rows.get(domain)
            return table.seen_by(tx) if table is not None else []
        return [row for table in self._rows.values() for row in table.seen_by(tx)]

    async def check_duplicates(
        self, tx: MemoryTransaction, requests: Sequence[SendRequest]
    ) -> None:
        """Raise ``DuplicateCommandError`` if a request's key exists (or repeats in
        ``requests``), as the primary key would."""
        while True:
            seen: set[tuple[str, UUID]] = set()
            duplicates: list[tuple[str, UUID]] = []
            pending: MemoryTransaction | None = None
            for req in requests:
                key = (req.domain, req.command_id)
                if key in seen:
                    duplicates.append(key)
                    continue
                seen.add(key)
                table = self._rows.get(req.domain)
                cell = table.cell(req.command_id) if table is not None else None
                if cell is None:
                    continue
                if cell.seen_by(tx) is not None:
                    duplicates.append(key)
                else:
                    inserter = cell.inserting(tx)
                    if inserter is not None:
                        pending = inserter
            if duplicates:
                domain = duplicates[0][0]
                ids = list(dict.fromkeys(cid for d, cid in duplicates if d == domain))
                raise DuplicateCommandError(domain, ids)
            if pending is None:
                return
            # Another open transaction inserted the same key: like the unique index, wait
            # for it to end, then decide (duplicate if it committed).
            await pending.wait_ended()

    def insert_row(self, tx: MemoryTransaction, row: CommandRow) -> None:
        """Insert a row whose key is free (``check_duplicates``)."""
        table = self._rows.get(row.domain)
        if table is None:
            table = self._rows[row.domain] = TxTable()
        table.insert(tx, row.command_id, row)

    def finished_before(
        self, tx: MemoryTransaction, cutoff: datetime, domain: str | None
    ) -> list[tuple[RowCell, CommandRow]]:
        """Rows COMPLETED, FAILED or CANCELED last changed before ``cutoff``, oldest
        first; rows another transaction holds are skipped (``SKIP LOCKED``)."""
        tables = [self._rows.get(domain)] if domain is not None else list(self._rows.values())
        found: list[tuple[RowCell, CommandRow]] = []
        for table in tables:
            if table is None:
                continue
            for _key, cell in table.items():
                row = cell.seen_by(tx)
                if (
                    row is not None
                    and row.status in _FINISHED
                    and row.updated_at < cutoff
                    and not cell.held_by_other(tx)
                ):
                    found.append((cell, row))
        found.sort(key=lambda item: item[1].created_at)
        return found

    def delete_command(
        self, tx: MemoryTransaction, cell: RowCell, row: CommandRow
    ) -> tuple[int, int]:
        """Delete the row (not held by another transaction), its audit events and its
        archived messages; returns how many events and archived messages went with it."""
        self._rows[row.domain].delete(tx, cell)
        return (
            _delete_seen(tx, self._audit.get(row.command_id), lambda e: e.domain == row.domain),
            _delete_seen(tx, self._archive.get((command_queue(row.domain), row.command_id))),
        )

    # -- audit -------------------------------------------------------------------------

    def append_audit(
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
            encode(details) if details is not None else None,
        )
        log = self._audit.get(command_id)
        if log is None:
            log = self._audit[command_id] = TxLog()
        log.append(tx, event)

    def audit_trail(
        self, tx: MemoryTransaction, command_id: UUID, domain: str | None
    ) -> list[AuditEvent]:
        log = self._audit.get(command_id)
        if log is None:
            return []
        return [row.event() for row in log.seen_by(tx) if domain is None or row.domain == domain]

    # -- archive -----------------------------------------------------------------------

    def archive_message(
        self,
        tx: MemoryTransaction,
        command_id: UUID | None,
        msg: StoredMessage,
        now: datetime,
    ) -> None:
        """Archive a removed message, found again by ``(queue, command_id)``."""
        entry = ArchivedMessage(msg.msg_id, msg.queue, msg.body, msg.enqueued_at, now, msg.read_ct)
        key = (msg.queue, command_id)
        log = self._archive.get(key)
        if log is None:
            log = self._archive[key] = TxLog()
        log.append(tx, entry)

    def latest_archived(
        self, tx: MemoryTransaction, domain: str, command_id: UUID
    ) -> ArchivedMessage | None:
        log = self._archive.get((command_queue(domain), command_id))
        return log.latest_seen_by(tx) if log is not None else None


_Row = TypeVar("_Row")


def _delete_seen(
    tx: MemoryTransaction,
    log: TxLog[_Row] | None,
    keep_unless: Callable[[_Row], bool] | None = None,
) -> int:
    """Delete the rows of ``log`` that ``tx`` sees (and that ``keep_unless`` selects),
    leaving any another open transaction holds; returns how many."""
    if log is None:
        return 0
    deleted = 0
    for cell in list(log.cells()):
        value = cell.seen_by(tx)
        if value is None or cell.held_by_other(tx):
            continue
        if keep_unless is None or keep_unless(value):
            log.delete(tx, cell)
            deleted += 1
    return deleted
