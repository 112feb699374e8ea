"""``PostgresCommandStore``: command rows, their queue messages, audit trail and archive.

The hot paths (``insert``, ``claim``, ``settle``) are one statement each for a whole
batch; see ``sql/queries.sql`` for what each statement does and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commandbus.errors import DuplicateCommandError
from commandbus.models import (
    AuditEvent,
    AuditEventType,
    ClaimedCommand,
    Command,
    CommandMetadata,
    CommandQuery,
    CommandStatus,
    JsonObject,
    SendRequest,
    SendResult,
    SettleAction,
    Settlement,
    TroubleshootingItem,
)
from commandbus.postgres.connections import statement_conn, transaction_conn
from commandbus.postgres.queries import Queries
from commandbus.postgres.queue import dumps
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


def command_message(request: SendRequest) -> JsonObject:
    """The queue message of a command (ids as strings)."""
    return {
        "domain": request.domain,
        "command_type": request.command_type,
        "command_id": str(request.command_id),
        "correlation_id": str(request.correlation_id) if request.correlation_id else None,
        "reply_to": request.reply_to,
        "data": request.data,
    }


def _repeated_ids(requests: Sequence[SendRequest]) -> tuple[str, list[UUID]] | None:
    """The first domain with a command id repeated within one call, and those ids."""
    seen: set[tuple[str, UUID]] = set()
    repeated: dict[str, list[UUID]] = {}
    for request in requests:
        key = (request.domain, request.command_id)
        if key in seen:
            repeated.setdefault(request.domain, []).append(request.command_id)
        seen.add(key)
    if not repeated:
        return None
    domain = next(iter(repeated))
    return domain, repeated[domain]


class PostgresCommandStore:
    """Commands in ``commandbus.command`` / ``audit`` / ``queue_message`` / ``queue_archive``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    # -- sending -------------------------------------------------------------------------

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Any | None = None,
    ) -> list[SendResult]:
        if not requests:
            return []
        repeated = _repeated_ids(requests)
        if repeated is not None:
            raise DuplicateCommandError(*repeated)
        params = {
            "domains": [r.domain for r in requests],
            "command_ids": [r.command_id for r in requests],
            "command_types": [r.command_type for r in requests],
            "messages": [dumps(command_message(r)) for r in requests],
            "correlation_ids": [r.correlation_id for r in requests],
            "reply_tos": [r.reply_to for r in requests],
            "max_attempts": [
                r.max_attempts if r.max_attempts is not None else default_max_attempts
                for r in requests
            ],
            "delays": [float(r.delay or 0.0) for r in requests],
        }
        # A transaction of its own, or a savepoint in the caller's: when a row was skipped
        # as a duplicate, raising inside undoes the rest of this call and nothing else.
        async with transaction_conn(self._pool, conn) as c:
            cur = await c.execute(Q.insert_commands, params)
            rows = await cur.fetchall()
            duplicates = [(row[1], row[2]) for row in rows if not row[4]]
            if duplicates:
                domain = duplicates[0][0]
                raise DuplicateCommandError(domain, [cid for d, cid in duplicates if d == domain])
        return [SendResult(command_id=row[2], msg_id=row[3]) for row in rows]

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
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.claim_commands, params)
            rows = await cur.fetchall()
        return [
            ClaimedCommand(
                msg_id=r["msg_id"],
                command=Command(
                    domain=domain,
                    command_type=r["command_type"],
                    command_id=r["command_id"],
                    data=r["data"] if isinstance(r["data"], dict) else {},
                    correlation_id=r["correlation_id"],
                    reply_to=r["reply_to"],
                    created_at=r["created_at"],
                ),
                attempt=r["attempts"],
                max_attempts=r["max_attempts"],
            )
            for r in rows
        ]

    async def settle(self, settlements: Sequence[Settlement], *, conn: Any | None = None) -> None:
        if not settlements:
            return
        audit = [(s, event, details) for s in settlements for event, details in s.audit]
        replies = [s.reply for s in settlements if s.reply is not None]
        params = {
            "domains": [s.domain for s in settlements],
            "command_ids": [s.command_id for s in settlements],
            "msg_ids": [s.msg_id for s in settlements],
            "remove_msg_ids": [s.msg_id for s in settlements if s.action is not SettleAction.RETRY],
            "retry_msg_ids": [s.msg_id for s in settlements if s.action is SettleAction.RETRY],
            "domain_set": sorted({s.domain for s in settlements}),
            "actions": [s.action.value for s in settlements],
            "statuses": [s.status.value for s in settlements],
            "attempts": [s.attempts for s in settlements],
            "delays": [float(s.retry_delay) for s in settlements],
            "error_types": [s.error_type for s in settlements],
            "error_codes": [s.error_code for s in settlements],
            "error_messages": [s.error_message for s in settlements],
            "audit_domains": [s.domain for s, _, _ in audit],
            "audit_command_ids": [s.command_id for s, _, _ in audit],
            "audit_types": [event.value for _, event, _ in audit],
            "audit_details": [None if d is None else dumps(d) for _, _, d in audit],
            "reply_queues": [r.queue for r in replies],
            "reply_messages": [dumps(r.reply.to_message()) for r in replies],
        }
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.settle, params)

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
        conn: Any | None = None,
    ) -> None:
        params = {
            "domain": domain,
            "command_id": command_id,
            "status": status.value,
            "attempts": attempts,
            "msg_id": msg_id,
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
