"""The pure kernel: decisions from (hooks, snapshot, message, now), no I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

import pytest

from commandbus.bus import CommandBus
from commandbus.memory import InMemoryBackend
from commandbus.models import Reply, ReplyOutcome
from commandbus.process import (
    AuditEntryKind,
    ProcessCommand,
    ProcessHookError,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
    TimeoutAction,
    decide,
    decide_start,
)
from commandbus.process.kernel import (
    PROCESS_COMMAND_NAMESPACE,
    CancelRequested,
    ReplyReceived,
    TimerFired,
    command_id_for,
    parse_timer_message,
    timer_message,
)
from commandbus.testing.process_behaviour import PipelineProcess, PipelineState, PipelineStep

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
S = PipelineStep


@pytest.fixture
def manager() -> PipelineProcess:
    return PipelineProcess(CommandBus(InMemoryBackend()))


def new_process(state: PipelineState | None = None) -> ProcessMetadata[PipelineState, PipelineStep]:
    return ProcessMetadata(
        domain="pipeline",
        process_id=UUID("00000000-0000-0000-0000-000000000001"),
        process_type="Pipeline",
        state=state or PipelineState(),
        created_at=NOW,
        updated_at=NOW,
        version=1,
    )


async def started(manager: PipelineProcess) -> ProcessSnapshot[PipelineState, PipelineStep]:
    decision = await decide_start(manager, new_process(), NOW)
    assert decision.process is not None
    return ProcessSnapshot(decision.process, list(decision.audit_inserts))


def answer(
    snap: ProcessSnapshot[PipelineState, PipelineStep],
    outcome: ReplyOutcome = ReplyOutcome.SUCCESS,
    data: dict[str, Any] | None = None,
) -> Reply:
    assert snap.process.awaiting_command_id is not None
    return Reply(
        snap.process.awaiting_command_id,
        snap.process.process_id,
        outcome,
        {"value": "v"} if data is None else data,
        "E" if outcome is not ReplyOutcome.SUCCESS else None,
        "err" if outcome is not ReplyOutcome.SUCCESS else None,
    )


async def step(
    manager: PipelineProcess,
    snap: ProcessSnapshot[PipelineState, PipelineStep],
    message: Any,
    now: datetime = NOW,
) -> ProcessSnapshot[PipelineState, PipelineStep]:
    decision = await decide(manager, snap, message, now)
    assert decision.ignored is None and decision.process is not None
    updates = {e.command_id: e for e in decision.audit_updates}
    audit = [updates.get(e.command_id, e) for e in snap.audit] + list(decision.audit_inserts)
    return ProcessSnapshot(decision.process, audit)


async def test_start_sends_first_step_with_a_deterministic_id(manager: PipelineProcess) -> None:
    d1 = await decide_start(manager, new_process(), NOW)
    d2 = await decide_start(manager, new_process(), NOW)
    assert d1 == d2
    [command] = d1.commands
    pid = UUID("00000000-0000-0000-0000-000000000001")
    assert command.command_id == command_id_for("pipeline", pid, 1)
    assert command.command_id == uuid5(PROCESS_COMMAND_NAMESPACE, f"pipeline/{pid}/1")
    assert (command.command_type, command.step_name, command.kind) == (
        "StepA",
        "a",
        AuditEntryKind.STEP,
    )
    assert d1.process is not None
    assert d1.process.status is ProcessStatus.WAITING_FOR_REPLY
    assert d1.process.awaiting_command_id == command.command_id
    assert d1.process.command_seq == 1
    assert [e.sent_at for e in d1.audit_inserts] == [NOW]
    assert d1.timers == ()


async def test_decide_does_not_modify_its_input(manager: PipelineProcess) -> None:
    snap = await started(manager)
    before = copy.deepcopy(snap)
    decision = await decide(manager, snap, ReplyReceived(answer(snap)), NOW)
    assert snap == before
    assert decision.process is not None
    assert decision.process.state.results == {"a": "v"}
    assert snap.process.state.results == {}


async def test_decide_without_a_state_copy_hands_the_state_over(manager: PipelineProcess) -> None:
    """copy_state=False (the engine, for the last message of a process in a batch): the
    same decision, made on the snapshot's own state object."""
    snap = await started(manager)
    copied = await decide(manager, copy.deepcopy(snap), ReplyReceived(answer(snap)), NOW)
    handed = await decide(manager, snap, ReplyReceived(answer(snap)), NOW, copy_state=False)
    assert handed == copied
    assert handed.process is not None and handed.process.state is snap.process.state


