"""Behaviour tests of the storage ports, written once and run against every backend.

Subclass ``BackendContract`` in a test module as ``Test…``, provide the ``backend``
fixture and the ``advance`` hook (and, for a real database, ``let_others_run`` and
``wait_timeout``)::

    class TestMemoryBackend(BackendContract):
        @pytest.fixture
        async def backend(self) -> InMemoryBackend:
            return InMemoryBackend(clock=VirtualClock())

        async def advance(self, backend, seconds):
            await backend.clock.advance(seconds)

The class name has no ``Test`` prefix, so importing it does not collect it. Every test
starts from an empty backend and pins exact values (statuses, attempts, orders).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus.errors import DuplicateCommandError
from commandbus.models import (
    AuditEventType,
    CommandQuery,
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

__all__ = ["BackendContract"]

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


class BackendContract:
    """The contract of ``Backend``, ``MessageQueue`` and ``CommandStore`` (see ports.py)."""

    #: Seconds a ``Waiter`` waits in tests that expect it to time out.
    wait_timeout: float = 0.2

    # -- hooks ---------------------------------------------------------------------------

    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        """An empty backend; subclasses override this fixture."""
        raise NotImplementedError("subclass BackendContract and provide a `backend` fixture")
        yield  # pragma: no cover

    async def advance(self, backend: Backend, seconds: float) -> None:
        """Make ``seconds`` pass for visibility timeouts and delays of ``backend``."""
        raise NotImplementedError("subclass BackendContract and implement advance()")

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

    # -- send ----------------------------------------------------------------------------

    async def test_insert_writes_message_row_and_sent_audit(self, backend: Backend) -> None:
        req = request(data={"amount": 42, "nested": {"list": [1, 2.5, "x", None, True]}})
        custom = request("Credit", max_attempts=7, reply_to=None)
        results = await self.send(backend, req, custom)

        assert [r.command_id for r in results] == [req.command_id, custom.command_id]
        assert results[0].msg_id < results[1].msg_id
        assert await backend.queue.depth(COMMANDS) == 2

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert meta.domain == DOMAIN
        assert meta.command_type == "Debit"
        assert meta.status is CommandStatus.PENDING
        assert meta.attempts == 0
        assert meta.max_attempts == DEFAULT_MAX_ATTEMPTS
        assert meta.correlation_id == req.correlation_id
        assert meta.reply_to == REPLIES
        assert meta.msg_id == results[0].msg_id
        assert meta.created_at == meta.updated_at
        assert meta.created_at.tzinfo is not None
        assert (meta.last_error_type, meta.last_error_code, meta.last_error_msg) == (
            None,
            None,
            None,
        )

        other = await backend.commands.get(DOMAIN, custom.command_id)
        assert other is not None
        assert (other.max_attempts, other.reply_to, other.command_type) == (7, None, "Credit")

        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT]
        assert trail[0].details == {"msg_id": results[0].msg_id}
        assert trail[0].domain == DOMAIN
        assert trail[0].command_id == req.command_id
        assert await backend.commands.get(OTHER_DOMAIN, req.command_id) is None

    async def test_send_then_claim_returns_command_with_attempt_1(self, backend: Backend) -> None:
        req = request(data={"amount": 5, "currency": "EUR"})
        [sent] = await self.send(backend, req)

        claimed = await backend.commands.claim(DOMAIN, 10, 30)

        assert len(claimed) == 1
        got = claimed[0]
        assert got.msg_id == sent.msg_id
        assert got.attempt == 1
        assert got.max_attempts == DEFAULT_MAX_ATTEMPTS
        assert got.command.domain == DOMAIN
        assert got.command.command_type == "Debit"
        assert got.command.command_id == req.command_id
        assert got.command.data == {"amount": 5, "currency": "EUR"}
        assert got.command.correlation_id == req.correlation_id
        assert got.command.reply_to == REPLIES
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert got.command.created_at == meta.created_at
        assert meta.status is CommandStatus.IN_PROGRESS
        assert meta.attempts == 1

        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, A.RECEIVED]
        assert trail[1].details == {"attempt": 1, "msg_id": sent.msg_id}
        # The message is invisible now, but still there.
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        assert await backend.queue.depth(COMMANDS) == 1

    async def test_claim_takes_oldest_first_up_to_limit(self, backend: Backend) -> None:
        reqs = [request(data={"n": i}) for i in range(5)]
        results = await self.send(backend, *reqs[:3])
        results += await self.send(backend, *reqs[3:])
        await self.send(backend, request(domain=OTHER_DOMAIN, reply_to=None))

        first = await backend.commands.claim(DOMAIN, 2, 30)
        second = await backend.commands.claim(DOMAIN, 10, 30)

        assert [c.msg_id for c in first] == [r.msg_id for r in results[:2]]
        assert [c.command.data for c in first] == [{"n": 0}, {"n": 1}]
        assert [c.msg_id for c in second] == [r.msg_id for r in results[2:]]
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        other = await backend.commands.claim(OTHER_DOMAIN, 10, 30)
        assert [c.command.domain for c in other] == [OTHER_DOMAIN]

    async def test_visibility_timeout_expiry_redelivers_with_attempt_2(
        self, backend: Backend
    ) -> None:
        req = request()
        [sent] = await self.send(backend, req)
        [first] = await backend.commands.claim(DOMAIN, 1, 30)

        await self.advance(backend, 20)
        assert await backend.commands.claim(DOMAIN, 1, 30) == []
        await self.advance(backend, 11)
        [second] = await backend.commands.claim(DOMAIN, 1, 30)

        assert (first.attempt, second.attempt) == (1, 2)
        assert second.msg_id == sent.msg_id
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.IN_PROGRESS, 2)
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, A.RECEIVED, A.RECEIVED]
        assert [e.details for e in trail[1:]] == [
            {"attempt": 1, "msg_id": sent.msg_id},
            {"attempt": 2, "msg_id": sent.msg_id},
        ]

    async def test_delayed_send_is_not_visible_before_its_delay(self, backend: Backend) -> None:
        late = request(delay=60)
        await self.send(backend, late)
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        assert await backend.queue.depth(COMMANDS) == 1

        await self.advance(backend, 50)
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        await self.advance(backend, 11)
        [claimed] = await backend.commands.claim(DOMAIN, 10, 30)
        assert claimed.command.command_id == late.command_id
        assert claimed.attempt == 1

    async def test_claim_deletes_stale_message_of_terminal_command(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        await backend.commands.claim(DOMAIN, 1, 30)
        # Completed elsewhere (e.g. by an operator) while its message still exists.
        await backend.commands.set_status(DOMAIN, req.command_id, CommandStatus.COMPLETED)

        await self.advance(backend, 31)
        assert await backend.commands.claim(DOMAIN, 10, 30) == []

        assert await backend.queue.depth(COMMANDS) == 0
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.COMPLETED, 1)
        assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED]

    async def test_claim_returns_deliveries_beyond_max_attempts(self, backend: Backend) -> None:
        req = request(max_attempts=1)
        await self.send(backend, req)
        [first] = await backend.commands.claim(DOMAIN, 1, 30)
        await self.advance(backend, 31)  # the worker crashed: the lease runs out
        [second] = await backend.commands.claim(DOMAIN, 1, 30)
        assert (first.attempt, second.attempt) == (1, 2)
        assert second.max_attempts == 1  # the core decides what to do with it

    async def test_empty_inputs_write_nothing(self, backend: Backend) -> None:
        assert await backend.commands.insert([], DEFAULT_MAX_ATTEMPTS) == []
        await self.send(backend, request())
        assert await backend.commands.claim(DOMAIN, 0, 30) == []
        assert await backend.commands.settle([]) == 0
        assert await backend.queue.enqueue(REPLIES, []) == []
        assert await backend.queue.read(COMMANDS, 0, 30) == []
        assert await backend.queue.delete(COMMANDS, []) == 0
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.queue.depth(REPLIES) == 0
        [claimed] = await backend.commands.claim(DOMAIN, 5, 30)
        assert claimed.attempt == 1

    # -- duplicates ----------------------------------------------------------------------

    async def test_duplicate_within_one_call_raises_and_writes_nothing(
        self, backend: Backend
    ) -> None:
        dup = request()
        other = request()
        with pytest.raises(DuplicateCommandError) as raised:
            await self.send(backend, dup, other, dup)

        assert raised.value.domain == DOMAIN
        assert raised.value.command_ids == [dup.command_id]
        assert str(dup.command_id) in str(raised.value)
        assert await backend.commands.get(DOMAIN, dup.command_id) is None
        assert await backend.commands.get(DOMAIN, other.command_id) is None
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.commands.audit_trail(dup.command_id) == []
        assert await backend.commands.audit_trail(other.command_id) == []

    async def test_duplicate_across_calls_raises_and_writes_nothing(self, backend: Backend) -> None:
        first = request(data={"v": 1})
        await self.send(backend, first)
        fresh = request()
        again = request(data={"v": 2}, command_id=first.command_id)

        with pytest.raises(DuplicateCommandError) as raised:
            await self.send(backend, fresh, again)

        assert raised.value.command_ids == [first.command_id]
        assert await backend.commands.get(DOMAIN, fresh.command_id) is None
        assert await backend.queue.depth(COMMANDS) == 1
        assert await self.audit_types(backend, first.command_id) == [A.SENT]
        [claimed] = await backend.commands.claim(DOMAIN, 10, 30)
        assert claimed.command.data == {"v": 1}

    async def test_duplicate_inside_a_transaction_leaves_the_transaction_usable(
        self, backend: Backend
    ) -> None:
        taken = request()
        await self.send(backend, taken)
        mine = request()
        async with backend.transaction() as conn:
            await self.send(backend, mine, conn=conn)
            with pytest.raises(DuplicateCommandError):
                await self.send(backend, request(), taken, conn=conn)
            [extra] = await backend.queue.enqueue(REPLIES, [{"after": "duplicate"}], conn=conn)
        assert await backend.commands.get(DOMAIN, mine.command_id) is not None
        assert await backend.queue.depth(COMMANDS) == 2
        [msg] = await backend.queue.read(REPLIES, 5, 30)
        assert msg.msg_id == extra

    async def test_same_command_id_in_another_domain_is_not_a_duplicate(
        self, backend: Backend
    ) -> None:
        req = request()
        twin = request(domain=OTHER_DOMAIN, command_id=req.command_id, reply_to=None)
        await self.send(backend, req, twin)

        assert (await backend.commands.get(DOMAIN, req.command_id)) is not None
        assert (await backend.commands.get(OTHER_DOMAIN, req.command_id)) is not None
        trail = await backend.commands.audit_trail(req.command_id)
        assert [(e.domain, e.event_type) for e in trail] == [
            (DOMAIN, A.SENT),
            (OTHER_DOMAIN, A.SENT),
        ]
        assert await self.audit_types(backend, req.command_id, OTHER_DOMAIN) == [A.SENT]

    # -- settle --------------------------------------------------------------------------

    async def test_settle_delete_completes_and_replies(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        reply = reply_for(req, ReplyOutcome.SUCCESS, data={"balance": 90})

        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    1,
                    [(A.COMPLETED, {"attempt": 1})],
                    reply=reply,
                )
            ]
        )

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.COMPLETED, 1)
        assert meta.last_error_type is None
        assert meta.updated_at >= meta.created_at
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, A.RECEIVED, A.COMPLETED]
        assert trail[2].details == {"attempt": 1}
        replies = await backend.queue.read(REPLIES, 10, 30)
        assert [m.message for m in replies] == [reply.reply.to_message()]
        assert replies[0].message["result"] == {"balance": 90}
        assert replies[0].read_count == 1

    async def test_settle_retry_keeps_message_until_backoff_then_redelivers(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 300)

        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.RETRY,
                    CommandStatus.PENDING,
                    1,
                    [(A.FAILED, {"error_code": "TIMEOUT"}), (A.RETRY_SCHEDULED, {"delay": 10})],
                    retry_delay=10,
                    error_type="TransientCommandError",
                    error_code="TIMEOUT",
                    error_message="upstream timed out",
                )
            ]
        )

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.PENDING, 1)
        assert (meta.last_error_type, meta.last_error_code, meta.last_error_msg) == (
            "TransientCommandError",
            "TIMEOUT",
            "upstream timed out",
        )
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.queue.depth(REPLIES) == 0
        await self.advance(backend, 5)
        assert await backend.commands.claim(DOMAIN, 1, 30) == []
        await self.advance(backend, 6)
        [again] = await backend.commands.claim(DOMAIN, 1, 30)
        assert again.msg_id == claimed.msg_id
        assert again.attempt == 2
        assert await self.audit_types(backend, req.command_id) == [
            A.SENT,
            A.RECEIVED,
            A.FAILED,
            A.RETRY_SCHEDULED,
            A.RECEIVED,
        ]

    async def test_settle_archive_moves_to_troubleshooting(self, backend: Backend) -> None:
        req = request("Debit", {"amount": 77, "account": "A-1"})
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        notice = reply_for(
            req,
            ReplyOutcome.IN_TROUBLESHOOTING_QUEUE,
            error_code="BROKEN",
            error_message="cannot parse",
        )

        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.ARCHIVE,
                    CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                    1,
                    [(A.FAILED, None), (A.MOVED_TO_TSQ, {"reason": "permanent"})],
                    error_type="PermanentCommandError",
                    error_code="BROKEN",
                    error_message="cannot parse",
                    reply=notice,
                )
            ]
        )

        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        await self.advance(backend, 60)
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
        assert meta.last_error_code == "BROKEN"
        assert await backend.commands.archived_message(DOMAIN, req.command_id) == (
            expected_message(req)
        )
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, A.RECEIVED, A.FAILED, A.MOVED_TO_TSQ]
        assert [e.details for e in trail[2:]] == [None, {"reason": "permanent"}]
        [item] = await backend.commands.list_troubleshooting(DOMAIN)
        assert item.command_id == req.command_id
        assert item.command_type == "Debit"
        assert item.data == {"amount": 77, "account": "A-1"}
        assert (item.attempts, item.max_attempts) == (1, DEFAULT_MAX_ATTEMPTS)
        assert (item.last_error_type, item.last_error_code, item.last_error_msg) == (
            "PermanentCommandError",
            "BROKEN",
            "cannot parse",
        )
        assert (item.correlation_id, item.reply_to) == (req.correlation_id, REPLIES)
        assert await backend.commands.count_troubleshooting(DOMAIN) == 1
        [msg] = await backend.queue.read(REPLIES, 10, 30)
        assert msg.message == notice.reply.to_message()
        assert msg.message["outcome"] == "IN_TROUBLESHOOTING_QUEUE"

    async def test_settle_without_error_type_keeps_last_error(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.RETRY,
                    CommandStatus.PENDING,
                    1,
                    [(A.FAILED, None)],
                    error_type="TransientCommandError",
                    error_code="E1",
                    error_message="first",
                )
            ]
        )
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    2,
                    [(A.COMPLETED, None)],
                )
            ]
        )

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.COMPLETED, 2)
        assert (meta.last_error_type, meta.last_error_code, meta.last_error_msg) == (
            "TransientCommandError",
            "E1",
            "first",
        )
        assert await backend.queue.depth(REPLIES) == 0

    async def test_settle_many_in_one_call(self, backend: Backend) -> None:
        ok, bad = request(), request(reply_to=None)
        await self.send(backend, ok, bad)
        claimed = {c.command.command_id: c for c in await backend.commands.claim(DOMAIN, 10, 30)}

        await backend.commands.settle(
            [
                self.settlement(
                    ok,
                    claimed[ok.command_id].msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    1,
                    [(A.COMPLETED, None)],
                    reply=reply_for(ok, ReplyOutcome.SUCCESS),
                ),
                self.settlement(
                    bad,
                    claimed[bad.command_id].msg_id,
                    SettleAction.ARCHIVE,
                    CommandStatus.FAILED,
                    1,
                    [(A.BUSINESS_RULE_FAILED, {"code": "NO_FUNDS"})],
                    error_type="BusinessRuleException",
                    error_code="NO_FUNDS",
                    error_message="insufficient funds",
                ),
            ]
        )

        statuses = [await backend.commands.get(DOMAIN, r.command_id) for r in (ok, bad)]
        assert [m.status if m else None for m in statuses] == [
            CommandStatus.COMPLETED,
            CommandStatus.FAILED,
        ]
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.queue.depth(REPLIES) == 1
        assert await backend.commands.archived_message(DOMAIN, bad.command_id) == (
            expected_message(bad)
        )
        # FAILED is terminal, not a troubleshooting item.
        assert await backend.commands.count_troubleshooting(DOMAIN) == 0

    async def test_settle_of_a_stale_delivery_is_skipped(self, backend: Backend) -> None:
        req = request()
        [sent] = await self.send(backend, req)
        [first] = await backend.commands.claim(DOMAIN, 1, 30)
        await self.advance(backend, 31)  # the first handler overran its lease
        [second] = await backend.commands.claim(DOMAIN, 1, 30)
        assert (first.msg_id, second.msg_id) == (sent.msg_id, sent.msg_id)
        assert (first.attempt, second.attempt) == (1, 2)

        def completed(attempt: int) -> Settlement:
            return self.settlement(
                req,
                sent.msg_id,
                SettleAction.DELETE,
                CommandStatus.COMPLETED,
                attempt,
                [(A.COMPLETED, {"attempt": attempt})],
                reply=reply_for(req, ReplyOutcome.SUCCESS, data={"attempt": attempt}),
            )

        stale = [
            completed(1),
            self.settlement(
                req,
                sent.msg_id,
                SettleAction.ARCHIVE,
                CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                1,
                [(A.MOVED_TO_TSQ, None)],
                error_type="PermanentCommandError",
                error_code="P",
                error_message="p",
                reply=reply_for(req, ReplyOutcome.IN_TROUBLESHOOTING_QUEUE),
            ),
            self.settlement(
                req,
                sent.msg_id,
                SettleAction.RETRY,
                CommandStatus.PENDING,
                1,
                [(A.RETRY_SCHEDULED, None)],
                retry_delay=100,
                error_type="TransientCommandError",
                error_code="T",
                error_message="t",
            ),
        ]
        for settlement in stale:
            assert await backend.commands.settle([settlement]) == 0

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts, meta.last_error_type) == (
            CommandStatus.IN_PROGRESS,
            2,
            None,
        )
        assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED, A.RECEIVED]
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.queue.depth(REPLIES) == 0
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        assert await backend.commands.count_troubleshooting(DOMAIN) == 0
        # The message keeps the second delivery's lease (no retry pushed its vt).
        assert await backend.commands.claim(DOMAIN, 1, 30) == []

        assert await backend.commands.settle([completed(2)]) == 1
        # Settled now: a late settlement of either delivery is stale.
        assert await backend.commands.settle([completed(1)]) == 0
        assert await backend.commands.settle([completed(2)]) == 0

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.COMPLETED, 2)
        assert await self.audit_types(backend, req.command_id) == [
            A.SENT,
            A.RECEIVED,
            A.RECEIVED,
            A.COMPLETED,
        ]
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert trail[-1].details == {"attempt": 2}
        assert await backend.queue.depth(COMMANDS) == 0
        replies = await backend.queue.read(REPLIES, 10, 30)
        expected = reply_for(req, ReplyOutcome.SUCCESS, data={"attempt": 2})
        assert [m.message for m in replies] == [expected.reply.to_message()]

    async def test_settle_applies_only_the_current_delivery_of_one_call(
        self, backend: Backend
    ) -> None:
        req, other = request(), request()
        await self.send(backend, req, other)
        [first] = await backend.commands.claim(DOMAIN, 1, 30)
        assert first.command.command_id == req.command_id
        await self.advance(backend, 31)
        claimed = {c.command.command_id: c for c in await backend.commands.claim(DOMAIN, 5, 30)}
        second = claimed[req.command_id]
        assert second.attempt == 2

        applied = await backend.commands.settle(
            [
                self.settlement(
                    req,
                    first.msg_id,
                    SettleAction.ARCHIVE,
                    CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                    1,
                    [(A.FAILED, None), (A.MOVED_TO_TSQ, None)],
                    error_type="PermanentCommandError",
                    error_code="P",
                    error_message="p",
                    reply=reply_for(req, ReplyOutcome.IN_TROUBLESHOOTING_QUEUE),
                ),
                self.settlement(
                    other,
                    claimed[other.command_id].msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    1,
                    [(A.COMPLETED, None)],
                    reply=reply_for(other, ReplyOutcome.SUCCESS),
                ),
                self.settlement(
                    req,
                    second.msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    2,
                    [(A.COMPLETED, {"attempt": 2})],
                    reply=reply_for(req, ReplyOutcome.SUCCESS),
                ),
            ]
        )

        assert applied == 2
        for r, attempts in ((req, 2), (other, 1)):
            meta = await backend.commands.get(DOMAIN, r.command_id)
            assert meta is not None
            assert (meta.status, meta.attempts, meta.last_error_type) == (
                CommandStatus.COMPLETED,
                attempts,
                None,
            )
        assert await self.audit_types(backend, req.command_id) == [
            A.SENT,
            A.RECEIVED,
            A.RECEIVED,
            A.COMPLETED,
        ]
        assert await self.audit_types(backend, other.command_id) == [
            A.SENT,
            A.RECEIVED,
            A.COMPLETED,
        ]
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        replies = await backend.queue.read(REPLIES, 10, 30)
        assert [(m.message["command_id"], m.message["outcome"]) for m in replies] == [
            (str(other.command_id), "SUCCESS"),
            (str(req.command_id), "SUCCESS"),
        ]

    async def test_settle_of_a_command_moved_by_an_operator_is_skipped(
        self, backend: Backend
    ) -> None:
        req = request()
        [sent] = await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        # An operator cancels it while the handler runs (same attempts, another status).
        await backend.commands.set_status(DOMAIN, req.command_id, CommandStatus.CANCELED)

        settlement = self.settlement(
            req,
            claimed.msg_id,
            SettleAction.DELETE,
            CommandStatus.COMPLETED,
            1,
            [(A.COMPLETED, None)],
            reply=reply_for(req, ReplyOutcome.SUCCESS),
        )
        assert await backend.commands.settle([settlement]) == 0

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.CANCELED, 1)
        assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED]
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.queue.depth(REPLIES) == 0
        # A command without a row is not settled either.
        ghost = self.settlement(
            request(), sent.msg_id, SettleAction.DELETE, CommandStatus.COMPLETED, 1, []
        )
        assert await backend.commands.settle([ghost]) == 0
        assert await backend.queue.depth(COMMANDS) == 1

    # -- transactions --------------------------------------------------------------------

    async def test_rolled_back_transaction_leaves_nothing(self, backend: Backend) -> None:
        req = request()
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await self.send(backend, req, conn=conn)
                await backend.queue.enqueue(REPLIES, [{"k": 1}], conn=conn)
                assert await backend.commands.get(DOMAIN, req.command_id, conn=conn) is not None
                raise _Rollback

        assert await backend.commands.get(DOMAIN, req.command_id) is None
        assert await backend.commands.audit_trail(req.command_id) == []
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.queue.depth(REPLIES) == 0
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        # The id is free again.
        [sent] = await self.send(backend, req)
        assert sent.command_id == req.command_id

    async def test_rolled_back_settlement_restores_previous_state(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)

        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await backend.commands.settle(
                    [
                        self.settlement(
                            req,
                            claimed.msg_id,
                            SettleAction.ARCHIVE,
                            CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                            1,
                            [(A.MOVED_TO_TSQ, None)],
                            error_type="X",
                            error_code="Y",
                            error_message="Z",
                            reply=reply_for(req, ReplyOutcome.IN_TROUBLESHOOTING_QUEUE),
                        )
                    ],
                    conn=conn,
                )
                raise _Rollback

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts, meta.last_error_type) == (
            CommandStatus.IN_PROGRESS,
            1,
            None,
        )
        assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED]
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.queue.depth(REPLIES) == 0
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        assert await backend.commands.count_troubleshooting(DOMAIN) == 0
        # The message is still leased by the claim, then comes back.
        assert await backend.commands.claim(DOMAIN, 1, 30) == []
        await self.advance(backend, 31)
        [again] = await backend.commands.claim(DOMAIN, 1, 30)
        assert again.attempt == 2

    async def test_rolled_back_claim_restores_message_and_attempts(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)

        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                [claimed] = await backend.commands.claim(DOMAIN, 1, 30, conn=conn)
                assert claimed.attempt == 1
                raise _Rollback

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.PENDING, 0)
        assert await self.audit_types(backend, req.command_id) == [A.SENT]
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        assert claimed.attempt == 1

    async def test_joined_transaction_rolls_back_only_its_own_part(self, backend: Backend) -> None:
        kept, dropped = request(), request()
        async with backend.transaction() as conn:
            await self.send(backend, kept, conn=conn)
            with pytest.raises(_Rollback):
                async with backend.transaction(conn) as inner:
                    await self.send(backend, dropped, conn=inner)
                    raise _Rollback
            # The outer transaction is still usable.
            assert await backend.commands.get(DOMAIN, kept.command_id, conn=conn) is not None
            assert await backend.commands.get(DOMAIN, dropped.command_id, conn=conn) is None

        assert await backend.commands.get(DOMAIN, kept.command_id) is not None
        assert await backend.commands.get(DOMAIN, dropped.command_id) is None
        assert await backend.queue.depth(COMMANDS) == 1

    async def test_joined_transaction_commits_with_its_outer_transaction(
        self, backend: Backend
    ) -> None:
        req = request()
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                async with backend.transaction(conn) as inner:
                    await self.send(backend, req, conn=inner)
                raise _Rollback

        assert await backend.commands.get(DOMAIN, req.command_id) is None
        assert await backend.queue.depth(COMMANDS) == 0

    async def test_uncommitted_send_is_invisible_to_others(self, backend: Backend) -> None:
        req = request()
        async with backend.transaction() as conn:
            await self.send(backend, req, conn=conn)
            assert await backend.commands.get(DOMAIN, req.command_id) is None
            assert await backend.commands.claim(DOMAIN, 10, 30) == []
            assert await backend.commands.audit_trail(req.command_id) == []

        [claimed] = await backend.commands.claim(DOMAIN, 10, 30)
        assert claimed.command.command_id == req.command_id

    async def test_concurrent_duplicate_send_raises_after_first_commits(
        self, backend: Backend
    ) -> None:
        req = request()
        async with backend.transaction() as conn:
            await self.send(backend, req, conn=conn)
            racer = asyncio.ensure_future(self.send(backend, req))
            await self.let_others_run()
            assert not racer.done()  # waits for the first sender, like a unique index
        with pytest.raises(DuplicateCommandError):
            await racer
        assert await backend.queue.depth(COMMANDS) == 1

    async def test_concurrent_duplicate_send_succeeds_after_first_rolls_back(
        self, backend: Backend
    ) -> None:
        req = request()
        racer: asyncio.Future[list[SendResult]] | None = None
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await self.send(backend, req, conn=conn)
                racer = asyncio.ensure_future(self.send(backend, req))
                await self.let_others_run()
                raise _Rollback
        assert racer is not None
        [sent] = await racer
        assert sent.command_id == req.command_id
        assert await backend.queue.depth(COMMANDS) == 1

    # -- locks and operator writes ---------------------------------------------------------

    async def test_lock_set_status_and_append_audit(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        [new_msg_id] = await backend.queue.enqueue(COMMANDS, [expected_message(req)])

        async with backend.transaction() as conn:
            meta = await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            assert meta is not None
            assert meta.status is CommandStatus.PENDING
            await backend.commands.set_status(
                DOMAIN,
                req.command_id,
                CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                attempts=3,
                msg_id=new_msg_id,
                conn=conn,
            )
            await backend.commands.append_audit(
                DOMAIN,
                req.command_id,
                [(A.OPERATOR_RETRY, {"operator": "alice"}), (A.OPERATOR_CANCEL, None)],
                conn=conn,
            )

        after = await backend.commands.get(DOMAIN, req.command_id)
        assert after is not None
        assert (after.status, after.attempts, after.msg_id) == (
            CommandStatus.IN_TROUBLESHOOTING_QUEUE,
            3,
            new_msg_id,
        )
        assert after.updated_at >= meta.updated_at
        # set_status without attempts / msg_id leaves them alone.
        await backend.commands.set_status(DOMAIN, req.command_id, CommandStatus.CANCELED)
        final = await backend.commands.get(DOMAIN, req.command_id)
        assert final is not None
        assert (final.status, final.attempts, final.msg_id) == (
            CommandStatus.CANCELED,
            3,
            new_msg_id,
        )
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [(e.event_type, e.details) for e in trail] == [
            (A.SENT, trail[0].details),
            (A.OPERATOR_RETRY, {"operator": "alice"}),
            (A.OPERATOR_CANCEL, None),
        ]

    async def test_lock_of_unknown_command_is_none(self, backend: Backend) -> None:
        async with backend.transaction() as conn:
            assert await backend.commands.lock(DOMAIN, uuid4(), conn=conn) is None

    async def test_two_transactions_locking_a_row_serialise(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        seen: list[CommandStatus | None] = []

        async def second() -> None:
            async with backend.transaction() as conn:
                meta = await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
                seen.append(meta.status if meta else None)
                await backend.commands.set_status(
                    DOMAIN, req.command_id, CommandStatus.COMPLETED, conn=conn
                )

        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            task = asyncio.ensure_future(second())
            await self.let_others_run()
            assert not task.done()
            assert seen == []
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
            )
        await task

        assert seen == [CommandStatus.CANCELED]
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert meta.status is CommandStatus.COMPLETED

    async def test_claim_waits_for_a_locked_command_then_claims_it(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            task = asyncio.ensure_future(backend.commands.claim(DOMAIN, 10, 30))
            await self.let_others_run()
            assert not task.done()
        [claimed] = await asyncio.wait_for(task, 10)
        assert (claimed.command.command_id, claimed.attempt) == (req.command_id, 1)

    async def test_claim_skips_a_command_made_terminal_while_it_waited(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.send(backend, req)
        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            task = asyncio.ensure_future(backend.commands.claim(DOMAIN, 10, 30))
            await self.let_others_run()
            assert not task.done()
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
            )
        assert await asyncio.wait_for(task, 10) == []
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.CANCELED, 0)
        assert await self.audit_types(backend, req.command_id) == [A.SENT]

    async def test_uncommitted_status_change_is_invisible_to_other_readers(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.send(backend, req)
        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.IN_TROUBLESHOOTING_QUEUE, conn=conn
            )
            mine = await backend.commands.get(DOMAIN, req.command_id, conn=conn)
            theirs = await backend.commands.get(DOMAIN, req.command_id)
            assert mine is not None and theirs is not None
            assert (mine.status, theirs.status) == (
                CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                CommandStatus.PENDING,
            )
            assert await backend.commands.count_troubleshooting(DOMAIN) == 0
            assert await backend.commands.count_troubleshooting(DOMAIN, conn=conn) == 1
            pending = await backend.commands.query(CommandQuery(status=CommandStatus.PENDING))
            assert [m.command_id for m in pending] == [req.command_id]
        assert await backend.commands.count_troubleshooting(DOMAIN) == 1
        assert await backend.commands.query(CommandQuery(status=CommandStatus.PENDING)) == []

    async def test_claim_waits_for_an_uncommitted_cancel_that_then_rolls_back(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.send(backend, req)
        task: asyncio.Future[Any] | None = None
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
                await backend.commands.set_status(
                    DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
                )
                # The claim reads the committed row (PENDING) and waits for the lock.
                task = asyncio.ensure_future(backend.commands.claim(DOMAIN, 10, 30))
                await self.let_others_run()
                assert not task.done()
                raise _Rollback
        assert task is not None
        [claimed] = await asyncio.wait_for(task, 10)
        assert (claimed.command.command_id, claimed.attempt) == (req.command_id, 1)
        assert await backend.queue.depth(COMMANDS) == 1

    async def test_claim_waits_for_an_uncommitted_cancel_then_skips_the_command(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.send(backend, req)
        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
            )
            task = asyncio.ensure_future(backend.commands.claim(DOMAIN, 10, 30))
            await self.let_others_run()
            assert not task.done()
        assert await asyncio.wait_for(task, 10) == []
        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.CANCELED, 0)
        # The skipped message is deleted as stale once its lease runs out.
        await self.advance(backend, 31)
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        assert await backend.queue.depth(COMMANDS) == 0

    async def test_claim_archives_a_message_without_command_row(self, backend: Backend) -> None:
        await backend.queue.enqueue(COMMANDS, [{"command_id": str(uuid4()), "data": {}}])
        await backend.queue.enqueue(COMMANDS, [{"not": "a command"}])
        req = request()
        await self.send(backend, req)

        claimed = await backend.commands.claim(DOMAIN, 10, 30)

        assert [c.command.command_id for c in claimed] == [req.command_id]
        assert await backend.queue.depth(COMMANDS) == 1

    # -- queries -------------------------------------------------------------------------

    async def test_query_filters_orders_newest_first_and_pages(self, backend: Backend) -> None:
        older = [request("Debit"), request("Credit")]
        await self.send(backend, *older)
        await self.advance(backend, 10)
        newer = [request("Debit"), request("Debit")]
        await self.send(backend, *newer)
        await self.send(backend, request("Debit", domain=OTHER_DOMAIN, reply_to=None))
        await backend.commands.claim(DOMAIN, 1, 30)  # older[0] -> IN_PROGRESS

        def ids(metas: Sequence[Any]) -> list[UUID]:
            return [m.command_id for m in metas]

        by_time = sorted(newer, key=lambda r: r.command_id, reverse=True) + sorted(
            older, key=lambda r: r.command_id, reverse=True
        )
        every = await backend.commands.query(CommandQuery(domain=DOMAIN))
        assert ids(every) == [r.command_id for r in by_time]
        created = [m.created_at for m in every]
        assert created == sorted(created, reverse=True)
        assert created[0] > created[-1]

        paged = await backend.commands.query(CommandQuery(domain=DOMAIN, limit=2, offset=1))
        assert ids(paged) == [r.command_id for r in by_time[1:3]]
        assert len(await backend.commands.query(CommandQuery())) == 5
        assert len(await backend.commands.query(CommandQuery(limit=3))) == 3
        debits = await backend.commands.query(CommandQuery(domain=DOMAIN, command_type="Debit"))
        assert sorted(ids(debits)) == sorted(r.command_id for r in (older[0], *newer))
        running = await backend.commands.query(CommandQuery(status=CommandStatus.IN_PROGRESS))
        assert ids(running) == [older[0].command_id]
        # created_after is inclusive, created_before exclusive.
        cut = min(m.created_at for m in every if m.command_id in {r.command_id for r in newer})
        recent = await backend.commands.query(CommandQuery(domain=DOMAIN, created_after=cut))
        assert sorted(ids(recent)) == sorted(r.command_id for r in newer)
        early = await backend.commands.query(CommandQuery(domain=DOMAIN, created_before=cut))
        assert sorted(ids(early)) == sorted(r.command_id for r in older)
        assert await backend.commands.query(CommandQuery(domain="nobody")) == []

    async def test_audit_trail_is_in_write_order(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        events = [A.OPERATOR_RETRY, A.RECEIVED, A.FAILED, A.OPERATOR_COMPLETE, A.COMPLETED]
        for i, event in enumerate(events):
            await backend.commands.append_audit(DOMAIN, req.command_id, [(event, {"i": i})])
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, *events]
        assert [e.details for e in trail[1:]] == [{"i": i} for i in range(len(events))]
        stamps = [e.timestamp for e in trail]
        assert stamps == sorted(stamps)
        assert await backend.commands.audit_trail(uuid4()) == []

    async def test_troubleshooting_list_and_count(self, backend: Backend) -> None:
        reqs = [request("Debit", {"n": 0}), request("Credit", {"n": 1})]
        await self.send(backend, *reqs)
        await self.advance(backend, 5)
        reqs.append(request("Debit", {"n": 2}))
        await self.send(backend, reqs[2])
        healthy = request("Debit")
        await self.send(backend, healthy)
        other = request("Debit", domain=OTHER_DOMAIN, reply_to=None)
        await self.send(backend, other)

        claimed = await backend.commands.claim(DOMAIN, 10, 30)
        claimed += await backend.commands.claim(OTHER_DOMAIN, 10, 30)
        by_id = {c.command.command_id: c for c in claimed}
        for req in [*reqs, other]:
            await backend.commands.settle(
                [
                    self.settlement(
                        req,
                        by_id[req.command_id].msg_id,
                        SettleAction.ARCHIVE,
                        CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                        1,
                        [(A.MOVED_TO_TSQ, None)],
                        error_type="PermanentCommandError",
                        error_code="P",
                        error_message="p",
                    )
                ]
            )

        first_two = sorted(reqs[:2], key=lambda r: r.command_id)
        items = await backend.commands.list_troubleshooting(DOMAIN)
        assert [i.command_id for i in items] == [r.command_id for r in (*first_two, reqs[2])]
        assert [i.data for i in items] == [r.data for r in (*first_two, reqs[2])]
        assert {i.domain for i in items} == {DOMAIN}
        assert await backend.commands.count_troubleshooting(DOMAIN) == 3
        assert await backend.commands.count_troubleshooting(DOMAIN, "Debit") == 2
        assert await backend.commands.count_troubleshooting(OTHER_DOMAIN) == 1
        debits = await backend.commands.list_troubleshooting(DOMAIN, "Debit")
        assert [i.command_id for i in debits] == [reqs[0].command_id, reqs[2].command_id]
        page = await backend.commands.list_troubleshooting(DOMAIN, limit=1, offset=1)
        assert [i.command_id for i in page] == [first_two[1].command_id]
        assert await backend.commands.list_troubleshooting(DOMAIN, offset=3) == []

    async def test_archived_message_is_the_latest_archive(self, backend: Backend) -> None:
        req = request(data={"v": 1})
        await self.send(backend, req)
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        for attempt, data in ((1, {"v": 1}), (2, {"v": 2})):
            if attempt == 2:  # an operator re-enqueued a changed payload
                message = {**expected_message(req), "data": data}
                [msg_id] = await backend.queue.enqueue(COMMANDS, [message])
                await backend.commands.set_status(
                    DOMAIN, req.command_id, CommandStatus.PENDING, msg_id=msg_id
                )
            [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
            assert claimed.command.data == data
            await backend.commands.settle(
                [
                    self.settlement(
                        req,
                        claimed.msg_id,
                        SettleAction.ARCHIVE,
                        CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                        attempt,
                        [(A.MOVED_TO_TSQ, None)],
                    )
                ]
            )
            archived = await backend.commands.archived_message(DOMAIN, req.command_id)
            assert archived == {**expected_message(req), "data": data}
        assert await backend.commands.archived_message(OTHER_DOMAIN, req.command_id) is None

    # -- queue ---------------------------------------------------------------------------

    async def test_queue_enqueue_read_delete_and_depth(self, backend: Backend) -> None:
        q = REPLIES
        ids = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}, {"n": 3}])
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert await backend.queue.depth(q) == 3
        assert await backend.queue.depth("empty__queue") == 0

        read = await backend.queue.read(q, 2, 30)
        assert [(m.msg_id, m.message, m.read_count, m.queue_name) for m in read] == [
            (ids[0], {"n": 1}, 1, q),
            (ids[1], {"n": 2}, 1, q),
        ]
        assert all(m.visible_at > m.enqueued_at for m in read)
        [third] = await backend.queue.read(q, 5, 30)
        assert third.msg_id == ids[2]
        assert await backend.queue.read(q, 5, 30) == []
        assert await backend.queue.depth(q) == 3

        assert await backend.queue.delete(q, [ids[0], ids[0] + 1_000_000]) == 1
        assert await backend.queue.delete(q, [ids[0]]) == 0
        assert await backend.queue.depth(q) == 2

        await self.advance(backend, 31)
        again = await backend.queue.read(q, 5, 30)
        assert [(m.msg_id, m.read_count) for m in again] == [(ids[1], 2), (ids[2], 2)]

    async def test_queue_delay_and_set_visibility(self, backend: Backend) -> None:
        q = REPLIES
        [late] = await backend.queue.enqueue(q, [{"late": True}], delay=30)
        [now] = await backend.queue.enqueue(q, [{"late": False}])
        assert [m.msg_id for m in await backend.queue.read(q, 5, 10)] == [now]

        assert await backend.queue.set_visibility(q, late, 0) is True
        assert await backend.queue.set_visibility(q, now, 0) is True
        # Oldest first once both are visible.
        assert [m.msg_id for m in await backend.queue.read(q, 5, 100)] == [late, now]

        assert await backend.queue.set_visibility(q, now, 0) is True
        assert await backend.queue.set_visibility(q, late, 50) is True
        [visible] = await backend.queue.read(q, 5, 100)
        assert visible.msg_id == now
        assert visible.read_count == 3
        await backend.queue.delete(q, [now])
        assert await backend.queue.set_visibility(q, now, 0) is False
        await self.advance(backend, 51)
        [back] = await backend.queue.read(q, 5, 100)
        assert (back.msg_id, back.read_count) == (late, 2)

    async def test_read_hands_out_messages_in_the_order_they_became_visible(
        self, backend: Backend
    ) -> None:
        q = REPLIES
        first, second = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}])
        [leased] = await backend.queue.read(q, 1, 30)
        assert leased.msg_id == first
        await self.advance(backend, 31)
        # ``second`` has been visible since it was sent, ``first`` only since its lease ran
        # out: ``second`` comes first, although it is younger.
        [next_one] = await backend.queue.read(q, 1, 30)
        assert (next_one.msg_id, next_one.read_count) == (second, 1)
        [then] = await backend.queue.read(q, 1, 30)
        assert (then.msg_id, then.read_count) == (first, 2)

    async def test_queues_are_separate(self, backend: Backend) -> None:
        [a] = await backend.queue.enqueue("alpha__replies", [{"q": "a"}])
        [b] = await backend.queue.enqueue("beta__replies", [{"q": "b"}])
        assert a != b
        assert await backend.queue.delete("alpha__replies", [b]) == 0
        assert await backend.queue.set_visibility("alpha__replies", b, 60) is False
        assert [m.message for m in await backend.queue.read("beta__replies", 5, 30)] == [{"q": "b"}]
        assert await backend.queue.depth("alpha__replies") == 1

    async def test_stored_payloads_cannot_be_changed_by_callers(self, backend: Backend) -> None:
        payload: JsonObject = {"items": [1, 2], "meta": {"k": "v"}}
        await backend.queue.enqueue(REPLIES, [payload])
        payload["items"].append(3)
        payload["meta"]["k"] = "changed"
        [msg] = await backend.queue.read(REPLIES, 1, 0)
        assert msg.message == {"items": [1, 2], "meta": {"k": "v"}}
        msg.message["items"].append(99)
        [again] = await backend.queue.read(REPLIES, 1, 0)
        assert again.message == {"items": [1, 2], "meta": {"k": "v"}}

        req = request(data={"deep": {"x": [1]}})
        await self.send(backend, req)
        req.data["deep"]["x"].append(2)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        assert claimed.command.data == {"deep": {"x": [1]}}

    # -- notifications -------------------------------------------------------------------

    async def test_listen_wakes_after_commit(self, backend: Backend) -> None:
        async with backend.listen([COMMANDS]) as waiter:
            async with backend.transaction() as conn:
                await self.send(backend, request(), conn=conn)
                task = asyncio.ensure_future(waiter.wait(30))
                await self.let_others_run()
                assert not task.done()  # nothing before commit
            assert await asyncio.wait_for(task, 10) is True

    async def test_listen_reports_a_notification_that_arrived_before_wait(
        self, backend: Backend
    ) -> None:
        async with backend.listen([REPLIES, COMMANDS]) as waiter:
            await backend.queue.enqueue(REPLIES, [{"x": 1}])
            await self.let_others_run()
            assert await asyncio.wait_for(waiter.wait(30), 10) is True

    async def test_listen_ignores_rolled_back_enqueue_and_other_queues(
        self, backend: Backend
    ) -> None:
        async with backend.listen([COMMANDS]) as waiter:
            with pytest.raises(_Rollback):
                async with backend.transaction() as conn:
                    await self.send(backend, request(), conn=conn)
                    raise _Rollback
            await backend.queue.enqueue(REPLIES, [{"x": 1}])
            assert await self.wait_expecting_timeout(backend, waiter) is False
