"""Contract of ``ProcessRepository``: the batch API of the engine (lock, apply, isolation)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import uuid4

import pytest

from commandbus.models import ReplyOutcome
from commandbus.ports import Backend
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessStatus,
)
from commandbus.process.repository import ProcessRepository, ProcessWrites
from commandbus.testing.process_contracts._base import (
    DOMAIN,
    OTHER,
    T0,
    RepositoryContractBase,
    _Rollback,
    make_entry,
    make_process,
)


class EngineApiContract(RepositoryContractBase):
    """The engine's batch API: insert_new, lock, apply, isolation, the log."""

    # -- engine batch API ----------------------------------------------------------------

    async def test_insert_new_skips_existing(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        existing = make_process()
        await repo.save(existing)
        fresh = make_process()
        async with backend.transaction() as tx:
            inserted = await repo.insert_new(
                [make_process(process_id=existing.process_id), fresh], conn=tx
            )
        assert inserted == [fresh.process_id]
        got = await repo.get_by_id(DOMAIN, fresh.process_id)
        assert got is not None and got.version == 1

    async def test_lock_loads_processes_with_their_audit(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        a, b, c = make_process(), make_process(), make_process(domain=OTHER)
        for p in (a, b, c):
            await repo.save(p)
        e1 = make_entry("query", sent_at=T0)
        e2 = make_entry("aggregate", sent_at=T0 + timedelta(seconds=1))
        await repo.log_step(DOMAIN, a.process_id, e2)
        await repo.log_step(DOMAIN, a.process_id, e1)
        async with backend.transaction() as tx:
            snaps = await repo.lock(
                [DOMAIN], [b.process_id, a.process_id, c.process_id, uuid4()], conn=tx
            )
        by_id = {s.process.process_id: s for s in snaps}
        assert set(by_id) == {a.process_id, b.process_id}
        assert [e.step_name for e in by_id[a.process_id].audit] == ["query", "aggregate"]
        assert by_id[b.process_id].audit == []
        assert by_id[a.process_id].process.state == {"n": 1, "tags": ["a"]}

    async def test_lock_waits_for_the_holder_and_sees_its_writes(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        await repo.save(p)
        entry = make_entry()
        await repo.log_step(DOMAIN, p.process_id, entry)
        order: list[str] = []
        first_locked = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with backend.transaction() as tx:
                [snap] = await repo.lock([DOMAIN], [p.process_id], conn=tx)
                order.append("first locked")
                first_locked.set()
                await release.wait()
                proc = snap.process
                proc.status = ProcessStatus.COMPLETED
                answered = ProcessAuditEntry(
                    step_name="query",
                    command_id=entry.command_id,
                    command_type="Query",
                    command_data=None,
                    sent_at=T0,
                    reply_outcome=ReplyOutcome.SUCCESS,
                    received_at=T0,
                )
                await repo.apply(
                    ProcessWrites(updates=[proc], audit_updates=[(DOMAIN, p.process_id, answered)]),
                    conn=tx,
                )
                order.append("first commits")

        async def second() -> ProcessStatus:
            await first_locked.wait()
            async with backend.transaction() as tx:
                order.append("second waits")
                [snap] = await repo.lock([DOMAIN], [p.process_id], conn=tx)
                order.append("second locked")
                assert snap.audit[0].reply_outcome is ReplyOutcome.SUCCESS
                assert snap.process.version == 2
                return snap.process.status

        t1 = asyncio.create_task(first())
        t2 = asyncio.create_task(second())
        await first_locked.wait()
        await self.let_others_run()
        release.set()
        await t1
        status = await t2
        assert status is ProcessStatus.COMPLETED
        assert order == ["first locked", "second waits", "first commits", "second locked"]

    async def test_apply_writes_a_batch_and_rolls_back_with_the_transaction(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        await repo.save(p)
        entry = make_entry()
        record = ProcessMessageRecord(
            disposition=ProcessMessageDisposition.IGNORED,
            reason="duplicate",
            message={"command_id": "x"},
            domain=DOMAIN,
            process_id=p.process_id,
        )

        def writes() -> ProcessWrites:
            proc = make_process(process_id=p.process_id, status=ProcessStatus.COMPENSATING)
            proc.version = 1
            return ProcessWrites(
                updates=[proc],
                audit_inserts=[(DOMAIN, p.process_id, entry)],
                messages=[record],
            )

        with pytest.raises(_Rollback):
            async with backend.transaction() as tx:
                await repo.apply(writes(), conn=tx)
                raise _Rollback
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.status is ProcessStatus.WAITING_FOR_REPLY
        assert got.version == 1
        assert await repo.get_audit_trail(DOMAIN, p.process_id) == []
        assert await repo.list_messages() == []

        async with backend.transaction() as tx:
            await repo.apply(writes(), conn=tx)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.status is ProcessStatus.COMPENSATING
        assert [e.command_id for e in await repo.get_audit_trail(DOMAIN, p.process_id)] == [
            entry.command_id
        ]
        [logged] = await repo.list_messages(process_id=p.process_id)
        assert (logged.disposition, logged.reason) == (
            ProcessMessageDisposition.IGNORED,
            "duplicate",
        )
        assert logged.message == {"command_id": "x"}
        assert logged.id is not None and logged.recorded_at is not None

    async def test_count_by_status_counts_one_domains_committed_processes(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        assert await repo.count_by_status(DOMAIN) == {}
        for status in (ProcessStatus.WAITING_FOR_REPLY, ProcessStatus.WAITING_FOR_REPLY):
            await repo.save(make_process(status=status))
        await repo.save(make_process(status=ProcessStatus.COMPLETED))
        await repo.save(make_process(domain=OTHER, status=ProcessStatus.FAILED))
        with pytest.raises(_Rollback):
            async with backend.transaction() as tx:
                await repo.insert_new([make_process(status=ProcessStatus.FAILED)], conn=tx)
                assert await repo.count_by_status(DOMAIN, conn=tx) == {
                    ProcessStatus.WAITING_FOR_REPLY: 2,
                    ProcessStatus.COMPLETED: 1,
                    ProcessStatus.FAILED: 1,
                }
                raise _Rollback
        assert await repo.count_by_status(DOMAIN) == {
            ProcessStatus.WAITING_FOR_REPLY: 2,
            ProcessStatus.COMPLETED: 1,
        }
        assert await repo.count_by_status(OTHER) == {ProcessStatus.FAILED: 1}

    async def test_uncommitted_process_is_invisible_to_others(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        async with backend.transaction() as tx:
            assert await repo.insert_new([p], conn=tx) == [p.process_id]
            assert await repo.get_by_id(DOMAIN, p.process_id, conn=tx) is not None
            assert await repo.get_by_id(DOMAIN, p.process_id) is None
        assert await repo.get_by_id(DOMAIN, p.process_id) is not None

    async def test_uncommitted_update_and_audit_are_invisible_to_others(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        await repo.save(p)
        entry = make_entry()
        async with backend.transaction() as tx:
            changed = make_process(process_id=p.process_id, status=ProcessStatus.COMPENSATING)
            changed.version = 1
            await repo.apply(
                ProcessWrites(updates=[changed], audit_inserts=[(DOMAIN, p.process_id, entry)]),
                conn=tx,
            )
            mine = await repo.get_by_id(DOMAIN, p.process_id, conn=tx)
            assert mine is not None and mine.status is ProcessStatus.COMPENSATING
            others = await repo.get_by_id(DOMAIN, p.process_id)
            assert others is not None and others.status is ProcessStatus.WAITING_FOR_REPLY
            assert others.version == 1
            assert await repo.get_audit_trail(DOMAIN, p.process_id) == []
            found = await repo.find_by_status(DOMAIN, [ProcessStatus.COMPENSATING])
            assert found == []
        after = await repo.get_by_id(DOMAIN, p.process_id)
        assert after is not None and after.status is ProcessStatus.COMPENSATING
        assert len(await repo.get_audit_trail(DOMAIN, p.process_id)) == 1

    async def test_message_log_filters_and_delete(self, repo: ProcessRepository) -> None:
        pid = uuid4()
        records = [
            ProcessMessageRecord(ProcessMessageDisposition.IGNORED, "stale", {"i": 1}, DOMAIN, pid),
            ProcessMessageRecord(ProcessMessageDisposition.PARKED, "malformed", {"i": 2}),
            ProcessMessageRecord(ProcessMessageDisposition.PARKED, "hook", {"i": 3}, OTHER, pid),
        ]
        await repo.apply(ProcessWrites(messages=records))
        assert [r.message["i"] for r in await repo.list_messages()] == [1, 2, 3]
        parked = await repo.list_messages(disposition=ProcessMessageDisposition.PARKED)
        assert [r.reason for r in parked] == ["malformed", "hook"]
        assert [r.reason for r in await repo.list_messages(process_id=pid)] == ["stale", "hook"]
        assert [r.reason for r in await repo.list_messages(domain=OTHER)] == ["hook"]
        assert [r.reason for r in await repo.list_messages(limit=1)] == ["stale"]
        assert parked[0].id is not None
        [one] = await repo.list_messages(record_id=parked[1].id)
        assert one.reason == "hook" and one.id == parked[1].id
        assert await repo.list_messages(record_id=-1) == []
        assert await repo.delete_message(parked[0].id) is True
        assert await repo.delete_message(parked[0].id) is False
        assert [r.reason for r in await repo.list_messages()] == ["stale", "hook"]
