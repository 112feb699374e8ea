"""Contract: row locks and the writes operator actions make."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

from commandbus.models import (
    CommandQuery,
    CommandStatus,
)
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DOMAIN,
    A,
    ContractBase,
    _Rollback,
    expected_message,
    request,
)


class OperatorWritesContract(ContractBase):
    """The contract of row locks and the writes operator actions make."""

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
