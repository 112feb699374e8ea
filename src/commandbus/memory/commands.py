"""In-memory command store: the ``CommandStore`` port on the in-memory tables and queues.

Each method does in one transaction what the PostgreSQL adapter's statement does (see
``commandbus/postgres/sql/queries.sql``), on the tables of ``commandbus.memory.
command_tables`` and the queues of ``commandbus.memory.queue``; their rows give it
PostgreSQL's visibility, row locks and rollback (``commandbus.memory.rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from commandbus.activity import DEFAULT_ACTIVITY_LIMIT, CommandActivity, check_window
from commandbus.memory.batches import BatchChange, BatchTables
from commandbus.memory.command_tables import (
    CommandRow,
    CommandTables,
    ErrorFields,
    RowCell,
    decode_object,
    encode,
)
from commandbus.memory.queue import InMemoryMessageQueue, MessageCell, StoredMessage
from commandbus.memory.sending import CommandSends, command_message
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
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
    PrunedHistory,
    SettleAction,
    Settlement,
    TroubleshootingItem,
)
from commandbus.ports import Conn
from commandbus.validation import command_queue

__all__ = ["InMemoryCommandStore", "command_message"]


class InMemoryCommandStore(CommandSends):
    """``CommandStore`` port in memory; see ``commandbus.ports.CommandStore`` (sending:
    ``CommandSends``)."""

    def __init__(
        self, backend: MemoryHost, queue: InMemoryMessageQueue, batches: BatchTables
    ) -> None:
        self._backend = backend
        self._queue = queue
        self._tables = CommandTables()
        #: Commands of batches move between their batch's counters in the transaction
        #: that changes their status (as the SQL calls count_batch_changes).
        self._batches = batches

    # -- retention ---------------------------------------------------------------------

    async def prune_finished(
        self,
        finished_before: datetime,
        *,
        domain: str | None = None,
        batch_size: int = 5_000,
        on_batch: Callable[[PrunedHistory], None] | None = None,
    ) -> PrunedHistory:
        total = PrunedHistory()
        while True:
            commands = events = archived = 0
            async with self._backend.transaction(None) as tx:
                for cell, row in self._tables.finished_before(tx, finished_before, domain):
                    if commands == batch_size:
                        break
                    queue = self._queue.state(command_queue(row.domain))
                    if row.msg_id is not None and queue.get(tx, row.msg_id) is not None:
                        continue  # its message is still queued (a stale redelivery)
                    gone_events, gone_archived = self._tables.delete_command(tx, cell, row)
                    commands += 1
                    events += gone_events
                    archived += gone_archived
            batch = PrunedHistory(commands, events, archived)
            total += batch
            if on_batch is not None:
                on_batch(batch)
            if commands < batch_size:
                return total

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
            tables = self._tables
            queue = command_queue(domain)
            now = self._backend.clock.now()
            vt = now + timedelta(seconds=float(visibility_timeout))
            # Like the SQL claim: pick up to ``limit`` visible messages; delete those of
            # terminal commands (stale redeliveries), archive those without a command row
            # (nothing is lost), lease the rest.
            live: list[tuple[MessageCell, StoredMessage, RowCell, JsonObject]] = []
            for cell, msg in self._queue.pick(tx, queue, limit):
                message = decode_object(msg.body) or {}
                row_cell = self._message_row(tx, domain, message)
                seen = row_cell.seen_by(tx) if row_cell is not None else None
                if row_cell is None or seen is None:
                    self._queue.remove(tx, cell, msg)
                    tables.archive_message(tx, None, msg, now)
                elif seen.status.is_terminal:
                    self._queue.remove(tx, cell, msg)
                else:
                    live.append((cell, msg, row_cell, message))
            claimed: list[ClaimedCommand] = []
            started: list[UUID] = []
            live.sort(key=lambda item: item[1].msg_id)
            for cell, msg, row_cell, message in live:
                # Updating the row waits for a transaction that holds it (an operator), then
                # re-checks it: a command that became terminal meanwhile is not claimed.
                # Unlike the SQL, the message is leased only once its row is locked, so a
                # claim waiting for a row never holds that row's message: a settlement that
                # holds the row and removes the message cannot end up waiting for the claim
                # (PostgreSQL detects that deadlock and aborts one of the two; this backend
                # detects none).
                row = await row_cell.lock(tx)
                if row is None or cell.held_by_other(tx) or cell.seen_by(tx) is not msg:
                    continue  # another transaction took the message meanwhile
                self._queue.lease(tx, cell, msg, vt)
                if row.status.is_terminal:
                    continue
                row = row.updated(CommandStatus.IN_PROGRESS, row.attempts + 1, now)
                row_cell.write(tx, row)
                if row.batch_id is not None:
                    started.append(row.batch_id)
                tables.append_audit(
                    tx,
                    domain,
                    row.command_id,
                    AuditEventType.RECEIVED,
                    now,
                    {"attempt": row.attempts, "msg_id": msg.msg_id},
                )
                data = message.get("data")
                headers = message.get("headers")
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
                            headers=headers if isinstance(headers, dict) else None,
                        ),
                        attempt=row.attempts,
                        max_attempts=row.max_attempts,
                    )
                )
            if started:
                self._batches.start(tx, domain, started)
            return claimed

    def _message_row(
        self, tx: MemoryTransaction, domain: str, message: JsonObject
    ) -> RowCell | None:
        try:
            command_id = UUID(str(message.get("command_id")))
        except ValueError:
            return None
        return self._tables.row_cell(tx, domain, command_id)

    async def settle(self, settlements: Sequence[Settlement], *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            tables = self._tables
            # Like the SQL: a settlement is applied only if its row is still IN_PROGRESS
            # with the settlement's attempts (the current delivery), one at most per row;
            # any other settlement writes nothing.
            current: list[tuple[Settlement, RowCell, CommandRow]] = []
            settled: set[tuple[str, UUID]] = set()
            for s in settlements:
                key = (s.domain, s.command_id)
                locked = await tables.locked_row(tx, s.domain, s.command_id)
                if (
                    locked is not None
                    and key not in settled
                    and locked[1].status is CommandStatus.IN_PROGRESS
                    and locked[1].attempts == s.attempts
                ):
                    settled.add(key)
                    current.append((s, *locked))
            for s, row_cell, row in current:
                now = self._backend.clock.now()
                taken = await self._queue.take(tx, command_queue(s.domain), s.msg_id)
                if taken is not None:
                    cell, msg = taken
                    if s.action is SettleAction.RETRY:
                        self._queue.set_vt(tx, cell, msg, now + timedelta(seconds=s.retry_delay))
                    else:
                        self._queue.remove(tx, cell, msg)
                        if s.action is SettleAction.ARCHIVE:
                            tables.archive_message(tx, s.command_id, msg, now)
                error: ErrorFields | None = None
                if s.error_type is not None:
                    error = (s.error_type, s.error_code, s.error_message)
                row_cell.write(tx, row.updated(s.status, s.attempts, now, error=error))
                for event_type, details in s.audit:
                    tables.append_audit(tx, s.domain, s.command_id, event_type, now, details)
                if s.reply is not None:
                    self._queue.put(tx, s.reply.queue, encode(s.reply.reply.to_message()))
            # A settlement applies to an IN_PROGRESS row only: that is the status left.
            changes: list[BatchChange] = [
                (s.domain, row.batch_id, CommandStatus.IN_PROGRESS.value, s.status.value)
                for s, _, row in current
                if row.batch_id is not None
            ]
            if changes:
                await self._batches.count_changes(tx, changes)
            return len(current)

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> CommandMetadata | None:
        async with self._backend.transaction(conn) as tx:
            row = self._tables.get(tx, domain, command_id)
            return row.metadata() if row is not None else None

    async def lock(self, domain: str, command_id: UUID, *, conn: Conn) -> CommandMetadata | None:
        async with self._backend.transaction(conn) as tx:
            locked = await self._tables.locked_row(tx, domain, command_id)
            return locked[1].metadata() if locked is not None else None

    async def query(
        self, query: CommandQuery, *, conn: Conn | None = None
    ) -> list[CommandMetadata]:
        async with self._backend.transaction(conn) as tx:
            rows = [
                row
                for row in self._tables.rows_seen_by(tx, query.domain)
                if (query.status is None or row.status == query.status)
                and (query.command_type is None or row.command_type == query.command_type)
                and (query.created_after is None or row.created_at >= query.created_after)
                and (query.created_before is None or row.created_at < query.created_before)
                and (query.correlation_id is None or row.correlation_id == query.correlation_id)
                and (query.batch_id is None or row.batch_id == query.batch_id)
            ]
            rows.sort(key=lambda r: (r.created_at, r.command_id), reverse=True)
            start = max(query.offset, 0)
            return [row.metadata() for row in rows[start : start + max(query.limit, 0)]]

    async def audit_trail(
        self, command_id: UUID, domain: str | None = None, *, conn: Conn | None = None
    ) -> list[AuditEvent]:
        async with self._backend.transaction(conn) as tx:
            return self._tables.audit_trail(tx, command_id, domain)

    async def archived_message(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> JsonObject | None:
        async with self._backend.transaction(conn) as tx:
            archived = self._tables.latest_archived(tx, domain, command_id)
            return decode_object(archived.body) if archived is not None else None

    async def apply_operator(self, settlement: OperatorSettlement, *, conn: Conn) -> bool:
        domain, command_id = settlement.domain, settlement.command_id
        async with self._backend.transaction(conn) as tx:
            msg_id: int | None = None
            if settlement.requeue:
                archived = self._tables.latest_archived(tx, domain, command_id)
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
                body = encode(settlement.reply.reply.to_message())
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
                archived = self._tables.latest_archived(tx, domain, row.command_id)
                message = decode_object(archived.body) if archived is not None else None
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

    async def activity(
        self,
        since: datetime,
        *,
        minutes: int = 60,
        limit: int = DEFAULT_ACTIVITY_LIMIT,
        conn: Conn | None = None,
    ) -> CommandActivity:
        check_window(since, limit, minutes)
        async with self._backend.transaction(conn) as tx:
            rows = [r for r in self._tables.rows_seen_by(tx, None) if r.created_at >= since]
        # As the query reads them: the newest limit + 1, newest first.
        rows.sort(key=lambda r: (r.created_at, r.command_id), reverse=True)
        sample = [
            (r.domain, CommandStatus(r.status).value, r.created_at, r.updated_at)
            for r in rows[: limit + 1]
        ]
        return CommandActivity.build(since, minutes, limit, sample)

    def _troubleshooting_rows(
        self, tx: MemoryTransaction, domain: str, command_type: str | None
    ) -> list[CommandRow]:
        return [
            row
            for row in self._tables.rows_seen_by(tx, domain)
            if row.status == CommandStatus.IN_TROUBLESHOOTING_QUEUE
            and (command_type is None or row.command_type == command_type)
        ]

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
                self._tables.append_audit(tx, domain, command_id, event_type, now, details)

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
            locked = await self._tables.locked_row(tx, domain, command_id)
            if locked is None:  # like an UPDATE matching no row
                return
            cell, row = locked
            new = row.updated(
                status,
                row.attempts if attempts is None else attempts,
                self._backend.clock.now(),
                msg_id=msg_id,
                error=last_error,
            )
            cell.write(tx, new)
            if row.batch_id is not None and row.status is not status:
                change = (domain, row.batch_id, row.status.value, status.value)
                await self._batches.count_changes(tx, [change])
