"""Contract: batches: ``BatchStore`` and the counters the command store moves."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus.batches.models import (
    BatchKind,
    BatchMetadata,
    BatchNotice,
    BatchQuery,
    BatchStatus,
    NewBatch,
)
from commandbus.batches.ports import BatchBackend
from commandbus.errors import DuplicateBatchError
from commandbus.models import (
    CommandQuery,
    CommandStatus,
    SendRequest,
    SettleAction,
    Settlement,
)
from commandbus.ops import decisions
from commandbus.ports import Backend
from commandbus.process.models import ProcessStatus
from commandbus.process.repository import ProcessWrites
from commandbus.testing.contracts._base import (
    DOMAIN,
    OTHER_DOMAIN,
    A,
    ContractBase,
    _Rollback,
    request,
)
from commandbus.testing.process_contracts._base import make_process

NOTICES = "payments__batches"


def _batches(backend: Backend) -> BatchBackend:
    assert isinstance(backend, BatchBackend), f"{type(backend).__name__} stores no batches"
    return backend


class BatchContract(ContractBase):
    """The contract of batches: rows, members joining them, and counters that every
    status change of a member moves in its own transaction."""

    # -- helpers -----------------------------------------------------------------------

    async def new_batch(
        self,
        backend: Backend,
        members: int,
        *,
        is_open: bool = False,
        reply_to: str | None = NOTICES,
        domain: str = DOMAIN,
        name: str | None = "nightly",
    ) -> tuple[UUID, list[SendRequest]]:
        """A batch with ``members`` commands sent in one transaction."""
        batch_id = uuid4()
        reqs = [replace(request(domain=domain), batch_id=batch_id) for _ in range(members)]
        batch = NewBatch(domain, batch_id, BatchKind.COMMANDS, name, reply_to, is_open, members)
        async with backend.transaction() as conn:
            await _batches(backend).batches.create(batch, conn=conn)
            if reqs:
                await self.send(backend, *reqs, conn=conn)
        return batch_id, reqs

    async def batch(self, backend: Backend, batch_id: UUID, domain: str = DOMAIN) -> BatchMetadata:
        found = await _batches(backend).batches.get(domain, batch_id)
        assert found is not None
        return found

    async def counts(self, backend: Backend, batch_id: UUID) -> tuple[Any, ...]:
        """(status, total, completed, failed, canceled, in_troubleshooting)."""
        b = await self.batch(backend, batch_id)
        return (b.status, b.total, b.completed, b.failed, b.canceled, b.in_troubleshooting)

    async def notices(self, backend: Backend, queue: str = NOTICES) -> list[BatchNotice]:
        messages = await backend.queue.read(queue, 100, 30)
        return [BatchNotice.from_message(m.message) for m in messages]

    async def claim_all(self, backend: Backend, n: int) -> dict[UUID, int]:
        """Claim ``n`` commands; their msg_ids by command id."""
        claimed = await backend.commands.claim(DOMAIN, n, 30)
        assert len(claimed) == n
        return {c.command.command_id: c.msg_id for c in claimed}

    def ended(
        self, req: SendRequest, msg_id: int, status: CommandStatus, attempts: int = 1
    ) -> Settlement:
        """The settlement of a delivery ending in ``status``."""
        action = {
            CommandStatus.COMPLETED: SettleAction.DELETE,
            CommandStatus.FAILED: SettleAction.ARCHIVE,
            CommandStatus.IN_TROUBLESHOOTING_QUEUE: SettleAction.ARCHIVE,
            CommandStatus.PENDING: SettleAction.RETRY,
        }[status]
        return self.settlement(req, msg_id, action, status, attempts, [(A.COMPLETED, None)])

    async def operator(self, backend: Backend, req: SendRequest, action: str) -> None:
        async with backend.transaction() as conn:
            meta = await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            assert meta is not None
            if action == "retry":
                settlement = decisions.retry(meta, "alice")
            elif action == "cancel":
                settlement = decisions.cancel(meta, "not needed", "alice")
            else:
                settlement = decisions.complete(meta, {"by": "hand"}, "alice")
            assert await backend.commands.apply_operator(settlement, conn=conn)

    # -- rows --------------------------------------------------------------------------

    async def test_create_stores_the_batch_and_its_members(self, backend: Backend) -> None:
        batch_id, reqs = await self.new_batch(backend, 3)
        batch = await self.batch(backend, batch_id)
        assert (batch.domain, batch.kind, batch.name, batch.reply_to) == (
            DOMAIN,
            BatchKind.COMMANDS,
            "nightly",
            NOTICES,
        )
        assert (batch.status, batch.is_open, batch.completed_at) == (
            BatchStatus.PENDING,
            False,
            None,
        )
        assert await self.counts(backend, batch_id) == (BatchStatus.PENDING, 3, 0, 0, 0, 0)
        assert batch.pending == 3
        for req in reqs:
            meta = await backend.commands.get(DOMAIN, req.command_id)
            assert meta is not None and meta.batch_id == batch_id
        members = await backend.commands.query(CommandQuery(batch_id=batch_id))
        assert {m.command_id for m in members} == {r.command_id for r in reqs}
        assert await _batches(backend).batches.get(OTHER_DOMAIN, batch_id) is None

    async def test_a_batch_id_is_unique_per_domain(self, backend: Backend) -> None:
        batch_id, _ = await self.new_batch(backend, 1)
        store = _batches(backend).batches
        again = NewBatch(DOMAIN, batch_id, BatchKind.COMMANDS, None, None, False, 1)
        with pytest.raises(DuplicateBatchError):
            async with backend.transaction() as conn:
                await store.create(again, conn=conn)
        assert (await self.batch(backend, batch_id)).name == "nightly"
        # The same id in another domain is another batch.
        async with backend.transaction() as conn:
            await store.create(replace(again, domain=OTHER_DOMAIN), conn=conn)
        assert (await self.batch(backend, batch_id, OTHER_DOMAIN)).total == 1

    async def test_a_rolled_back_creation_leaves_nothing(self, backend: Backend) -> None:
        batch_id = uuid4()
        req = replace(request(), batch_id=batch_id)
        batch = NewBatch(DOMAIN, batch_id, BatchKind.COMMANDS, None, None, False, 1)
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await _batches(backend).batches.create(batch, conn=conn)
                await self.send(backend, req, conn=conn)
                raise _Rollback
        assert await _batches(backend).batches.get(DOMAIN, batch_id) is None
        assert await backend.commands.get(DOMAIN, req.command_id) is None

    async def test_query_filters_newest_first(self, backend: Backend) -> None:
        first, _ = await self.new_batch(backend, 1)
        await self.advance(backend, 1)  # a later created_at (the virtual clock stands still)
        second, _ = await self.new_batch(backend, 1, is_open=True)
        other, _ = await self.new_batch(backend, 1, domain=OTHER_DOMAIN)
        store = _batches(backend).batches
        listed = await store.query(BatchQuery(domain=DOMAIN))
        assert [b.batch_id for b in listed] == [second, first]
        everywhere = await store.query(BatchQuery())
        assert {b.batch_id for b in everywhere} == {first, second, other}
        assert await store.query(BatchQuery(status=BatchStatus.COMPLETED)) == []
        assert [b.batch_id for b in await store.query(BatchQuery(domain=DOMAIN, limit=1))] == [
            second
        ]
        assert [b.batch_id for b in await store.query(BatchQuery(domain=DOMAIN, offset=1))] == [
            first
        ]
        assert await store.query(BatchQuery(kind=BatchKind.PROCESSES)) == []

    # -- counters ------------------------------------------------------------------------

    async def test_a_claim_starts_the_batch(self, backend: Backend) -> None:
        batch_id, _ = await self.new_batch(backend, 2)
        await backend.commands.claim(DOMAIN, 1, 30)
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 2, 0, 0, 0, 0)

    async def test_settlements_move_members_and_the_last_one_finishes_the_batch(
        self, backend: Backend
    ) -> None:
        batch_id, [ok, retried, parked] = await self.new_batch(backend, 3)
        msg = await self.claim_all(backend, 3)
        settled = await backend.commands.settle(
            [
                self.ended(ok, msg[ok.command_id], CommandStatus.COMPLETED),
                self.ended(retried, msg[retried.command_id], CommandStatus.PENDING),
                self.ended(parked, msg[parked.command_id], CommandStatus.IN_TROUBLESHOOTING_QUEUE),
            ]
        )
        assert settled == 3
        # A retry leaves the member pending: no counter.
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 1, 0, 0, 1)
        assert (await self.batch(backend, batch_id)).pending == 1
        assert await self.notices(backend) == []

        await self.advance(backend, 1)
        [again] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle(
            [self.ended(retried, again.msg_id, CommandStatus.FAILED, attempts=2)]
        )
        # Not finished: a member in the troubleshooting queue has not ended.
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 1, 1, 0, 1)
        assert await self.notices(backend) == []

        # Retried by an operator: out of the TSQ counter, back to pending...
        await self.operator(backend, parked, "retry")
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 1, 1, 0, 0)
        # ...then completed: counted once, as completed; the batch finishes.
        [third] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle([self.ended(parked, third.msg_id, CommandStatus.COMPLETED)])
        assert await self.counts(backend, batch_id) == (
            BatchStatus.COMPLETED_WITH_FAILURES,
            3,
            2,
            1,
            0,
            0,
        )
        batch = await self.batch(backend, batch_id)
        assert batch.completed_at is not None and batch.pending == 0
        [notice] = await self.notices(backend)
        assert notice == BatchNotice(
            batch_id=batch_id,
            domain=DOMAIN,
            kind=BatchKind.COMMANDS,
            name="nightly",
            status=BatchStatus.COMPLETED_WITH_FAILURES,
            total=3,
            completed=2,
            failed=1,
            canceled=0,
            in_troubleshooting=0,
        )

    async def test_a_batch_whose_members_all_complete_is_completed(self, backend: Backend) -> None:
        batch_id, reqs = await self.new_batch(backend, 2)
        msg = await self.claim_all(backend, 2)
        await backend.commands.settle(
            [self.ended(r, msg[r.command_id], CommandStatus.COMPLETED) for r in reqs]
        )
        assert await self.counts(backend, batch_id) == (BatchStatus.COMPLETED, 2, 2, 0, 0, 0)
        assert [n.status for n in await self.notices(backend)] == [BatchStatus.COMPLETED]

    async def test_a_stale_settlement_counts_nothing(self, backend: Backend) -> None:
        batch_id, [req] = await self.new_batch(backend, 1)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        stale = self.ended(req, claimed.msg_id, CommandStatus.COMPLETED, attempts=7)
        assert await backend.commands.settle([stale]) == 0
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 1, 0, 0, 0, 0)
        # Twice the same settlement in one call: applied (and counted) once.
        done = self.ended(req, claimed.msg_id, CommandStatus.COMPLETED)
        assert await backend.commands.settle([done, done]) == 1
        assert await self.counts(backend, batch_id) == (BatchStatus.COMPLETED, 1, 1, 0, 0, 0)
        assert await backend.commands.settle([done]) == 0
        assert len(await self.notices(backend)) == 1

    async def test_operator_cancel_and_complete_count_as_canceled_and_completed(
        self, backend: Backend
    ) -> None:
        batch_id, [a, b] = await self.new_batch(backend, 2, reply_to=None)
        msg = await self.claim_all(backend, 2)
        await backend.commands.settle(
            [
                self.ended(r, msg[r.command_id], CommandStatus.IN_TROUBLESHOOTING_QUEUE)
                for r in (a, b)
            ]
        )
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 2, 0, 0, 0, 2)
        await self.operator(backend, a, "cancel")
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 2, 0, 0, 1, 1)
        await self.operator(backend, b, "complete")
        assert await self.counts(backend, batch_id) == (
            BatchStatus.COMPLETED_WITH_FAILURES,
            2,
            1,
            0,
            1,
            0,
        )
        # No reply_to: finished without a notice anywhere.
        assert await self.notices(backend) == []

    async def test_a_status_change_outside_a_delivery_counts_too(self, backend: Backend) -> None:
        # A process withdrawing a command it no longer awaits: PENDING -> CANCELED.
        batch_id, [req] = await self.new_batch(backend, 1)
        async with backend.transaction() as conn:
            assert await backend.commands.lock(DOMAIN, req.command_id, conn=conn) is not None
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
            )
        assert await self.counts(backend, batch_id) == (
            BatchStatus.COMPLETED_WITH_FAILURES,
            1,
            0,
            0,
            1,
            0,
        )
        # The same status again moves nothing.
        await backend.commands.set_status(DOMAIN, req.command_id, CommandStatus.CANCELED)
        assert (await self.batch(backend, batch_id)).canceled == 1
        assert len(await self.notices(backend)) == 1

    async def test_a_rolled_back_settlement_counts_nothing(self, backend: Backend) -> None:
        batch_id, [req] = await self.new_batch(backend, 1)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                done = self.ended(req, claimed.msg_id, CommandStatus.COMPLETED)
                assert await backend.commands.settle([done], conn=conn) == 1
                raise _Rollback
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 1, 0, 0, 0, 0)
        assert await self.notices(backend) == []

    # -- open batches ----------------------------------------------------------------

    async def test_an_open_batch_grows_and_finishes_only_once_closed(
        self, backend: Backend
    ) -> None:
        store = _batches(backend).batches
        batch_id, [first] = await self.new_batch(backend, 1, is_open=True)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle([self.ended(first, claimed.msg_id, CommandStatus.COMPLETED)])
        # Every member has ended, but the batch is open: not finished.
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 1, 1, 0, 0, 0)

        second = replace(request(), batch_id=batch_id)
        async with backend.transaction() as conn:
            assert await store.add_members(DOMAIN, batch_id, BatchKind.COMMANDS, 1, conn=conn)
            await self.send(backend, second, conn=conn)
        assert (await self.batch(backend, batch_id)).total == 2

        closed = await store.close(DOMAIN, batch_id)
        assert closed is not None and not closed.is_open
        assert closed.status is BatchStatus.IN_PROGRESS
        assert await self.notices(backend) == []
        async with backend.transaction() as conn:
            assert not await store.add_members(DOMAIN, batch_id, BatchKind.COMMANDS, 1, conn=conn)

        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle([self.ended(second, claimed.msg_id, CommandStatus.COMPLETED)])
        assert await self.counts(backend, batch_id) == (BatchStatus.COMPLETED, 2, 2, 0, 0, 0)
        assert len(await self.notices(backend)) == 1

    async def test_closing_a_batch_whose_members_ended_finishes_it_at_once(
        self, backend: Backend
    ) -> None:
        store = _batches(backend).batches
        batch_id, [req] = await self.new_batch(backend, 1, is_open=True)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle([self.ended(req, claimed.msg_id, CommandStatus.FAILED)])
        with pytest.raises(_Rollback):
            async with backend.transaction() as conn:
                await store.close(DOMAIN, batch_id, conn=conn)
                raise _Rollback
        assert (await self.batch(backend, batch_id)).is_open
        assert await self.notices(backend) == []

        closed = await store.close(DOMAIN, batch_id)
        assert closed is not None
        assert (closed.status, closed.failed) == (BatchStatus.COMPLETED_WITH_FAILURES, 1)
        assert closed.completed_at is not None
        # Closing again changes nothing and writes no second notice.
        assert await store.close(DOMAIN, batch_id) == closed
        assert len(await self.notices(backend)) == 1
        assert await store.close(DOMAIN, uuid4()) is None

    async def test_an_open_empty_batch_waits_for_members(self, backend: Backend) -> None:
        store = _batches(backend).batches
        batch_id, _ = await self.new_batch(backend, 0, is_open=True)
        closed = await store.close(DOMAIN, batch_id)
        # Nothing was ever added: closed, but there is nothing to finish.
        assert closed is not None and closed.status is BatchStatus.PENDING
        assert await self.notices(backend) == []

    async def test_members_join_only_an_open_batch_of_their_kind(self, backend: Backend) -> None:
        store = _batches(backend).batches
        closed_id, _ = await self.new_batch(backend, 1)
        open_id, _ = await self.new_batch(backend, 1, is_open=True)
        async with backend.transaction() as conn:
            assert not await store.add_members(DOMAIN, closed_id, BatchKind.COMMANDS, 1, conn=conn)
            assert not await store.add_members(DOMAIN, uuid4(), BatchKind.COMMANDS, 1, conn=conn)
            assert not await store.add_members(DOMAIN, open_id, BatchKind.PROCESSES, 1, conn=conn)
            assert not await store.add_members(
                OTHER_DOMAIN, open_id, BatchKind.COMMANDS, 1, conn=conn
            )
        assert (await self.batch(backend, closed_id)).total == 1
        assert (await self.batch(backend, open_id)).total == 1

    async def test_a_sender_adding_to_a_batch_holds_it_until_it_commits(
        self, backend: Backend
    ) -> None:
        # The last member's settlement waits for the sender, then counts the new total:
        # the batch cannot finish with a member about to join it.
        store = _batches(backend).batches
        batch_id, [req] = await self.new_batch(backend, 1, is_open=True)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        late = replace(request(), batch_id=batch_id)
        async with backend.transaction() as conn:
            assert await store.add_members(DOMAIN, batch_id, BatchKind.COMMANDS, 1, conn=conn)
            settling = asyncio.ensure_future(
                backend.commands.settle([self.ended(req, claimed.msg_id, CommandStatus.COMPLETED)])
            )
            await self.let_others_run()
            assert not settling.done()
            await self.send(backend, late, conn=conn)
        assert await settling == 1
        await store.close(DOMAIN, batch_id)
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 2, 1, 0, 0, 0)
        assert await self.notices(backend) == []

    # -- batches of processes --------------------------------------------------------

    async def test_processes_of_a_batch_move_when_their_rows_are_updated(
        self, backend: Backend
    ) -> None:
        store = _batches(backend).batches
        repo = backend.processes
        batch_id = uuid4()
        batch = NewBatch(DOMAIN, batch_id, BatchKind.PROCESSES, "onboarding", NOTICES, True, 0)
        members = [replace(make_process(domain=DOMAIN), batch_id=batch_id) for _ in range(3)]
        async with backend.transaction() as conn:
            await store.create(batch, conn=conn)
            assert len(await repo.insert_new(members, conn=conn)) == 3
            assert await store.add_members(DOMAIN, batch_id, BatchKind.PROCESSES, 3, conn=conn)
            first = [(DOMAIN, batch_id, None, p.status.value) for p in members]
            assert await store.count_changes(first, conn=conn) == 0
            await store.close(DOMAIN, batch_id, conn=conn)
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 0, 0, 0, 0)
        stored = await repo.get_by_id(DOMAIN, members[0].process_id)
        assert stored is not None and stored.batch_id == batch_id

        async def move(process: Any, status: ProcessStatus) -> None:
            async with backend.transaction() as conn:
                [snap] = await repo.lock([DOMAIN], [process.process_id], conn=conn)
                await repo.apply(
                    ProcessWrites(updates=[snap.process.copy(status=status)]), conn=conn
                )

        a, b, c = members
        await move(a, ProcessStatus.WAITING_FOR_TSQ)
        await move(b, ProcessStatus.WAITING_FOR_OPERATOR)
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 0, 0, 0, 2)
        await move(a, ProcessStatus.WAITING_FOR_REPLY)  # an operator retried its step
        await move(a, ProcessStatus.COMPLETED)
        await move(b, ProcessStatus.COMPENSATED)
        assert await self.counts(backend, batch_id) == (BatchStatus.IN_PROGRESS, 3, 1, 1, 0, 0)
        await move(c, ProcessStatus.CANCELED)
        assert await self.counts(backend, batch_id) == (
            BatchStatus.COMPLETED_WITH_FAILURES,
            3,
            1,
            1,
            1,
            0,
        )
        [notice] = await self.notices(backend)
        assert (notice.kind, notice.name, notice.total) == (BatchKind.PROCESSES, "onboarding", 3)
        # An update of a finished process that changes nothing else counts nothing.
        await move(c, ProcessStatus.CANCELED)
        assert (await self.batch(backend, batch_id)).canceled == 1

    async def test_a_process_without_a_batch_counts_nowhere(self, backend: Backend) -> None:
        batch_id, _ = await self.new_batch(backend, 1)
        process = make_process(domain=DOMAIN)
        await backend.processes.save(process)
        async with backend.transaction() as conn:
            [snap] = await backend.processes.lock([DOMAIN], [process.process_id], conn=conn)
            done = snap.process.copy(status=ProcessStatus.COMPLETED)
            await backend.processes.apply(ProcessWrites(updates=[done]), conn=conn)
        assert await self.counts(backend, batch_id) == (BatchStatus.PENDING, 1, 0, 0, 0, 0)
