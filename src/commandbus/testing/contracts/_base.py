"""Shared hooks and helpers of the storage contract suites (see ``contracts/__init__``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus.models import (
    AuditEventType,
    CommandStatus,
    JsonObject,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SendRequest,
    SendResult,
    SettleAction,
    Settlement,
)
from commandbus.ports import Backend

DOMAIN = "payments"
OTHER_DOMAIN = "reporting"
COMMANDS = "payments__commands"
REPLIES = "payments__replies"
DEFAULT_MAX_ATTEMPTS = 3
A = AuditEventType


class _Rollback(Exception):
    """Raised inside a transaction to make it roll back."""


def request(
    command_type: str = "Debit",
    data: JsonObject | None = None,
    *,
    domain: str = DOMAIN,
    command_id: UUID | None = None,
    correlation_id: UUID | None = None,
    reply_to: str | None = REPLIES,
    max_attempts: int | None = None,
    delay: float | None = None,
) -> SendRequest:
    return SendRequest(
        domain=domain,
        command_type=command_type,
        command_id=command_id or uuid4(),
        data={"amount": 10} if data is None else data,
        correlation_id=correlation_id or uuid4(),
        reply_to=reply_to,
        max_attempts=max_attempts,
        delay=delay,
    )


def expected_message(req: SendRequest) -> JsonObject:
    """The queue message of a sent command, as ``archived_message`` returns it."""
    return {
        "domain": req.domain,
        "command_type": req.command_type,
        "command_id": str(req.command_id),
        "correlation_id": str(req.correlation_id) if req.correlation_id else None,
        "reply_to": req.reply_to,
        "data": req.data,
    }


def reply_for(req: SendRequest, outcome: ReplyOutcome, **fields: Any) -> QueuedReply:
    assert req.reply_to is not None
    return QueuedReply(
        req.reply_to,
        Reply(
            command_id=req.command_id,
            correlation_id=req.correlation_id,
            outcome=outcome,
            domain=req.domain,
            command_type=req.command_type,
            **fields,
        ),
    )


class ContractBase:
    """Hooks every storage contract needs; subclasses provide ``backend`` and ``advance``."""

    """The contract of ``Backend``, ``MessageQueue`` and ``CommandStore`` (see ports.py)."""

    #: Seconds a ``Waiter`` waits in tests that expect it to time out.
    wait_timeout: float = 0.2

    # -- hooks ---------------------------------------------------------------------------

    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        """An empty backend; subclasses override this fixture."""
        raise NotImplementedError("subclass a contract class and provide a `backend` fixture")
        yield  # pragma: no cover

    async def advance(self, backend: Backend, seconds: float) -> None:
        """Make ``seconds`` pass for visibility timeouts and delays of ``backend``."""
        raise NotImplementedError("subclass a contract class and implement advance()")

    async def let_others_run(self) -> None:
        """Give concurrently started tasks the chance to run until they block."""
        for _ in range(50):
            await asyncio.sleep(0)

    # -- helpers -------------------------------------------------------------------------

    async def send(
        self, backend: Backend, *reqs: SendRequest, conn: Any = None
    ) -> list[SendResult]:
        return await backend.commands.insert(list(reqs), DEFAULT_MAX_ATTEMPTS, conn=conn)

    async def audit_types(
        self, backend: Backend, command_id: UUID, domain: str | None = DOMAIN
    ) -> list[AuditEventType]:
        return [e.event_type for e in await backend.commands.audit_trail(command_id, domain)]

    async def wait_expecting_timeout(self, backend: Backend, waiter: Any) -> bool:
        task = asyncio.ensure_future(waiter.wait(self.wait_timeout))
        await self.let_others_run()
        await self.advance(backend, self.wait_timeout + 1)
        result: bool = await task
        return result

    @staticmethod
    def settlement(
        req: SendRequest,
        msg_id: int,
        action: SettleAction,
        status: CommandStatus,
        attempts: int,
        audit: Sequence[tuple[AuditEventType, JsonObject | None]],
        **fields: Any,
    ) -> Settlement:
        return Settlement(
            domain=req.domain,
            command_id=req.command_id,
            msg_id=msg_id,
            action=action,
            status=status,
            attempts=attempts,
            audit=tuple(audit),
            **fields,
        )
