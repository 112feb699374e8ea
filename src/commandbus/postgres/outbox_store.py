"""``PostgresOutboxStore``: the ``OutboxStore`` port on ``commandbus.outbox`` and its
ledgers (migrations 010 and 012; statements in ``sql/outbox_queries.sql``).

Every PostgreSQL backend has one: any database of a topology can receive what a relay
brings. Sending to it is the routing command store's part (``commandbus.postgres.outbox``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from commandbus.clusters.ports import (
    Forwarded,
    OutboxEntry,
    OutboxKind,
    Outgoing,
    OutgoingMessage,
    RelayLag,
)
from commandbus.clusters.routing import received_request
from commandbus.errors import DuplicateCommandError
from commandbus.models import SendRequest
from commandbus.ports import CommandOperations, MessageQueue
from commandbus.postgres.connections import statement_conn, translate_errors
from commandbus.postgres.queries import Queries
from commandbus.postgres.queue import dumps
from commandbus.process.withdrawal import withdraw_relayed_entries

__all__ = ["PostgresOutboxStore"]

Q = Queries("outbox_queries.sql")


class PostgresOutboxStore:
    """``commandbus.clusters.ports.OutboxStore`` on PostgreSQL."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], commands: CommandOperations, queue: MessageQueue
    ) -> None:
        self._pool = pool
        # A relayed withdrawal goes through the operations every withdrawal uses.
        self._commands = commands
        self._queue = queue

    # -- the sender's side (routing command store) ------------------------------------------

    async def add_commands(
        self, requests: Sequence[SendRequest], payloads: Sequence[str], *, conn: Any
    ) -> list[int]:
        """Write remote sends to the outbox in ``conn``'s transaction; their outbox ids.
        ``DuplicateCommandError`` when a command id was forwarded to its domain before."""
        params = {
            "domains": [r.domain for r in requests],
            "command_ids": [r.command_id for r in requests],
            "payloads": list(payloads),
        }
        with translate_errors():
            cur = await conn.execute(Q.add_to_outbox, params)
            row = await cur.fetchone()
        assert row is not None
        ids, duplicates = row[0] or [], row[1]
        if duplicates:
            first = next(r for r in requests if r.command_id in set(duplicates))
            raise DuplicateCommandError(
                first.domain, [r.command_id for r in requests if r.command_id in duplicates]
            )
        return list(ids)

    # -- the relay ----------------------------------------------------------------------

    async def take(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        conn: Any,
        domains: Sequence[str] | None = None,
    ) -> Outgoing:
        params = {"limit": limit, "domains": None if domains is None else list(domains)}
        with translate_errors():
            cur = await conn.execute(Q.take_outbox, params)
            rows = await cur.fetchall()
            cur = await conn.execute(
                Q.take_outgoing_messages, {"queues": list(queues), "limit": limit}
            )
            messages = await cur.fetchall()
        return Outgoing(
            tuple(OutboxEntry(r[0], OutboxKind(r[1]), r[2], r[3], r[4]) for r in rows),
            tuple(OutgoingMessage(m[0], m[1], m[2]) for m in messages),
        )

    async def drop(self, outgoing: Outgoing, *, conn: Any) -> int:
        params = {
            "ids": [e.id for e in outgoing.entries],
            "msg_ids": [m.msg_id for m in outgoing.messages],
        }
        with translate_errors():
            cur = await conn.execute(Q.drop_relayed, params)
            row = await cur.fetchone()
        return 0 if row is None else int(row[0]) + int(row[1])

    async def receive(self, outgoing: Outgoing, *, conn: Any) -> int:
        received = 0
        commands = [e for e in outgoing.entries if e.kind is OutboxKind.COMMAND]
        with translate_errors():
            if commands:
                params = _receive_params([e.payload for e in commands])
                cur = await conn.execute(Q.receive_commands, params)
                row = await cur.fetchone()
                received += int(row[0]) if row is not None else 0
            if outgoing.messages:
                keys = [m.relay_key for m in outgoing.messages]
                params = {
                    "queues": [m.queue for m in outgoing.messages],
                    "command_ids": [k[0] for k in keys],
                    "source_msg_ids": [k[1] for k in keys],
                    "messages": [dumps(m.message) for m in outgoing.messages],
                }
                cur = await conn.execute(Q.receive_messages, params)
                row = await cur.fetchone()
                received += int(row[0]) if row is not None else 0
        received += await withdraw_relayed_entries(
            self._commands, self._queue, outgoing.entries, conn=conn
        )
        return received

    async def lag(self) -> RelayLag:
        async with statement_conn(self._pool, None) as conn:
            cur = await conn.execute(Q.outbox_lag)
            row = await cur.fetchone()
        assert row is not None
        pending, oldest, now, parked = row
        age = (now - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
        return RelayLag(int(pending), max(age, 0.0), int(parked))

    async def park(self, entry_id: int, error: str) -> bool:
        async with statement_conn(self._pool, None) as conn:
            cur = await conn.execute(Q.park_outbox_row, {"id": entry_id, "error": error})
            return bool(cur.rowcount > 0)

    async def prune(self, before: datetime) -> int:
        async with statement_conn(self._pool, None) as conn:
            cur = await conn.execute(Q.prune_ledgers, {"before": before})
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    # -- withdrawals ----------------------------------------------------------------------

    async def lock_forwarded(self, command_id: UUID, *, conn: Any) -> Forwarded | None:
        with translate_errors():
            cur = await conn.execute(Q.lock_forwarded, {"command_id": command_id})
            row = await cur.fetchone()
        if row is None:
            return None
        return Forwarded(command_id, row[0], pending=row[1] is not None)

    async def withdraw_forwarded(
        self, forwarded: Forwarded, process_id: UUID, reason: str, *, conn: Any
    ) -> bool:
        params = {"command_id": forwarded.command_id, "domain": forwarded.domain}
        with translate_errors():
            if forwarded.pending:
                await conn.execute(Q.drop_pending_command, params)
                return True
            payload = dumps({"process_id": str(process_id), "reason": reason})
            await conn.execute(Q.add_withdrawal, {**params, "payload": payload})
        return False


def _receive_params(payloads: list[Any]) -> dict[str, Any]:
    requests = [received_request(p) for p in payloads]
    return {
        "domains": [r.domain for r in requests],
        "command_ids": [r.command_id for r in requests],
        "command_types": [r.command_type for r in requests],
        "data": [dumps(r.data) for r in requests],
        "correlation_ids": [r.correlation_id for r in requests],
        "reply_tos": [r.reply_to for r in requests],
        "max_attempts": [r.max_attempts for r in requests],
        "delays": [r.delay or 0.0 for r in requests],
        "headers": [None if r.headers is None else dumps(r.headers) for r in requests],
    }
