"""End-to-end behaviour of process managers, written once, run on every backend.

``ProcessBehaviourContract`` drives real workers, a real ``TroubleshootingQueue`` and
``ProcessReplyRouter`` s against a backend, with a small test process ("Pipeline": steps
A -> B -> C -> D, B skipped when the start input says so; A and C have compensations,
B and D have none). Subclass it as ``Test…`` with a ``backend`` fixture and an
``advance(backend, seconds)`` hook that moves the queue's time (a ``VirtualClock`` for the
memory backend; shifting visibility deadlines for PostgreSQL).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest

from commandbus.bus import CommandBus
from commandbus.errors import (
    BusinessRuleException,
    InvalidOperationError,
    PermanentCommandError,
    ProcessNotFoundError,
    TransientCommandError,
    ValidationError,
)
from commandbus.handler import HandlerContext, HandlerRegistry
from commandbus.models import Command, Reply, ReplyOutcome
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend
from commandbus.process.base import BaseProcessManager
from commandbus.process.errors import ProcessAlreadyExistsError
from commandbus.process.models import (
    AuditEntryKind,
    ProcessCommand,
    ProcessMessageDisposition,
    ProcessMetadata,
    ProcessStatus,
    StepDefinition,
    TimeoutAction,
)
from commandbus.process.router import ProcessReplyRouter
from commandbus.worker import Worker

__all__ = [
    "Env",
    "OtherProcess",
    "PipelineProcess",
    "PipelineState",
    "PipelineStep",
    "ProcessBehaviourContract",
    "Services",
]

DOMAIN = "pipeline"
REPLIES = "pipeline__process_replies"


class PipelineStep(StrEnum):
    A = "a"
    B = "b"
    C = "c"
    D = "d"
    UNDO_A = "undo_a"
    UNDO_C = "undo_c"


@dataclass
class PipelineState:
    skip_b: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    undone: list[str] = field(default_factory=list)
    poison: bool = False  # update_state raises for poisoned processes (fail_update_on)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skip_b": self.skip_b,
            "results": self.results,
            "undone": self.undone,
            "poison": self.poison,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineState:
        return cls(
            bool(data["skip_b"]), dict(data["results"]), list(data["undone"]), data["poison"]
        )


S = PipelineStep


class PipelineProcess(BaseProcessManager[PipelineState, PipelineStep]):
    process_type = "Pipeline"
    domain = DOMAIN
    steps: ClassVar = (
        StepDefinition(S.A, "StepA", compensation_step=S.UNDO_A),
        StepDefinition(S.B, "StepB"),
        StepDefinition(S.C, "StepC", compensation_step=S.UNDO_C),
        StepDefinition(S.D, "StepD"),
    )
    #: Tests set these per instance.
    timeouts: dict[str, float]
    timeout_action: TimeoutAction
    fail_update_on: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = {}
        self.timeout_action = TimeoutAction.TSQ
        self.fail_update_on = None

    def create_initial_state(self, initial_data: dict[str, Any]) -> PipelineState:
        if initial_data.get("invalid"):
            raise ValueError("invalid start input")
        return PipelineState(
            skip_b=bool(initial_data.get("skip_b", False)),
            poison=bool(initial_data.get("poison", False)),
        )

    def get_first_step(self, state: PipelineState) -> PipelineStep:
        return S.A

    async def build_command(self, step: PipelineStep, state: PipelineState) -> ProcessCommand[Any]:
        command_type = {
            S.A: "StepA",
            S.B: "StepB",
            S.C: "StepC",
            S.D: "StepD",
            S.UNDO_A: "UndoA",
            S.UNDO_C: "UndoC",
        }[step]
        return ProcessCommand(command_type, {"step": step.value, "seen": sorted(state.results)})

    def update_state(self, state: PipelineState, step: PipelineStep, reply: Reply) -> None:
        if state.poison and self.fail_update_on == step.value:
            raise RuntimeError(f"update_state bug on {step}")
        if step in (S.UNDO_A, S.UNDO_C):
            state.undone.append(step.value)
        else:
            state.results[step.value] = (reply.data or {}).get("value")

    def get_next_step(
        self, current_step: PipelineStep, reply: Reply, state: PipelineState
    ) -> PipelineStep | None:
        if current_step is S.A:
            return S.C if state.skip_b else S.B
        if current_step is S.B:
            return S.C
        if current_step is S.C:
            return S.D
        return None

    def get_step_timeout(self, step: PipelineStep, state: PipelineState) -> float | None:
        return self.timeouts.get(step.value)

    def on_step_timeout(
        self, step: PipelineStep, state: PipelineState, attempt: int
    ) -> TimeoutAction:
        if self.timeout_action is TimeoutAction.RETRY and attempt >= 3:
            return TimeoutAction.FAIL
        return self.timeout_action


class OtherProcess(PipelineProcess):
    process_type = "Other"


class Services:
    """Programmable handlers: ``plan[command_type]`` is a list of actions used one per
    call ("ok", "transient", "permanent", "business", "hold"); when empty: "ok"."""

    def __init__(self, registry: HandlerRegistry) -> None:
        self.plan: dict[str, list[str]] = {}
        self.calls: list[str] = []
        for command_type in ("StepA", "StepB", "StepC", "StepD", "UndoA", "UndoC"):
            registry.register(DOMAIN, command_type, self._handle)

    async def _handle(self, command: Command, context: HandlerContext) -> dict[str, Any]:
        self.calls.append(command.command_type)
        actions = self.plan.get(command.command_type) or []
        action = actions.pop(0) if actions else "ok"
        if action == "transient":
            raise TransientCommandError("BUSY", "try again")
        if action == "permanent":
            raise PermanentCommandError("BROKEN", f"{command.command_type} is broken")
        if action == "business":
            raise BusinessRuleException("REFUSED", f"{command.command_type} refused")
        return {"value": f"{command.command_type}-ok"}


@dataclass
class Env:
    backend: Backend
    bus: CommandBus
    manager: PipelineProcess
    worker: Worker
    router: ProcessReplyRouter
    tsq: TroubleshootingQueue
    services: Services


class ProcessBehaviourContract:
    """Process manager behaviour on a backend (see the module docstring)."""

    @pytest.fixture
    async def backend(self) -> Backend:
        raise NotImplementedError("subclass and provide a `backend` fixture")

    async def advance(self, backend: Backend, seconds: float) -> None:
        raise NotImplementedError

    async def let_others_run(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    @pytest.fixture
    async def env(self, backend: Backend) -> Env:
        bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=[1]))
        registry = HandlerRegistry()
        services = Services(registry)
        manager = PipelineProcess(bus)
        return Env(
            backend=backend,
            bus=bus,
            manager=manager,
            worker=Worker(backend, DOMAIN, registry, retry_policy=bus.retry_policy),
            router=ProcessReplyRouter(backend, managers={"Pipeline": manager}),
            tsq=TroubleshootingQueue(backend),
            services=services,
        )

    # -- helpers -------------------------------------------------------------------------

    async def drive(self, env: Env, rounds: int = 50) -> None:
        """Run worker and router batches until neither finds anything."""
        for _ in range(rounds):
            worked = await env.worker.process_once()
            routed = await env.router.process_once()
            if worked == 0 and routed == 0:
                return
        raise AssertionError("the system did not settle")

    async def process(self, env: Env, pid: UUID) -> ProcessMetadata[PipelineState, PipelineStep]:
        found = await env.manager.get(pid)
        assert found is not None
        return found

    async def steps_sent(self, env: Env, pid: UUID) -> list[tuple[str, str | None]]:
        trail = await env.manager.get_audit_trail(pid)
        return [(e.step_name, e.reply_outcome.value if e.reply_outcome else None) for e in trail]

    async def inject(self, env: Env, *messages: Any) -> None:
        """Put messages on the reply queue as any writer could (non-objects included)."""
        queue = env.backend.queue
        unchecked = getattr(queue, "enqueue_unchecked", None)  # the memory queue validates
        if unchecked is not None:
            await unchecked(REPLIES, list(messages))
        else:
            await queue.enqueue(REPLIES, list(messages))

    async def log(self, env: Env, disposition: ProcessMessageDisposition) -> list[str]:
        records = await env.manager.process_repo.list_messages(disposition=disposition)
        return [r.reason for r in records]

    # -- happy path, audit, conditional steps -------------------------------------------

    async def test_happy_path_completes_with_typed_state_and_ordered_audit(self, env: Env) -> None:
        pid = await env.manager.start({})
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY
        assert p.current_step is S.A
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert isinstance(p.state, PipelineState)
        assert p.state.results == {
            "a": "StepA-ok",
            "b": "StepB-ok",
            "c": "StepC-ok",
            "d": "StepD-ok",
        }
        assert p.current_step is S.D
        assert p.completed_at is not None and p.awaiting_command_id is None
        trail = await env.manager.get_audit_trail(pid)
        assert [(e.step_name, e.command_type, e.reply_outcome) for e in trail] == [
            ("a", "StepA", ReplyOutcome.SUCCESS),
            ("b", "StepB", ReplyOutcome.SUCCESS),
            ("c", "StepC", ReplyOutcome.SUCCESS),
            ("d", "StepD", ReplyOutcome.SUCCESS),
        ]
        assert trail[1].command_data == {"step": "b", "seen": ["a"]}
        assert trail[2].reply_data == {"value": "StepC-ok"}
        assert trail[2].command_data == {"step": "c", "seen": ["a", "b"]}
        for earlier, later in itertools.pairwise(trail):
            assert earlier.received_at is not None and earlier.received_at <= later.sent_at
        # The commands were sent with the process id as correlation id.
        for e in trail:
            meta = await env.bus.get_command(DOMAIN, e.command_id)
            assert meta is not None and meta.correlation_id == pid
            assert meta.reply_to == REPLIES
        assert env.router.stats.applied == 4

    async def test_conditional_step_is_skipped(self, env: Env) -> None:
        pid = await env.manager.start({"skip_b": True})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]

    async def test_find_by_status(self, env: Env) -> None:
        done = await env.manager.start({})
        await self.drive(env)
        waiting = await env.manager.start({})
        found = await env.manager.find_by_status([ProcessStatus.WAITING_FOR_REPLY])
        assert [p.process_id for p in found] == [waiting]
        found = await env.manager.find_by_status([ProcessStatus.COMPLETED])
        assert [p.process_id for p in found] == [done]
        assert isinstance(found[0].state, PipelineState)

    # -- strays ----------------------------------------------------------------------------

    async def test_duplicate_reply_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        await self.drive(env)
        before = await self.process(env, pid)
        first = (await env.manager.get_audit_trail(pid))[0]
        dup = Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "again"})
        await self.inject(env, dup.to_message())
        await self.drive(env)
        after = await self.process(env, pid)
        assert after.version == before.version and after.state == before.state
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == ["process is COMPLETED"]
        assert await env.backend.queue.depth(REPLIES) == 0

    async def test_duplicate_reply_while_running_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # A answered, B sent
        first = (await env.manager.get_audit_trail(pid))[0]
        dup = Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "again"})
        await self.inject(env, dup.to_message())
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.current_step is S.B and p.state.results == {"a": "StepA-ok"}
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "duplicate reply: command already answered SUCCESS"
        ]
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        assert len(await env.manager.get_audit_trail(pid)) == 4

    async def test_replies_for_unknown_process_without_correlation_and_malformed(
        self, env: Env
    ) -> None:
        unknown = Reply(uuid4(), uuid4(), ReplyOutcome.SUCCESS, {})
        uncorrelated = Reply(uuid4(), None, ReplyOutcome.SUCCESS, {})
        await self.inject(env, unknown.to_message(), uncorrelated.to_message(), {"what": "is this"})
        assert await env.router.process_once() == 3
        assert await env.backend.queue.depth(REPLIES) == 0
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "unknown process",
            "reply has no correlation id",
        ]
        [parked] = await env.router.parked_messages()
        assert parked.message == {"what": "is this"}
        assert parked.reason.startswith("malformed reply message")

    async def test_messages_that_are_not_objects_are_parked_and_the_queue_moves_on(
        self, env: Env
    ) -> None:
        # Anyone can write to a queue: none of these may stop the router.
        junk: list[Any] = [[], "a string", None, 42, True, 1.5, {"kind": 7}]
        junk.append({"kind": "commandbus.process_timer", "domain": ["x"], "process_id": 1})
        bad_types = Reply(uuid4(), uuid4(), ReplyOutcome.FAILED).to_message()
        bad_types.update(error_code=["E"], error_message={"no": "text"})
        junk.append(bad_types)
        await self.inject(env, *junk)
        pid = await env.manager.start({})  # a canary behind the junk
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        parked = await env.router.parked_messages()
        canonical = functools.partial(json.dumps, sort_keys=True)
        assert sorted(canonical(r.message) for r in parked) == sorted(map(canonical, junk))
        assert all(r.reason.startswith("malformed") for r in parked), [r.reason for r in parked]
        assert await env.backend.queue.depth(REPLIES) == 0

    async def test_reply_for_a_command_of_another_process_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        stray = Reply(uuid4(), pid, ReplyOutcome.SUCCESS, {"value": "x"})
        await self.inject(env, stray.to_message())
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.version == 1
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "command was not sent by this process"
        ]

    async def test_two_routers_racing_on_duplicates_advance_once(self, env: Env) -> None:
        pids = [await env.manager.start({}) for _ in range(5)]
        await env.worker.process_once()  # the five A commands reply
        # Duplicate every reply: 10 replies for 5 commands.
        messages = []
        for pid in pids:
            first = (await env.manager.get_audit_trail(pid))[0]
            messages.append(Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "v"}))
        await self.inject(env, *[m.to_message() for m in messages])
        other = ProcessReplyRouter(env.backend, managers=[env.manager], batch_size=1)
        env.router.batch_size = 1

        async def run(router: ProcessReplyRouter) -> None:
            while await router.process_once():  # noqa: ASYNC110 - yield between batches
                await asyncio.sleep(0)

        await asyncio.gather(run(env.router), run(other))
        for pid in pids:
            assert await self.steps_sent(env, pid) == [("a", "SUCCESS"), ("b", None)]
            p = await self.process(env, pid)
            assert p.command_seq == 2 and p.current_step is S.B
        assert env.router.stats.applied + other.stats.applied == 5
        assert env.router.stats.ignored + other.stats.ignored == 5
        await self.drive(env)
        for pid in pids:
            assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED

    # -- troubleshooting queue ---------------------------------------------------------

    async def _to_tsq(self, env: Env, step_type: str = "StepB") -> tuple[UUID, UUID]:
        env.services.plan[step_type] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ
        assert (p.error_code, p.error_message) == ("BROKEN", f"{step_type} is broken")
        assert p.awaiting_command_id is not None
        return pid, p.awaiting_command_id

    async def test_tsq_then_operator_retry_continues(self, env: Env) -> None:
        pid, command_id = await self._to_tsq(env)
        trail = await env.manager.get_audit_trail(pid)
        assert trail[1].reply_outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
        await env.tsq.operator_retry(DOMAIN, command_id, operator="ops")
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.error_code is None
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]

    async def test_tsq_then_operator_complete_continues_with_its_result(self, env: Env) -> None:
        pid, command_id = await self._to_tsq(env)
        await env.tsq.operator_complete(DOMAIN, command_id, {"value": "by-hand"}, operator="ops")
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.state.results["b"] == "by-hand"

    async def test_tsq_cancel_compensates_newest_first_and_ends_compensated_after_all(
        self, env: Env
    ) -> None:
        env.services.plan["StepD"] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ and p.current_step is S.D
        assert p.awaiting_command_id is not None
        await env.tsq.operator_cancel(DOMAIN, p.awaiting_command_id, "give up", operator="ops")
        # The CANCELED reply starts compensation: C first (newest), B has none, then A.
        await env.router.process_once()
        p = await self.process(env, pid)
        assert (p.status, p.current_step) == (ProcessStatus.COMPENSATING, S.UNDO_C)
        await env.worker.process_once()
        await env.router.process_once()
        p = await self.process(env, pid)
        assert (p.status, p.current_step) == (ProcessStatus.COMPENSATING, S.UNDO_A)
        await env.worker.process_once()
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPENSATED
        assert p.state.undone == ["undo_c", "undo_a"]
        assert p.completed_at is not None
        trail = await env.manager.get_audit_trail(pid)
        assert [(e.step_name, e.kind, e.reply_outcome) for e in trail] == [
            ("a", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("b", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("c", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("d", AuditEntryKind.STEP, ReplyOutcome.CANCELED),
            ("undo_c", AuditEntryKind.COMPENSATION, ReplyOutcome.SUCCESS),
            ("undo_a", AuditEntryKind.COMPENSATION, ReplyOutcome.SUCCESS),
        ]

    async def test_business_rule_failure_compensates_then_ends_failed(self, env: Env) -> None:
        env.services.plan["StepD"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED
        assert (p.error_code, p.error_message) == ("REFUSED", "StepD refused")
        assert p.state.undone == ["undo_c", "undo_a"]
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "FAILED"),
            ("undo_c", "SUCCESS"),
            ("undo_a", "SUCCESS"),
        ]

    async def test_business_rule_failure_of_first_step_fails_at_once(self, env: Env) -> None:
        env.services.plan["StepA"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "REFUSED"
        assert await self.steps_sent(env, pid) == [("a", "FAILED")]

    async def test_cancel_with_a_reason_that_cannot_be_stored_is_rejected(self, env: Env) -> None:
        pid = await env.manager.start({})
        before = await self.process(env, pid)
        for reason in ({"a": 1}, ["x"], "nul\x00", "lone \ud800", "x" * 10_001):
            with pytest.raises(ValidationError, match="reason"):
                await env.manager.cancel(pid, reason=reason)  # type: ignore[arg-type]
        after = await self.process(env, pid)
        assert after.status is before.status and after.version == before.version

    async def test_cancel_compensates_newest_first_and_ignores_late_reply(self, env: Env) -> None:
        # A and B done, C in flight: cancel -> UndoA only (B has none, C never completed).
        pid = await env.manager.start({})
        for _ in range(2):
            await env.worker.process_once()
            await env.router.process_once()
        p = await self.process(env, pid)
        assert p.current_step is S.C
        c_command = p.awaiting_command_id
        canceled = await env.manager.cancel(pid, "customer withdrew")
        assert canceled.status is ProcessStatus.COMPENSATING
        assert canceled.current_step is S.UNDO_A
        # The worker now runs C (late) and UndoA; C's reply is stale.
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.CANCELED
        assert (p.error_code, p.error_message) == ("CANCELED", "customer withdrew")
        assert "c" not in p.state.results
        assert p.state.undone == ["undo_a"]
        ignored = await env.manager.process_repo.list_messages(
            disposition=ProcessMessageDisposition.IGNORED
        )
        assert [(r.command_id, r.reason) for r in ignored] == [
            (c_command, "stale reply: the process no longer awaits this command")
        ]
        with pytest.raises(InvalidOperationError):
            await env.manager.cancel(pid, "again")
        with pytest.raises(ProcessNotFoundError):
            await env.manager.cancel(uuid4(), "nothing")

    async def test_failing_compensation_is_recorded_and_the_rest_continue(self, env: Env) -> None:
        env.services.plan["StepD"] = ["business"]
        env.services.plan["UndoC"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED
        assert p.error_code == "COMPENSATION_FAILED"
        assert p.error_message == ("compensation failed for: undo_c (after REFUSED: StepD refused)")
        assert p.compensation is not None and p.compensation.failed == ("undo_c",)
        assert p.state.undone == ["undo_a"]  # the next compensation still ran
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "FAILED"),
            ("undo_c", "FAILED"),
            ("undo_a", "SUCCESS"),
        ]

    # -- timeouts ----------------------------------------------------------------------

    async def test_step_timeout_default_parks_for_operator_and_late_reply_continues(
        self, env: Env
    ) -> None:
        env.manager.timeouts = {"b": 30}
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent with a 30 s timer
        p = await self.process(env, pid)
        assert p.deadline_at is not None
        await self.advance(env.backend, 31)
        assert await env.router.process_once() == 1  # the timer
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ
        assert p.error_code == "STEP_TIMEOUT"
        trail = await env.manager.get_audit_trail(pid)
        assert trail[1].timed_out_at is not None and trail[1].reply_outcome is None
        await self.drive(env)  # B's reply arrives late: still awaited -> continues
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.error_code is None

    async def test_step_timeout_retry_sends_again_and_ignores_the_late_reply(
        self, env: Env
    ) -> None:
        env.manager.timeouts = {"b": 30}
        env.manager.timeout_action = TimeoutAction.RETRY
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent
        await self.advance(env.backend, 31)
        await env.router.process_once()  # timer: B sent again
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.command_seq == 3
        await self.drive(env)  # both B commands reply; the first one is stale
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", None),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "stale reply: the process no longer awaits this command"
        ]

    async def test_step_timeout_compensate(self, env: Env) -> None:
        env.manager.timeouts = {"b": 30}
        env.manager.timeout_action = TimeoutAction.COMPENSATE
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()
        await self.advance(env.backend, 31)
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPENSATING and p.current_step is S.UNDO_A
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "STEP_TIMEOUT"
        assert p.state.undone == ["undo_a"] and "b" not in p.state.results

    async def test_timer_after_the_reply_is_ignored(self, env: Env) -> None:
        env.manager.timeouts = {"a": 30}
        pid = await env.manager.start({})
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        await self.advance(env.backend, 31)
        assert await env.router.process_once() == 1
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == ["process is COMPLETED"]

    # -- recovery ----------------------------------------------------------------------

    async def test_new_routers_continue_in_flight_processes(self, env: Env) -> None:
        pids = [await env.manager.start({}) for _ in range(3)]
        await env.worker.process_once()
        await env.router.process_once()
        # "Restart": new manager, router and worker objects on the same storage.
        manager = PipelineProcess(env.bus)
        router = ProcessReplyRouter(env.backend, managers=[manager])
        for _ in range(10):
            await env.worker.process_once()
            await router.process_once()
        for pid in pids:
            p = await manager.get(pid)
            assert p is not None and p.status is ProcessStatus.COMPLETED

    async def test_recover_lists_processes_past_their_deadline(self, env: Env) -> None:
        env.manager.timeouts = {"a": 30}
        pid = await env.manager.start({})
        now = env.backend.clock.now()
        assert await env.router.recover(now) == []
        later = now + timedelta(seconds=60)
        stuck = await env.router.recover(later)
        assert [p.process_id for p in stuck] == [pid]
        assert await env.router.recover(later, grace_seconds=3600) == []
        # Without a deadline to go by: idle for longer than stuck_after.
        idle = await env.router.recover(later, grace_seconds=3600, stuck_after=30.0)
        assert [p.process_id for p in idle] == [pid]
        assert await env.router.recover(later, grace_seconds=3600, stuck_after=3600.0) == []
        # Refire: a timer visible at once acts exactly once.
        await env.router.recover(later, refire_timers=True)
        assert await env.router.process_once() == 1
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ and p.error_code == "STEP_TIMEOUT"

    # -- starting ----------------------------------------------------------------------

    async def test_start_with_bad_input_writes_nothing(self, env: Env) -> None:
        with pytest.raises(ValueError, match="invalid start input"):
            await env.manager.start({"invalid": True}, process_id=uuid4())
        assert await env.manager.find_by_status(list(ProcessStatus)) == []
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0

    async def test_start_stores_a_copy_of_the_start_input(self, env: Env) -> None:
        given: dict[str, Any] = {"skip_b": True, "meta": {"tags": ["x"], "ratio": 0.5}}
        pid = await env.manager.start(given)
        given["meta"]["tags"].append("changed later")  # the stored copy is a deep copy
        expected = {"skip_b": True, "meta": {"tags": ["x"], "ratio": 0.5}}
        assert (await self.process(env, pid)).initial_data == expected
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.initial_data == expected  # step updates never change it
        [many] = await env.manager.start_many([(uuid4(), {"n": 1})])
        assert (await self.process(env, many)).initial_data == {"n": 1}

    async def test_start_input_must_be_a_json_object_within_the_limit(self, env: Env) -> None:
        small = PipelineProcess(CommandBus(env.backend, max_payload_bytes=64))
        bad: list[Any] = [
            ["not", "an", "object"],
            {"nan": float("nan")},
            {"blob": "x" * 100},
        ]
        for data in bad:
            with pytest.raises(ValidationError, match="initial_data"):
                # all or nothing: the good item before it is not started either
                await small.start_many([{"skip_b": True}, data])
        assert await env.manager.find_by_status(list(ProcessStatus)) == []
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0
        assert (await small.get(await small.start({"blob": "x" * 10}))) is not None

    async def test_start_is_idempotent_for_a_given_id(self, env: Env) -> None:
        pid = uuid4()
        assert await env.manager.start({}, process_id=pid) == pid
        assert await env.manager.start({"skip_b": True}, process_id=pid) == pid
        assert len(await env.manager.get_audit_trail(pid)) == 1
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 1
        other = OtherProcess(env.bus)
        with pytest.raises(ProcessAlreadyExistsError):
            await other.start({}, process_id=pid)

    async def test_start_joins_the_callers_transaction(self, env: Env) -> None:
        class Boom(Exception):
            pass

        pid = uuid4()
        with pytest.raises(Boom):
            async with env.backend.transaction() as tx:
                await env.manager.start({}, process_id=pid, conn=tx)
                raise Boom
        assert await env.manager.get(pid) is None
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0
        async with env.backend.transaction() as tx:
            await env.manager.start({}, process_id=pid, conn=tx)
        assert (await self.process(env, pid)).status is ProcessStatus.WAITING_FOR_REPLY

    # -- bad state and hook failures ---------------------------------------------------

    async def test_unloadable_state_parks_reply_and_fails_process(self, env: Env) -> None:
        pid = await env.manager.start({})
        await env.worker.process_once()
        # Corrupt the stored state behind the manager's back.
        repo = env.manager.process_repo
        raw = await repo.get_by_id(DOMAIN, pid)
        assert raw is not None
        raw.state = {"unexpected": True}
        await repo.update(raw)
        await env.router.process_once()
        raw = await repo.get_by_id(DOMAIN, pid)
        assert raw is not None
        assert raw.status is ProcessStatus.FAILED
        assert raw.error_code == "STATE_LOAD_FAILED"
        assert raw.state == {"unexpected": True}  # kept as it was
        [parked] = await env.router.parked_messages()
        assert parked.process_id == pid and parked.message["outcome"] == "SUCCESS"
        assert await env.backend.queue.depth(REPLIES) == 0

    async def test_hook_error_is_retried_then_parked_without_blocking_others(
        self, env: Env
    ) -> None:
        env.manager.fail_update_on = "a"
        bad = await env.manager.start({"poison": True})
        await env.worker.process_once()
        router = ProcessReplyRouter(env.backend, managers=[env.manager], max_reply_attempts=2)
        await router.process_once()
        assert router.stats.retried == 1
        p = await self.process(env, bad)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.version == 1
        # Meanwhile another process goes through.
        good = await env.manager.start({})
        await env.worker.process_once()
        await self.advance(env.backend, 31)  # the failed reply becomes visible again
        await router.process_once()
        assert router.stats.parked == 1
        g = await self.process(env, good)
        assert g.current_step is S.B  # applied in the same batch as the parked one
        [parked] = await router.parked_messages()
        assert parked.process_id == bad and "update_state" in parked.reason
        # Fix the bug and replay: the process continues.
        env.manager.fail_update_on = None
        assert parked.id is not None
        assert await router.replay_parked(parked.id) is True
        await self.drive(env)
        assert (await self.process(env, bad)).status is ProcessStatus.COMPLETED
        assert await router.parked_messages() == []
