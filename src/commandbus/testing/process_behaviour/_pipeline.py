"""The test process ("Pipeline"), its services, and the hooks and helpers every process
behaviour contract shares (see ``process_behaviour/__init__``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

import pytest

from commandbus.bus import CommandBus
from commandbus.errors import (
    BusinessRuleException,
    PermanentCommandError,
    TransientCommandError,
)
from commandbus.handler import HandlerContext, HandlerRegistry
from commandbus.models import Command, Reply
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    ProcessCommand,
    ProcessMessageDisposition,
    ProcessMetadata,
    StepDefinition,
    TimeoutAction,
)
from commandbus.process.router import ProcessReplyRouter
from commandbus.worker import Worker

DOMAIN = "pipeline"
REPLIES = "pipeline__process_replies"


class RouterCrash(BaseException):
    """Stands for the router process dying (``kill -9``, out of memory) mid-batch: not an
    ``Exception``, so nothing in the library catches it and the transaction rolls back."""


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
    crash_update_on: str | None
    delays: dict[str, float]
    process_timeout: float | None
    process_timeout_action: TimeoutAction

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = {}
        self.timeout_action = TimeoutAction.TSQ
        self.fail_update_on = None
        self.crash_update_on = None
        self.delays = {}
        self.process_timeout = None
        self.process_timeout_action = TimeoutAction.TSQ

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
        return ProcessCommand(
            command_type,
            {"step": step.value, "seen": sorted(state.results)},
            delay_seconds=self.delays.get(step.value, 0.0),
        )

    def update_state(self, state: PipelineState, step: PipelineStep, reply: Reply) -> None:
        if state.poison and self.fail_update_on == step.value:
            raise RuntimeError(f"update_state bug on {step}")
        if state.poison and self.crash_update_on == step.value:
            raise RouterCrash(f"the router dies on {step}")
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

    def get_process_timeout(self, state: PipelineState) -> float | None:
        return self.process_timeout

    def on_process_timeout(self, state: PipelineState) -> TimeoutAction:
        return self.process_timeout_action

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
        #: A "hold" action sets ``holding`` and waits for ``released`` (a handler that is
        #: running, in flight).
        self.holding = asyncio.Event()
        self.released = asyncio.Event()
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
        if action == "hold":
            self.holding.set()
            await self.released.wait()
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


class BehaviourBase:
    """Fixtures and helpers of the process behaviour contracts: subclasses provide the
    ``backend`` fixture and the ``advance`` hook."""

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
