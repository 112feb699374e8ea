"""The troubleshooting queue (TSQ): commands that need an operator.

Each operator action runs in one transaction that first locks the command row, so two
operators acting on the same command at once produce exactly one effect; the second gets
``InvalidOperationError`` because the command is no longer in the TSQ.
"""

from __future__ import annotations

import logging
from uuid import UUID

from commandbus.backends import BackendSource, backend_from
from commandbus.errors import CommandNotFoundError, InvalidOperationError
from commandbus.models import (
    CommandMetadata,
    JsonObject,
    TroubleshootingItem,
)
from commandbus.ops import decisions
from commandbus.ports import Backend, CommandOperations, CommandQueries, Conn
from commandbus.validation import (
    MAX_BATCH_LIMIT,
    MAX_PAYLOAD_BYTES,
    encode_payload,
    validate_command_type,
    validate_count,
    validate_name,
    validate_optional_text,
    validate_text,
    validate_uuid,
)

logger = logging.getLogger(__name__)

#: Limits on what an operator types: stored in the audit trail and sent in replies.
MAX_OPERATOR_CHARS = 200
MAX_REASON_CHARS = 10_000


def _operator(operator: object) -> str | None:
    return validate_optional_text(operator, "operator", MAX_OPERATOR_CHARS)


def _command_type(command_type: object) -> str | None:
    return None if command_type is None else validate_command_type(command_type)


class TroubleshootingQueue:
    def __init__(self, pool: BackendSource, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._backend: Backend = backend_from(pool)
        # The two consumer ports an operator needs: reading the TSQ, acting on it.
        self._queries: CommandQueries = self._backend.commands
        self._operations: CommandOperations = self._backend.commands
        self.max_payload_bytes = max_payload_bytes

    @property
    def backend(self) -> Backend:
        return self._backend

    async def list_troubleshooting(
        self, domain: str, command_type: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[TroubleshootingItem]:
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        validate_count(offset, "offset", 2**31 - 1, minimum=0)
        return await self._queries.list_troubleshooting(
            validate_name(domain), _command_type(command_type), limit, offset
        )

    async def count_troubleshooting(self, domain: str, command_type: str | None = None) -> int:
        return await self._queries.count_troubleshooting(
            validate_name(domain), _command_type(command_type)
        )

    async def operator_retry(
        self, domain: str, command_id: UUID | str, operator: str | None = None
    ) -> None:
        """Put the command back on its queue with its original payload and a fresh
        attempt budget. Its eventual outcome is replied as usual."""
        operator = _operator(operator)
        async with self._backend.transaction() as conn:
            meta = await self._locked(domain, command_id, conn)
            settlement = decisions.retry(meta, operator)
            if not await self._operations.apply_operator(settlement, conn=conn):
                raise InvalidOperationError(
                    f"command {meta.command_id} has no archived payload to retry"
                )
        _log_action("retried", meta, operator)

    async def operator_cancel(
        self,
        domain: str,
        command_id: UUID | str,
        reason: str,
        operator: str | None = None,
    ) -> None:
        """End the command as CANCELED and reply CANCELED to its ``reply_to``."""
        reason = validate_text(reason, "reason", MAX_REASON_CHARS)
        operator = _operator(operator)
        async with self._backend.transaction() as conn:
            meta = await self._locked(domain, command_id, conn)
            settlement = decisions.cancel(meta, reason, operator)
            await self._operations.apply_operator(settlement, conn=conn)
        _log_action("canceled", meta, operator)

    async def operator_complete(
        self,
        domain: str,
        command_id: UUID | str,
        result_data: JsonObject | None = None,
        operator: str | None = None,
    ) -> None:
        """End the command as COMPLETED and reply SUCCESS with ``result_data``."""
        if result_data is not None:
            encode_payload(result_data, "result_data", self.max_payload_bytes)
        operator = _operator(operator)
        async with self._backend.transaction() as conn:
            meta = await self._locked(domain, command_id, conn)
            settlement = decisions.complete(meta, result_data, operator)
            await self._operations.apply_operator(settlement, conn=conn)
        _log_action("completed", meta, operator)

    async def _locked(self, domain: str, command_id: UUID | str, conn: Conn) -> CommandMetadata:
        """The command's row, locked until ``conn`` commits (two operators at once: the
        second waits, then finds the command no longer in the TSQ)."""
        domain = validate_name(domain)
        cid = validate_uuid(command_id)
        meta = await self._operations.lock(domain, cid, conn=conn)
        if meta is None:
            raise CommandNotFoundError(domain, cid)
        return meta


def _log_action(action: str, meta: CommandMetadata, operator: str | None) -> None:
    """An operator's action is rare and worth seeing at the default level."""
    logger.info(
        "command %s (%s) %s by operator %s",
        meta.command_id,
        meta.command_type,
        action,
        operator or "(unnamed)",
        extra={
            "domain": meta.domain,
            "command_id": str(meta.command_id),
            "command_type": meta.command_type,
            "operator": operator,
        },
    )
