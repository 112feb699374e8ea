"""Contract: transactions of ``Backend``: rollback, savepoints, isolation."""

from __future__ import annotations

import asyncio

import pytest

from commandbus.errors import DuplicateCommandError
from commandbus.models import (
    CommandStatus,
    ReplyOutcome,
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
