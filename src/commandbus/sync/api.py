"""The synchronous API: ``SyncCommandBus``, ``SyncTroubleshootingQueue``, ``SyncProcesses``.

Each is bound to one ``psycopg.Connection`` (a web request's) and runs every call on it,
inside its open transaction (as a savepoint, so a refused call leaves the transaction
usable), or — with no transaction open — in a transaction of its own. Each method is the
async method of the same name run by ``run_sync`` (``commandbus.sync._bridge``): one
implementation, whose signature the sync one repeats (a test keeps the two alike).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from commandbus.batches.models import (
    BatchCommand,
    BatchKind,
    BatchMetadata,
    BatchStatus,
    CreateBatchResult,
    ProcessBatch,
)
from commandbus.bus import CommandBus
from commandbus.models import (
    AuditEvent,
    CommandMetadata,
    CommandStatus,
    JsonObject,
    SendRequest,
    SendResult,
    TroubleshootingItem,
)
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.process.base import BaseProcessManager
from commandbus.sync._bridge import bound_backend, run_sync, view_of
from commandbus.telemetry import Telemetry
from commandbus.validation import MAX_PAYLOAD_BYTES

__all__ = ["SyncCommandBus", "SyncProcesses", "SyncTroubleshootingQueue"]


class SyncCommandBus:
    """``CommandBus`` for synchronous code (Django and Flask views, scripts)::

        with pool.connection() as conn, conn.transaction():   # psycopg_pool.ConnectionPool
            conn.execute("INSERT INTO orders ...")
            SyncCommandBus(conn).send("orders", "ShipOrder", data={"order": 42})

    The command commits or rolls back with the order. ``bus`` is the async
    ``CommandBus`` on the same connection (build process managers with it)."""

    def __init__(
        self,
        connection: psycopg.Connection[Any],
        *,
        retry_policy: RetryPolicy | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.bus = CommandBus(
            bound_backend(connection),
            retry_policy=retry_policy,
            max_payload_bytes=max_payload_bytes,
            telemetry=telemetry,
        )

    def send(
        self,
        domain: str,
        command_type: str,
        command_id: UUID | str | None = None,
        data: JsonObject | None = None,
        correlation_id: UUID | str | None = None,
        reply_to: str | None = None,
        max_attempts: int | None = None,
        delay: float | None = None,
        batch_id: UUID | str | None = None,
    ) -> SendResult:
        """``CommandBus.send`` in the connection's transaction."""
        return run_sync(
            self.bus.send(
                domain,
                command_type,
                command_id,
                data,
                correlation_id,
                reply_to,
                max_attempts,
                delay,
                batch_id=batch_id,
            )
        )

    def send_batch(self, requests: Iterable[SendRequest]) -> list[SendResult]:
        """``CommandBus.send_batch`` in the connection's transaction."""
        return run_sync(self.bus.send_batch(requests))

    def create_batch(
        self,
        domain: str,
        commands: Sequence[BatchCommand],
        *,
        name: str | None = None,
        reply_to: str | None = None,
        batch_id: UUID | str | None = None,
        keep_open: bool = False,
    ) -> CreateBatchResult:
        """``CommandBus.create_batch`` in the connection's transaction."""
        return run_sync(
            self.bus.create_batch(
                domain,
                commands,
                name=name,
                reply_to=reply_to,
                batch_id=batch_id,
                keep_open=keep_open,
            )
        )

    def close_batch(self, domain: str, batch_id: UUID | str) -> BatchMetadata:
        return run_sync(self.bus.close_batch(domain, batch_id))

    def get_batch(self, domain: str, batch_id: UUID | str) -> BatchMetadata | None:
        return run_sync(self.bus.get_batch(domain, batch_id))

    def list_batches(
        self,
        domain: str | None = None,
        status: BatchStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        kind: BatchKind | str | None = None,
    ) -> list[BatchMetadata]:
        return run_sync(self.bus.list_batches(domain, status, limit, offset, kind))

    def get_command(self, domain: str, command_id: UUID | str) -> CommandMetadata | None:
        return run_sync(self.bus.get_command(domain, command_id))

    def query_commands(
        self,
        status: CommandStatus | str | None = None,
        domain: str | None = None,
        command_type: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        correlation_id: UUID | str | None = None,
        batch_id: UUID | str | None = None,
    ) -> list[CommandMetadata]:
        return run_sync(
            self.bus.query_commands(
                status,
                domain,
                command_type,
                created_after,
                created_before,
                limit,
                offset,
                correlation_id,
                batch_id,
            )
        )

    def get_audit_trail(
        self, command_id: UUID | str, domain: str | None = None
    ) -> list[AuditEvent]:
        return run_sync(self.bus.get_audit_trail(command_id, domain))


class SyncTroubleshootingQueue:
    """``TroubleshootingQueue`` on one connection: each action runs in its transaction
    (a savepoint of it), and locks the command row until that transaction ends."""

    def __init__(
        self, connection: psycopg.Connection[Any], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self.tsq = TroubleshootingQueue(
            bound_backend(connection), max_payload_bytes=max_payload_bytes
        )

    def list_troubleshooting(
        self, domain: str, command_type: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[TroubleshootingItem]:
        return run_sync(self.tsq.list_troubleshooting(domain, command_type, limit, offset))

    def count_troubleshooting(self, domain: str, command_type: str | None = None) -> int:
        return run_sync(self.tsq.count_troubleshooting(domain, command_type))

    def operator_retry(
        self, domain: str, command_id: UUID | str, operator: str | None = None
    ) -> None:
        run_sync(self.tsq.operator_retry(domain, command_id, operator))

    def operator_cancel(
        self, domain: str, command_id: UUID | str, reason: str, operator: str | None = None
    ) -> None:
        run_sync(self.tsq.operator_cancel(domain, command_id, reason, operator))

    def operator_complete(
        self,
        domain: str,
        command_id: UUID | str,
        result_data: JsonObject | None = None,
        operator: str | None = None,
    ) -> None:
        run_sync(self.tsq.operator_complete(domain, command_id, result_data, operator))


class SyncProcesses:
    """Start processes of ``manager`` (a ``BaseProcessManager``, built on any backend) on
    one connection, in its transaction: the process row, its first command and audit
    entry commit with the caller's writes."""

    def __init__(
        self, connection: psycopg.Connection[Any], manager: BaseProcessManager[Any, Any]
    ) -> None:
        self.manager = manager
        self._conn = view_of(bound_backend(connection))

    def start(self, initial_data: dict[str, Any], process_id: UUID | str | None = None) -> UUID:
        """``BaseProcessManager.start`` in the connection's transaction."""
        return run_sync(self.manager.start(initial_data, process_id, conn=self._conn))

    def start_many(
        self,
        items: Sequence[dict[str, Any] | tuple[UUID | str | None, dict[str, Any]]],
        *,
        batch: ProcessBatch | None = None,
    ) -> list[UUID]:
        """``BaseProcessManager.start_many`` in the connection's transaction."""
        return run_sync(self.manager.start_many(items, conn=self._conn, batch=batch))
