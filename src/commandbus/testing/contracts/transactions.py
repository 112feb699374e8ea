"""Contract: transactions of ``Backend``: rollback, savepoints, isolation.

Isolation is READ COMMITTED's: what an open transaction has written (inserted, changed or
deleted) is not seen by other transactions until it commits, and rows it has written are
locked: readers that skip locked rows (claims, queue reads) pass them over. Rollback
leaves nothing of what the transaction wrote, the row locks included."""

from __future__ import annotations

import asyncio

import pytest

from commandbus.errors import DuplicateCommandError
from commandbus.models import (
    CommandStatus,
    OperatorSettlement,
    ReplyOutcome,
    SendRequest,
    SendResult,
    SettleAction,
)
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DOMAIN,
    REPLIES,
    A,
    ContractBase,
    _Rollback,
    expected_message,
    reply_for,
    request,
)


class TransactionContract(ContractBase):
    """The contract of transactions of ``Backend``: rollback, savepoints, isolation."""

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

    # -- isolation of every kind of write ------------------------------------------------

    async def in_troubleshooting(self, backend: Backend) -> SendRequest:
        """A command claimed once and moved to the TSQ (committed)."""
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle(
            [
                self.settlement(
                    req,
                    claimed.msg_id,
                    SettleAction.ARCHIVE,
                    CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                    1,
                    [(A.MOVED_TO_TSQ, None)],
                )
            ]
        )
        return req

    @staticmethod
    def operator_retry(req: SendRequest) -> OperatorSettlement:
        return OperatorSettlement(
            domain=req.domain,
            command_id=req.command_id,
            status=CommandStatus.PENDING,
            audit=((A.OPERATOR_RETRY, {"operator": "alice"}),),
            requeue=True,
        )

    async def test_uncommitted_claim_is_invisible_to_others(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        async with backend.transaction() as conn:
            [claimed] = await backend.commands.claim(DOMAIN, 10, 30, conn=conn)
            assert claimed.attempt == 1
            meta = await backend.commands.get(DOMAIN, req.command_id)
            assert meta is not None
            assert (meta.status, meta.attempts) == (CommandStatus.PENDING, 0)
            assert await self.audit_types(backend, req.command_id) == [A.SENT]
            # The message is locked by the open claim: another claim passes it over.
            assert await backend.commands.claim(DOMAIN, 10, 30) == []
            assert await backend.queue.depth(COMMANDS) == 1

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.IN_PROGRESS, 1)
        assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED]

    async def test_uncommitted_settlement_is_invisible_to_others(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        async with backend.transaction() as conn:
            settled = await backend.commands.settle(
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
            assert settled == 1
            meta = await backend.commands.get(DOMAIN, req.command_id)
            assert meta is not None
            assert (meta.status, meta.last_error_type) == (CommandStatus.IN_PROGRESS, None)
            assert await self.audit_types(backend, req.command_id) == [A.SENT, A.RECEIVED]
            # The archived message is still in the queue for others; the reply is not.
            assert await backend.queue.depth(COMMANDS) == 1
            assert await backend.queue.depth(COMMANDS, conn=conn) == 0
            assert await backend.queue.depth(REPLIES) == 0
            assert await backend.queue.read(REPLIES, 10, 30) == []
            assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
            assert await backend.commands.count_troubleshooting(DOMAIN) == 0
            assert await backend.commands.count_troubleshooting(DOMAIN, conn=conn) == 1

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.last_error_type) == (CommandStatus.IN_TROUBLESHOOTING_QUEUE, "X")
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.queue.depth(REPLIES) == 1
        archived = await backend.commands.archived_message(DOMAIN, req.command_id)
        assert archived == expected_message(req)
        assert await backend.commands.count_troubleshooting(DOMAIN) == 1

    async def test_uncommitted_operator_requeue_is_invisible_to_others(
        self, backend: Backend
    ) -> None:
        req = await self.in_troubleshooting(backend)
        async with backend.transaction() as conn:
            assert await backend.commands.lock(DOMAIN, req.command_id, conn=conn) is not None
            assert await backend.commands.apply_operator(self.operator_retry(req), conn=conn)
            meta = await backend.commands.get(DOMAIN, req.command_id)
            assert meta is not None
            assert meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
            assert await backend.commands.count_troubleshooting(DOMAIN) == 1
            assert await self.audit_types(backend, req.command_id) == [
                A.SENT,
                A.RECEIVED,
                A.MOVED_TO_TSQ,
            ]
            # The requeued message does not exist for others yet.
            assert await backend.queue.depth(COMMANDS) == 0
            assert await backend.commands.claim(DOMAIN, 10, 30) == []

        [claimed] = await backend.commands.claim(DOMAIN, 10, 30)
        assert (claimed.command.command_id, claimed.attempt) == (req.command_id, 1)

    async def test_rolled_back_operator_writes_leave_nothing(self, backend: Backend) -> None:
        req = await self.in_troubleshooting(backend)
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
                assert await backend.commands.apply_operator(self.operator_retry(req), conn=conn)
                await backend.queue.enqueue(REPLIES, [{"operator": "alice"}], conn=conn)
                raise _Rollback

        meta = await backend.commands.get(DOMAIN, req.command_id)
        assert meta is not None
        assert (meta.status, meta.attempts) == (CommandStatus.IN_TROUBLESHOOTING_QUEUE, 1)
        assert await self.audit_types(backend, req.command_id) == [
            A.SENT,
            A.RECEIVED,
            A.MOVED_TO_TSQ,
        ]
        assert await backend.queue.depth(COMMANDS) == 0
        assert await backend.queue.depth(REPLIES) == 0
        assert await backend.commands.claim(DOMAIN, 10, 30) == []
        assert await backend.commands.count_troubleshooting(DOMAIN) == 1
        # The row lock went with the transaction: another one takes it without waiting.
        async with backend.transaction() as conn:
            locked = await asyncio.wait_for(
                backend.commands.lock(DOMAIN, req.command_id, conn=conn), 10
            )
            assert locked is not None

    async def test_uncommitted_queue_writes_are_invisible_to_others(self, backend: Backend) -> None:
        q = REPLIES
        kept, gone = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}])
        async with backend.transaction() as conn:
            [new] = await backend.queue.enqueue(q, [{"n": 3}], conn=conn)
            [read] = await backend.queue.read(q, 1, 30, conn=conn)
            assert read.msg_id == kept
            assert await backend.queue.delete(q, [gone], conn=conn) == 1
            # For another transaction the new message does not exist yet and the deleted
            # one still does; readers pass over both messages this transaction holds.
            assert await backend.queue.depth(q) == 2
            assert await backend.queue.read(q, 10, 30) == []
            assert await backend.queue.delete(q, [new]) == 0
            assert await backend.queue.set_visibility(q, new, 0) is False
            assert await backend.queue.depth(q, conn=conn) == 2

        assert await backend.queue.depth(q) == 2
        [msg] = await backend.queue.read(q, 10, 30)  # ``kept`` is leased by the commit
        assert (msg.msg_id, msg.message, msg.read_count) == (new, {"n": 3}, 1)

    async def test_rolled_back_queue_writes_leave_nothing(self, backend: Backend) -> None:
        q = REPLIES
        first, second = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}])
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await backend.queue.enqueue(q, [{"n": 3}], conn=conn)
                [read] = await backend.queue.read(q, 1, 30, conn=conn)
                assert read.msg_id == first
                assert await backend.queue.set_visibility(q, first, 300, conn=conn) is True
                assert await backend.queue.delete(q, [second], conn=conn) == 1
                raise _Rollback

        assert await backend.queue.depth(q) == 2
        again = await backend.queue.read(q, 10, 30)
        assert [(m.msg_id, m.message, m.read_count) for m in again] == [
            (first, {"n": 1}, 1),
            (second, {"n": 2}, 1),
        ]