async def test_sync_build_command_is_supported(manager: PipelineProcess) -> None:
    class SyncPipeline(PipelineProcess):
        def build_command(  # type: ignore[override]
            self, step: PipelineStep, state: PipelineState
        ) -> ProcessCommand[Any]:
            return ProcessCommand(f"Sync{step.value.upper()}", {})

    sync = SyncPipeline(manager.command_bus)
    decision = await decide_start(sync, new_process(), NOW)
    assert [c.command_type for c in decision.commands] == ["SyncA"]


async def test_success_chain_to_completion(manager: PipelineProcess) -> None:
    snap = await started(manager)
    later = NOW
    for expected in (S.B, S.C, S.D):
        later += timedelta(seconds=1)
        snap = await step(manager, snap, ReplyReceived(answer(snap)), later)
        assert snap.process.current_step is expected
    later += timedelta(seconds=1)
    snap = await step(manager, snap, ReplyReceived(answer(snap)), later)
    assert snap.process.status is ProcessStatus.COMPLETED
    assert snap.process.completed_at == later
    assert snap.process.awaiting_command_id is None
    ids = [e.command_id for e in snap.audit]
    assert len(set(ids)) == 4 and snap.process.command_seq == 4


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("terminal", "process is COMPLETED"),
        ("unknown_command", "command was not sent by this process"),
        ("other_process", "reply correlates to another process"),
    ],
)
async def test_ignored_replies(manager: PipelineProcess, mutate: str, reason: str) -> None:
    snap = await started(manager)
    reply = answer(snap)
    if mutate == "terminal":
        snap.process.status = ProcessStatus.COMPLETED
    elif mutate == "unknown_command":
        reply = Reply(uuid4(), snap.process.process_id, ReplyOutcome.SUCCESS, {})
    else:
        reply = Reply(reply.command_id, uuid4(), ReplyOutcome.SUCCESS, {})
    decision = await decide(manager, snap, ReplyReceived(reply), NOW)
    assert decision.ignored == reason
    assert decision.process is None and decision.commands == ()


async def test_duplicate_and_stale(manager: PipelineProcess) -> None:
    snap = await started(manager)
    first = answer(snap)
    snap = await step(manager, snap, ReplyReceived(first))
    dup = await decide(manager, snap, ReplyReceived(first), NOW)
    assert dup.ignored == "duplicate reply: command already answered SUCCESS"
    # B times out and is retried: the first B command is then stale.
    manager.timeout_action = TimeoutAction.RETRY
    old_b = snap.process.awaiting_command_id
    assert old_b is not None
    snap = await step(manager, snap, TimerFired(old_b))
    assert snap.process.awaiting_command_id != old_b
    stale = Reply(old_b, snap.process.process_id, ReplyOutcome.SUCCESS, {})
    decision = await decide(manager, snap, ReplyReceived(stale), NOW)
    assert decision.ignored == "stale reply: the process no longer awaits this command"


async def test_tsq_notice_then_final_reply(manager: PipelineProcess) -> None:
    snap = await started(manager)
    waiting = await step(
        manager, snap, ReplyReceived(answer(snap, ReplyOutcome.IN_TROUBLESHOOTING_QUEUE))
    )
    assert waiting.process.status is ProcessStatus.WAITING_FOR_TSQ
    assert waiting.process.awaiting_command_id == snap.process.awaiting_command_id
    assert waiting.audit[0].reply_outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
    assert not waiting.audit[0].is_answered
    done = await step(manager, waiting, ReplyReceived(answer(snap)))
    assert done.process.status is ProcessStatus.WAITING_FOR_REPLY
    assert done.process.current_step is S.B
    assert done.process.error_code is None


