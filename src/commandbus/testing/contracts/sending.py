"""Contract: sending commands: ``CommandStore.insert`` and ``claim``, duplicates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from commandbus.errors import DuplicateCommandError, ValidationError
from commandbus.models import CommandStatus, SendRequest
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DEFAULT_MAX_ATTEMPTS,
    DOMAIN,
    OTHER_DOMAIN,
    REPLIES,
    A,
    ContractBase,
    request,
)

#: Requests in a call large enough to be written in several parts (PostgreSQL: several
#: statements, the later parts prepared while the first ones are written).
LARGE_CALL = 2_600


class CommandSendContract(ContractBase):
    """The contract of sending commands: ``CommandStore.insert`` and ``claim``, duplicates."""

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

    # -- prepared on the way ------------------------------------------------------------

    async def test_insert_writes_what_prepare_returns(self, backend: Backend) -> None:
        raw = [request(data={"n": n}) for n in range(LARGE_CALL)]

        def prepare(req: SendRequest) -> SendRequest:
            return replace(req, data={**req.data, "prepared": True}, encoded_data=None)

        results = await backend.commands.insert(raw, DEFAULT_MAX_ATTEMPTS, prepare=prepare)
        assert [r.command_id for r in results] == [r.command_id for r in raw]
        assert await backend.queue.depth(COMMANDS) == LARGE_CALL
        claimed = await backend.commands.claim(DOMAIN, LARGE_CALL, 30)
        assert sorted(c.command.data["n"] for c in claimed) == list(range(LARGE_CALL))
        assert all(c.command.data["prepared"] is True for c in claimed)

    async def test_a_late_request_that_prepare_refuses_writes_nothing(
        self, backend: Backend
    ) -> None:
        raw = [request(data={"n": n}) for n in range(LARGE_CALL)]
        refused = raw[-1].command_id

        def prepare(req: SendRequest) -> SendRequest:
            if req.command_id == refused:
                raise ValidationError("refused by prepare")
            return req

        with pytest.raises(ValidationError, match="refused by prepare"):
            await backend.commands.insert(raw, DEFAULT_MAX_ATTEMPTS, prepare=prepare)
        assert await backend.queue.depth(COMMANDS) == 0
        for req in (raw[0], raw[LARGE_CALL // 2]):
            assert await backend.commands.get(DOMAIN, req.command_id) is None
            assert await backend.commands.audit_trail(req.command_id) == []

        # Inside a caller's transaction: undone alone, the transaction goes on.
        kept = request()
        async with backend.transaction() as conn:
            await self.send(backend, kept, conn=conn)
            with pytest.raises(ValidationError):
                await backend.commands.insert(raw, DEFAULT_MAX_ATTEMPTS, conn=conn, prepare=prepare)
            [extra] = await backend.queue.enqueue(REPLIES, [{"after": "refusal"}], conn=conn)
        assert await backend.queue.depth(COMMANDS) == 1
        assert await backend.commands.get(DOMAIN, kept.command_id) is not None
        [msg] = await backend.queue.read(REPLIES, 5, 30)
        assert msg.msg_id == extra

    async def test_an_id_repeated_far_apart_in_a_large_call_writes_nothing(
        self, backend: Backend
    ) -> None:
        raw = [request() for _ in range(LARGE_CALL)]
        repeated = raw[1].command_id
        raw.append(request(command_id=repeated))
        with pytest.raises(DuplicateCommandError) as raised:
            await backend.commands.insert(raw, DEFAULT_MAX_ATTEMPTS, prepare=lambda r: r)
        assert raised.value.command_ids == [repeated]
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.commands.get(DOMAIN, raw[0].command_id) is None

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
