"""Sending in memory: ``CommandSends`` writes new commands (their queue message, command
row and ``SENT`` audit event) as ``insert_command(s)`` does in PostgreSQL; it is the
sending part of ``InMemoryCommandStore``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import UUID

from commandbus.errors import DuplicateCommandError
from commandbus.memory.command_tables import CommandRow, CommandTables, encode
from commandbus.memory.queue import InMemoryMessageQueue
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.models import (
    AuditEventType,
    CommandStatus,
    JsonObject,
    SendRequest,
    SendResult,
)
from commandbus.ports import Conn
from commandbus.validation import command_queue

__all__ = ["CommandSends", "command_message"]


def command_message(
    domain: str,
    command_type: str,
    command_id: UUID,
    data: JsonObject,
    correlation_id: UUID | None,
    reply_to: str | None,
    headers: JsonObject | None = None,
) -> JsonObject:
    """The queue message of a command (its payload as stored and archived)."""
    message: JsonObject = {
        "domain": domain,
        "command_type": command_type,
        "command_id": str(command_id),
        "correlation_id": str(correlation_id) if correlation_id is not None else None,
        "reply_to": reply_to,
        "data": data,
    }
    if headers is not None:
        message["headers"] = headers
    return message


class CommandSends:
    """``insert`` (and ``receive``, a relay's sends): each request's message, row and
    ``SENT`` event in one transaction."""

    _backend: MemoryHost
    _queue: InMemoryMessageQueue
    _tables: CommandTables

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Conn | None = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        if prepare is not None:  # nothing to overlap here: every request first
            requests = [prepare(r) for r in requests]
        async with self._backend.transaction(conn) as tx:
            await self._tables.check_duplicates(tx, requests)
            return self._write_sends(tx, requests, default_max_attempts)

    async def receive(self, tx: MemoryTransaction, requests: Sequence[SendRequest]) -> int:
        """Commands a relay brings from another cluster: each is sent as by ``insert``
        (audit ``SENT`` with ``relayed``) unless its ``(domain, command_id)`` exists, which
        makes a command relayed twice exist once. Returns how many were new."""
        fresh = []
        for req in requests:
            try:
                await self._tables.check_duplicates(tx, [req])
            except DuplicateCommandError:
                continue
            fresh.append(req)
        self._write_sends(tx, fresh, 0, relayed=True)
        return len(fresh)

    def _write_sends(
        self,
        tx: MemoryTransaction,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        relayed: bool = False,
    ) -> list[SendResult]:
        tables = self._tables
        now = self._backend.clock.now()
        results: list[SendResult] = []
        for req in requests:
            body = encode(
                command_message(
                    req.domain,
                    req.command_type,
                    req.command_id,
                    req.data,
                    req.correlation_id,
                    req.reply_to,
                    req.headers,
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
                batch_id=req.batch_id,
            )
            tables.insert_row(tx, row)
            details: JsonObject = {"msg_id": msg_id}
            if relayed:
                details["relayed"] = True
            tables.append_audit(tx, req.domain, req.command_id, AuditEventType.SENT, now, details)
            results.append(SendResult(command_id=req.command_id, msg_id=msg_id))
        return results
