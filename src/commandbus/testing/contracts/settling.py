"""Contract: settling deliveries: ``CommandStore.settle``."""

from __future__ import annotations

from commandbus.models import (
    CommandStatus,
    ReplyOutcome,
    SettleAction,
    Settlement,
)
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DEFAULT_MAX_ATTEMPTS,
    DOMAIN,
    REPLIES,
    A,
    ContractBase,
    expected_message,
    reply_for,
    request,
)


class SettlementContract(ContractBase):
    """The contract of settling deliveries: ``CommandStore.settle``."""

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
