"""Contract of ``ProcessRepository``: the seed's repository API: save, get, update, find, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from commandbus.models import ReplyOutcome
from commandbus.ports import Backend
from commandbus.process.errors import ProcessAlreadyExistsError, ProcessVersionConflictError
from commandbus.process.models import (
    AuditEntryKind,
    CompensationPlan,
    ProcessAuditEntry,
    ProcessStatus,
)
from commandbus.process.repository import ProcessRepository, ProcessWrites
from commandbus.testing.process_contracts._base import (
    DOMAIN,
    OTHER,
    T0,
    RepositoryContractBase,
    _TypedState,
    make_entry,
    make_process,
)


class SeedApiContract(RepositoryContractBase):
    """The seed's repository API: save, get, update, find, audit."""

    # -- save / get ----------------------------------------------------------------------

    async def test_save_then_get_round_trips_every_field(self, repo: ProcessRepository) -> None:
        plan = CompensationPlan(ProcessStatus.CANCELED, ("undo_b", "undo_a"), ("undo_c",))
        p = make_process(deadline_at=T0 + timedelta(seconds=30))
        p.error_code, p.error_message, p.compensation = "E", "boom", plan
        await repo.save(p)
        assert p.version == 1
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None
        assert (got.domain, got.process_id, got.process_type) == (DOMAIN, p.process_id, "Report")
        assert got.status is ProcessStatus.WAITING_FOR_REPLY
        assert got.current_step == "query"
        assert got.state == {"n": 1, "tags": ["a"]}
        assert (got.error_code, got.error_message) == ("E", "boom")
        assert got.created_at == T0
        assert got.completed_at is None
        assert got.version == 1
        assert got.awaiting_command_id == p.awaiting_command_id
        assert got.command_seq == 1
        assert got.deadline_at == T0 + timedelta(seconds=30)
        assert got.compensation == plan

    async def test_save_serialises_a_typed_state(self, repo: ProcessRepository) -> None:
        p = make_process(state=_TypedState(7))
        await repo.save(p)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.state == {"count": 7}

    async def test_save_twice_raises_already_exists(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        with pytest.raises(ProcessAlreadyExistsError):
            await repo.save(make_process(process_id=p.process_id))

    async def test_get_unknown_or_other_domain_is_none(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        assert await repo.get_by_id(DOMAIN, uuid4()) is None
        assert await repo.get_by_id(OTHER, p.process_id) is None

    async def test_returned_state_is_a_copy(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None
        got.state["n"] = 99
        again = await repo.get_by_id(DOMAIN, p.process_id)
        assert again is not None and again.state["n"] == 1

    async def test_initial_data_round_trips_and_is_never_updated(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        start = {"account_list": ["ACC-1", "ACC-2"], "range": {"from": "2025-01-01"}, "n": 1.5}
        saved = make_process(deadline_at=T0)
        saved.initial_data = start
        await repo.save(saved)
        batched = make_process(deadline_at=T0)
        batched.initial_data = {"output_type": "pdf"}
        plain = make_process(deadline_at=T0)
        async with backend.transaction() as tx:
            assert await repo.insert_new([batched, plain], conn=tx) == [
                batched.process_id,
                plain.process_id,
            ]
        expected = {
            saved.process_id: {
                "account_list": ["ACC-1", "ACC-2"],
                "range": {"from": "2025-01-01"},
                "n": 1.5,
            },
            batched.process_id: {"output_type": "pdf"},
            plain.process_id: None,
        }
        start["n"] = 2  # the caller's dict is not shared with the store
        # every read of a process row returns it
        for pid, data in expected.items():
            got = await repo.get_by_id(DOMAIN, pid)
            assert got is not None and got.initial_data == data
        found = await repo.find_by_status(DOMAIN, [ProcessStatus.WAITING_FOR_REPLY])
        assert {p.process_id: p.initial_data for p in found} == expected
        stuck = await repo.find_stuck(DOMAIN, deadline_before=T0 + timedelta(seconds=1))
        assert {p.process_id: p.initial_data for p in stuck} == expected
        async with backend.transaction() as tx:
            snaps = await repo.lock([DOMAIN], list(expected), conn=tx)
        assert {s.process.process_id: s.process.initial_data for s in snaps} == expected
        # a returned copy can be changed without touching the store
        got = await repo.get_by_id(DOMAIN, saved.process_id)
        assert got is not None and got.initial_data is not None
        got.initial_data["range"]["from"] = "changed"
        # updates never write it: not a changed value, not None
        saved.initial_data = {"other": True}
        saved.status = ProcessStatus.COMPLETED
        await repo.update(saved)
        batched.initial_data, batched.version = None, 1  # insert_new leaves version alone
        await repo.apply(ProcessWrites(updates=[batched]))
        for pid in (saved.process_id, batched.process_id):
            got = await repo.get_by_id(DOMAIN, pid)
            assert got is not None and got.initial_data == expected[pid]
            assert got.version == 2

    # -- update --------------------------------------------------------------------------

    async def test_update_writes_fields_and_bumps_version(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        before = await repo.get_by_id(DOMAIN, p.process_id)
        assert before is not None
        p.status = ProcessStatus.COMPLETED
        p.state = {"n": 2}
        p.completed_at = T0 + timedelta(minutes=1)
        p.awaiting_command_id = None
        await repo.update(p)
        assert p.version == 2
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None
        assert got.status is ProcessStatus.COMPLETED
        assert got.state == {"n": 2}
        assert got.completed_at == T0 + timedelta(minutes=1)
        assert got.awaiting_command_id is None
        assert got.version == 2
        assert got.updated_at == p.updated_at
        assert got.updated_at >= before.updated_at

    async def test_update_with_stale_version_raises_and_writes_nothing(
        self, repo: ProcessRepository
    ) -> None:
        p = make_process()
        await repo.save(p)
        stale = make_process(process_id=p.process_id)
        stale.version = 7
        stale.status = ProcessStatus.FAILED
        with pytest.raises(ProcessVersionConflictError):
            await repo.update(stale)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.status is ProcessStatus.WAITING_FOR_REPLY
        assert got.version == 1

    async def test_update_of_missing_process_raises(self, repo: ProcessRepository) -> None:
        with pytest.raises(ProcessVersionConflictError):
            await repo.update(make_process())

    # -- find ----------------------------------------------------------------------------

    async def test_find_by_status_filters_and_orders_oldest_first(
        self, repo: ProcessRepository
    ) -> None:
        late = make_process(created_at=T0 + timedelta(seconds=2))
        early = make_process(created_at=T0)
        done = make_process(status=ProcessStatus.COMPLETED)
        tsq = make_process(status=ProcessStatus.WAITING_FOR_TSQ, created_at=T0 + timedelta(1))
        other = make_process(domain=OTHER)
        for p in (late, early, done, tsq, other):
            await repo.save(p)
        found = await repo.find_by_status(
            DOMAIN, [ProcessStatus.WAITING_FOR_REPLY, ProcessStatus.WAITING_FOR_TSQ]
        )
        assert [p.process_id for p in found] == [early.process_id, late.process_id, tsq.process_id]
        limited = await repo.find_by_status(DOMAIN, [ProcessStatus.WAITING_FOR_REPLY], limit=1)
        assert [p.process_id for p in limited] == [early.process_id]
        assert await repo.find_by_status(DOMAIN, [ProcessStatus.CANCELED]) == []

    async def test_find_stuck(self, repo: ProcessRepository) -> None:
        overdue = make_process(deadline_at=T0 + timedelta(seconds=10))
        not_yet = make_process(deadline_at=T0 + timedelta(seconds=100))
        no_deadline = make_process()
        finished = make_process(status=ProcessStatus.COMPLETED, deadline_at=T0)
        for p in (overdue, not_yet, no_deadline, finished):
            await repo.save(p)
        found = await repo.find_stuck(DOMAIN, deadline_before=T0 + timedelta(seconds=50))
        assert [p.process_id for p in found] == [overdue.process_id]
        # updated_before far in the future: every in-flight process counts as idle.
        idle = await repo.find_stuck(
            DOMAIN,
            deadline_before=T0,
            updated_before=datetime.now(UTC) + timedelta(days=3650),
        )
        assert {p.process_id for p in idle} == {
            overdue.process_id,
            not_yet.process_id,
            no_deadline.process_id,
        }

    # -- audit ---------------------------------------------------------------------------

    async def test_audit_trail_is_ordered_by_sent_at(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        second = make_entry("aggregate", sent_at=T0 + timedelta(seconds=2))
        first = make_entry("query", sent_at=T0 + timedelta(seconds=1))
        third = make_entry("render", sent_at=T0 + timedelta(seconds=2))  # tie: insert order
        for e in (second, first, third):
            await repo.log_step(DOMAIN, p.process_id, e)
        trail = await repo.get_audit_trail(DOMAIN, p.process_id)
        assert [e.step_name for e in trail] == ["query", "aggregate", "render"]
        assert trail[0] == first
        assert await repo.get_audit_trail(DOMAIN, uuid4()) == []

    async def test_update_step_reply_and_completed_steps(self, repo: ProcessRepository) -> None:
        p = make_process()
        await repo.save(p)
        query = make_entry("query", sent_at=T0)
        aggregate = make_entry("aggregate", sent_at=T0 + timedelta(seconds=1))
        undo = make_entry("undo_query", sent_at=T0 + timedelta(2), kind=AuditEntryKind.COMPENSATION)
        for e in (query, aggregate, undo):
            await repo.log_step(DOMAIN, p.process_id, e)
        received = T0 + timedelta(seconds=5)
        for e, outcome in ((query, ReplyOutcome.SUCCESS), (undo, ReplyOutcome.SUCCESS)):
            reply = ProcessAuditEntry(
                step_name=e.step_name,
                command_id=e.command_id,
                command_type="",
                command_data=None,
                sent_at=received,
                reply_outcome=outcome,
                reply_data={"path": "s3://x"},
                received_at=received,
                error_code="W",
                error_message="warn",
            )
            await repo.update_step_reply(DOMAIN, p.process_id, e.command_id, reply)
        trail = await repo.get_audit_trail(DOMAIN, p.process_id)
        assert trail[0].reply_outcome is ReplyOutcome.SUCCESS
        assert trail[0].reply_data == {"path": "s3://x"}
        assert trail[0].received_at == received
        assert (trail[0].error_code, trail[0].error_message) == ("W", "warn")
        assert trail[0].sent_at == T0 and trail[0].command_type == "Query"  # kept
        assert trail[1].reply_outcome is None
        assert trail[2].kind is AuditEntryKind.COMPENSATION
        assert await repo.get_completed_steps(DOMAIN, p.process_id) == ["query"]

    async def test_completed_steps_are_plain_strings(self, repo: ProcessRepository) -> None:
        from enum import StrEnum

        class Step(StrEnum):
            QUERY = "query"

        p = make_process()
        await repo.save(p)
        entry = make_entry("query")
        entry.step_name = Step.QUERY  # the seed's managers log StrEnum steps
        await repo.log_step(DOMAIN, p.process_id, entry)
        answered = make_entry("query", command_id=entry.command_id)
        answered.reply_outcome = ReplyOutcome.SUCCESS
        answered.received_at = T0
        await repo.update_step_reply(DOMAIN, p.process_id, entry.command_id, answered)
        steps = await repo.get_completed_steps(DOMAIN, p.process_id)
        assert steps == ["query"]
        assert [type(s) for s in steps] == [str]  # the same on every backend
        [logged] = await repo.get_audit_trail(DOMAIN, p.process_id)
        assert type(logged.step_name) is str

    async def test_the_seeds_methods_take_conn_positionally(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        async with backend.transaction() as tx:
            await repo.save(p, tx)
            assert (await repo.get_by_id(DOMAIN, p.process_id, tx)) is not None
            await repo.log_step(DOMAIN, p.process_id, make_entry("query"), tx)
            assert len(await repo.get_audit_trail(DOMAIN, p.process_id, tx)) == 1
            assert await repo.get_completed_steps(DOMAIN, p.process_id, tx) == []
            found = await repo.find_by_status(DOMAIN, [ProcessStatus.WAITING_FOR_REPLY], tx)
            assert [f.process_id for f in found] == [p.process_id]
            loaded = await repo.get_by_id(DOMAIN, p.process_id, tx)
            assert loaded is not None
            loaded.error_code = "X"
            await repo.update(loaded, tx)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.error_code == "X" and got.version == 2

    async def test_updating_a_caller_built_process_says_how_to_update(
        self, repo: ProcessRepository
    ) -> None:
        p = make_process()
        await repo.save(p)
        built = make_process(process_id=p.process_id)  # not loaded: version 0
        built.error_code = "X"
        with pytest.raises(ProcessVersionConflictError, match=r"get_by_id.*change it.*update"):
            await repo.update(built)
        got = await repo.get_by_id(DOMAIN, p.process_id)
        assert got is not None and got.error_code is None and got.version == 1