async def test_timeout_actions(manager: PipelineProcess) -> None:
    manager.timeouts = {"a": 10}
    snap = await started(manager)
    command_id = snap.process.awaiting_command_id
    assert command_id is not None
    assert snap.process.deadline_at == NOW + timedelta(seconds=10)
    decision = await decide_start(manager, new_process(), NOW)
    assert [(t.command_id, t.delay_seconds) for t in decision.timers] == [(command_id, 10.0)]

    later = NOW + timedelta(seconds=11)
    parked = await step(manager, snap, TimerFired(command_id), later)
    # Nothing is in the troubleshooting queue: the process waits for an operator's decision.
    assert parked.process.status is ProcessStatus.WAITING_FOR_OPERATOR
    assert parked.process.error_code == "STEP_TIMEOUT"
    assert parked.audit[0].timed_out_at == later
    again = await decide(manager, parked, TimerFired(command_id), later)
    assert again.ignored == "timer while the process waits for an operator"

    manager.timeout_action = TimeoutAction.FAIL
    failed = await step(manager, snap, TimerFired(command_id), later)
    assert failed.process.status is ProcessStatus.FAILED
    fail_decision = await decide(manager, snap, TimerFired(command_id), later)
    assert fail_decision.withdrawals == (command_id,)  # the abandoned command must not run

    manager.timeout_action = TimeoutAction.RETRY
    retried = snap
    for attempt in (2, 3):
        awaited = retried.process.awaiting_command_id
        assert awaited is not None
        retried = await step(manager, retried, TimerFired(awaited), later)
        assert retried.process.command_seq == attempt
    awaited = retried.process.awaiting_command_id
    assert awaited is not None
    # on_step_timeout gives up on the third attempt in a row.
    given_up = await step(manager, retried, TimerFired(awaited), later)
    assert given_up.process.status is ProcessStatus.FAILED


async def test_cancel_and_compensation_plan(manager: PipelineProcess) -> None:
    snap = await started(manager)
    for _ in range(3):  # A, B, C answered; D in flight
        snap = await step(manager, snap, ReplyReceived(answer(snap)))
    canceled = await step(manager, snap, CancelRequested("stop"))
    assert canceled.process.status is ProcessStatus.COMPENSATING
    assert canceled.process.current_step is S.UNDO_C
    plan = canceled.process.compensation
    assert plan is not None
    assert (plan.target, plan.remaining, plan.failed) == (ProcessStatus.CANCELED, ("undo_a",), ())
    twice = await decide(manager, canceled, CancelRequested("again"), NOW)
    assert twice.ignored == "process is already compensating"
    # The compensation times out: recorded as failed, the next one is sent.
    awaited = canceled.process.awaiting_command_id
    assert awaited is not None
    after = await step(manager, canceled, TimerFired(awaited))
    assert after.process.current_step is S.UNDO_A
    assert after.process.compensation is not None
    assert after.process.compensation.failed == ("undo_c",)
    final = await step(manager, after, ReplyReceived(answer(after)))
    assert final.process.status is ProcessStatus.FAILED
    assert final.process.error_code == "COMPENSATION_FAILED"


async def test_hook_errors_are_wrapped(manager: PipelineProcess) -> None:
    class Broken(PipelineProcess):
        async def build_command(
            self, step: PipelineStep, state: PipelineState
        ) -> ProcessCommand[Any]:
            return ProcessCommand("Bad Type!", {})

    with pytest.raises(ProcessHookError, match="build_command"):
        await decide_start(Broken(manager.command_bus), new_process(), NOW)

    class Huge(PipelineProcess):
        async def build_command(
            self, step: PipelineStep, state: PipelineState
        ) -> ProcessCommand[Any]:
            return ProcessCommand("Big", {"blob": "x" * 300_000})

    with pytest.raises(ProcessHookError, match="bytes encoded"):
        await decide_start(Huge(manager.command_bus), new_process(), NOW)


def test_timer_message_round_trip() -> None:
    pid, cid = uuid4(), uuid4()
    message = timer_message("pipeline", pid, cid, NOW)
    parsed = parse_timer_message(message)
    assert parsed is not None
    assert parsed[0] == "pipeline" and parsed[1] == pid and parsed[2] == TimerFired(cid)
    assert parse_timer_message({"command_id": "x"}) is None
    with pytest.raises(ValueError, match="malformed process timer"):
        parse_timer_message({"kind": "commandbus.process_timer", "domain": "pipeline"})


class BigCommands(PipelineProcess):
    async def build_command(self, step: PipelineStep, state: PipelineState) -> ProcessCommand[Any]:
        return ProcessCommand("StepA", {"pad": "x" * 500})


async def test_process_commands_obey_the_payload_limit_of_the_managers_bus() -> None:
    # The same limit as bus.send: a process must not send what the bus would refuse.
    strict = BigCommands(CommandBus(InMemoryBackend(), max_payload_bytes=200))
    with pytest.raises(ProcessHookError, match="the limit is 200 bytes"):
        await decide_start(strict, new_process(), NOW)
    roomy = BigCommands(CommandBus(InMemoryBackend(), max_payload_bytes=1_000))
    decision = await decide_start(roomy, new_process(), NOW)
    assert [c.data for c in decision.commands] == [{"pad": "x" * 500}]
