"""``PostgresCommandStore``: command rows, their queue messages, audit trail and archive.

The hot paths (``insert``, ``claim``, ``settle``) are one statement each for a whole
batch; see ``sql/queries.sql`` for what each statement does and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commandbus.activity import DEFAULT_ACTIVITY_LIMIT, CommandActivity
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
    Settlement,
    TroubleshootingItem,
)
from commandbus.postgres.activity import command_activity
from commandbus.postgres.connections import fast_cursor, statement_conn
from commandbus.postgres.history import HistoryPruning
from commandbus.postgres.queries import Queries
from commandbus.postgres.queue import dumps
from commandbus.postgres.sending import CommandInserts
from commandbus.validation import command_queue

Q = Queries()


def _metadata(row: dict[str, Any]) -> CommandMetadata:
    return CommandMetadata(
        domain=row["domain"],
        command_id=row["command_id"],
        command_type=row["command_type"],
        status=CommandStatus(row["status"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        correlation_id=row["correlation_id"],
        reply_to=row["reply_to"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_error_type=row["last_error_type"],
        last_error_code=row["last_error_code"],
        last_error_msg=row["last_error_msg"],
        msg_id=row["msg_id"],
        batch_id=row["batch_id"],
    )


class PostgresCommandStore(CommandInserts, HistoryPruning):
    """Commands in ``commandbus.command`` / ``audit`` / ``queue_message`` / ``queue_archive``
    (sending: ``CommandInserts``; retention: ``HistoryPruning``)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    # -- workers -------------------------------------------------------------------------

    async def claim(
        self,
        domain: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Any | None = None,
    ) -> list[ClaimedCommand]:
        if limit <= 0:
            return []
        params = {
            "queue": command_queue(domain),
            "domain": domain,
            "limit": limit,
            "vt": float(visibility_timeout),
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.claim_commands, params)
            rows = await cur.fetchall()
        # Columns: msg_id, command_id, command_type, attempts, max_attempts,
        # correlation_id, reply_to, created_at, data, headers.
        return [
            ClaimedCommand(
                msg_id=r[0],
                command=Command(
                    domain=domain,
                    command_type=r[2],
                    command_id=r[1],
                    data=r[8] if isinstance(r[8], dict) else {},
                    correlation_id=r[5],
                    reply_to=r[6],
                    created_at=r[7],
                    headers=r[9] if isinstance(r[9], dict) else None,
                ),
                attempt=r[3],
                max_attempts=r[4],
            )
            for r in rows
        ]

    async def settle(self, settlements: Sequence[Settlement], *, conn: Any | None = None) -> int:
        if not settlements:
            return 0
        # One pass over the settlements (this runs for every command a worker handles).
        domains: list[str] = []
        command_ids: list[UUID] = []
        msg_ids: list[int] = []
        actions: list[str] = []
        statuses: list[str] = []
        attempts: list[int] = []
        delays: list[float] = []
        error_types: list[str | None] = []
        error_codes: list[str | None] = []
        error_messages: list[str | None] = []
        # Audit events and replies name their settlement (its ordinal, from 1): they are
        # written only when it settles the current delivery.
        audit_settlements: list[int] = []
        audit_domains: list[str] = []
        audit_command_ids: list[UUID] = []
        audit_types: list[str] = []
        audit_details: list[str | None] = []
        reply_settlements: list[int] = []
        reply_queues: list[str] = []
        reply_messages: list[str] = []
        for ord_, s in enumerate(settlements, 1):
            domains.append(s.domain)
            command_ids.append(s.command_id)
            msg_ids.append(s.msg_id)
            actions.append(s.action.value)
            statuses.append(s.status.value)
            attempts.append(s.attempts)
            delays.append(float(s.retry_delay))
            error_types.append(s.error_type)
            error_codes.append(s.error_code)
            error_messages.append(s.error_message)
            for event, details in s.audit:
                audit_settlements.append(ord_)
                audit_domains.append(s.domain)
                audit_command_ids.append(s.command_id)
                audit_types.append(event.value)
                audit_details.append(None if details is None else dumps(details))
            if s.reply is not None:
                reply_settlements.append(ord_)
                reply_queues.append(s.reply.queue)
                reply_messages.append(dumps(s.reply.reply.to_message()))
        params = {
            "domains": domains,
            "command_ids": command_ids,
            "msg_ids": msg_ids,
            "domain_set": sorted(set(domains)),
            "actions": actions,
            "statuses": statuses,
            "attempts": attempts,
            "delays": delays,
            "error_types": error_types,
            "error_codes": error_codes,
            "error_messages": error_messages,
            "audit_settlements": audit_settlements,
            "audit_domains": audit_domains,
            "audit_command_ids": audit_command_ids,
            "audit_types": audit_types,
            "audit_details": audit_details,
            "reply_settlements": reply_settlements,
            "reply_queues": reply_queues,
            "reply_messages": reply_messages,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.settle, params)
            row = await cur.fetchone()
        assert row is not None
        applied: int = row[0]
        return applied

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, domain: str, command_id: UUID, *, conn: Any | None = None
    ) -> CommandMetadata | None:
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.get_command, {"domain": domain, "command_id": command_id})
            row = await cur.fetchone()
        return None if row is None else _metadata(row)

    async def lock(self, domain: str, command_id: UUID, *, conn: Any) -> CommandMetadata | None:
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.lock_command, {"domain": domain, "command_id": command_id})
            row = await cur.fetchone()
        return None if row is None else _metadata(row)

    async def query(self, query: CommandQuery, *, conn: Any | None = None) -> list[CommandMetadata]:
        params = {
            "domain": query.domain,
            "status": query.status.value if query.status is not None else None,
            "command_type": query.command_type,
            "created_after": query.created_after,
            "created_before": query.created_before,
            "limit": query.limit,
            "offset": query.offset,
            "correlation_id": query.correlation_id,
            "batch_id": query.batch_id,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.query_commands, params)
            rows = await cur.fetchall()
        return [_metadata(r) for r in rows]

    async def audit_trail(
        self, command_id: UUID, domain: str | None = None, *, conn: Any | None = None
    ) -> list[AuditEvent]:
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.audit_trail, {"command_id": command_id, "domain": domain})
            rows = await cur.fetchall()
        return [
            AuditEvent(
                domain=r["domain"],
                command_id=r["command_id"],
                event_type=AuditEventType(r["event_type"]),
                timestamp=r["ts"],
                details=r["details"],
            )
            for r in rows
        ]

    # -- writes used by the core and by operators ----------------------------------------

    async def append_audit(
        self,
        domain: str,
        command_id: UUID,
        events: Sequence[tuple[AuditEventType, JsonObject | None]],
        *,
        conn: Any | None = None,
    ) -> None:
        if not events:
            return
        params = {
            "domain": domain,
            "command_id": command_id,
            "event_types": [event.value for event, _ in events],
            "details": [None if d is None else dumps(d) for _, d in events],
        }
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.append_audit, params)

    async def set_status(
        self,
        domain: str,
        command_id: UUID,
        status: CommandStatus,
        *,
        attempts: int | None = None,
        msg_id: int | None = None,
        last_error: tuple[str, str, str] | None = None,
        conn: Any | None = None,
    ) -> None:
        error_type, error_code, error_msg = last_error or (None, None, None)
        params = {
            "domain": domain,
            "command_id": command_id,
            "status": status.value,
            "attempts": attempts,
            "msg_id": msg_id,
            "set_error": last_error is not None,
            "error_type": error_type,
            "error_code": error_code,
            "error_msg": error_msg,
        }
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.set_status, params)

    # -- troubleshooting -----------------------------------------------------------------

    async def archived_message(
        self, domain: str, command_id: UUID, *, conn: Any | None = None
    ) -> JsonObject | None:
        params = {"queue": command_queue(domain), "command_id": command_id}
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.archived_message, params)
            row = await cur.fetchone()
        if row is None:
            return None
        message: JsonObject = row[0]
        return message

    async def apply_operator(self, settlement: OperatorSettlement, *, conn: Any) -> bool:
        domain, command_id = settlement.domain, settlement.command_id
        async with statement_conn(self._pool, conn) as c:
            msg_id: int | None = None
            if settlement.requeue:
                message = await self.archived_message(domain, command_id, conn=c)
                if message is None:
                    return False
                msg_id = await _enqueue_one(c, command_queue(domain), message)
            await self.set_status(
                domain,
                command_id,
                settlement.status,
                attempts=0 if settlement.requeue else None,
                msg_id=msg_id,
                conn=c,
            )
            await self.append_audit(domain, command_id, settlement.audit, conn=c)
            if settlement.reply is not None:
                await _enqueue_one(c, settlement.reply.queue, settlement.reply.reply.to_message())
        return True

    async def list_troubleshooting(
        self,
        domain: str,
        command_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        conn: Any | None = None,
    ) -> list[TroubleshootingItem]:
        params = {
            "domain": domain,
            "queue": command_queue(domain),
            "command_type": command_type,
            "limit": limit,
            "offset": offset,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.list_troubleshooting, params)
            rows = await cur.fetchall()
        return [
            TroubleshootingItem(
                domain=r["domain"],
                command_id=r["command_id"],
                command_type=r["command_type"],
                data=r["data"] if isinstance(r["data"], dict) else {},
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
                last_error_type=r["last_error_type"],
                last_error_code=r["last_error_code"],
                last_error_msg=r["last_error_msg"],
                correlation_id=r["correlation_id"],
                reply_to=r["reply_to"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def count_troubleshooting(
        self, domain: str, command_type: str | None = None, *, conn: Any | None = None
    ) -> int:
        params = {"domain": domain, "command_type": command_type}
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.count_troubleshooting, params)
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def activity(
        self,
        since: datetime,
        *,
        minutes: int = 60,
        limit: int = DEFAULT_ACTIVITY_LIMIT,
        conn: Any | None = None,
    ) -> CommandActivity:
        return await command_activity(self._pool, since, minutes, limit, conn)


async def _enqueue_one(conn: Any, queue: str, message: JsonObject) -> int:
    cur = await conn.execute(
        Q.enqueue, {"queue": queue, "messages": [dumps(message)], "delay": 0.0}
    )
    row = await cur.fetchone()
    assert row is not None
    msg_id: int = row[0][0]
    return msg_id
