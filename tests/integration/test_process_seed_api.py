"""The design documents' process-manager API, exactly as they write it (issue: the seeds'
exact API): each test is what a user who copies the seed's code would run, on the
in-memory backend and on PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import uuid4

import pytest

from commandbus import CommandBus
from commandbus.models import Reply, ReplyOutcome
from commandbus.ports import Backend
from commandbus.process import (
    BaseProcessManager,
    ProcessAlreadyExistsError,
    ProcessCommand,
    ProcessDefinitionError,
    ProcessHookError,
    ProcessManager,
    ProcessReplyRouter,
    ProcessStatus,
)


class Step(StrEnum):
    RESERVE = "reserve"
    CHARGE = "charge"
    RELEASE = "release"


@dataclass
class OrderState:
    order_id: str
    reserved: bool = False
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "reserved": self.reserved, "failures": self.failures}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderState:
        return cls(data["order_id"], data["reserved"], list(data["failures"]))


class OrderProcess(BaseProcessManager[OrderState, Step]):
    """Reserve, then charge; a failed charge releases the reservation."""

    domain = "seedapi"

    @property
    def process_type(self) -> str:
        return "Order"

    def create_initial_state(self, initial_data: dict[str, Any]) -> OrderState:
        return OrderState(initial_data["order_id"])

    def get_first_step(self, state: OrderState) -> Step:
        return Step.RESERVE

    async def build_command(self, step: Step, state: OrderState) -> ProcessCommand[Any]:
        return ProcessCommand(f"{step.value.title()}Order", {"order_id": state.order_id})

    def update_state(self, state: OrderState, step: Step, reply: Reply) -> None:
        if reply.outcome is ReplyOutcome.FAILED:
            state.failures.append(f"{step.value}: {reply.error_code}")
        elif step is Step.RESERVE:
            state.reserved = True

    def get_next_step(self, current_step: Step, reply: Reply, state: OrderState) -> Step | None:
        return Step.CHARGE if current_step is Step.RESERVE else None

    def get_compensation_step(self, step: Step) -> Step | None:
        return Step.RELEASE if step is Step.RESERVE else None


async def sent_commands(backend: Backend, domain: str = "seedapi") -> list[str]:
    """The command types sent so far, in order (from the command store)."""
    from commandbus.models import CommandQuery

    rows = await backend.commands.query(CommandQuery(domain=domain, limit=100))
    return [r.command_type for r in sorted(rows, key=lambda r: r.created_at)]


async def reply_to_awaited(
    manager: OrderProcess, pid: Any, outcome: ReplyOutcome, **kw: Any
) -> Reply:
    process = await manager.get(pid)
    assert process is not None and process.awaiting_command_id is not None
    return Reply(process.awaiting_command_id, pid, outcome, **kw)


def test_the_seed_imports_work() -> None:
    from commandbus.process import PostgresProcessRepository, ProcessRepository

    assert PostgresProcessRepository.__name__ == "PostgresProcessRepository"
    assert ProcessRepository.__name__ == "ProcessRepository"


async def test_a_manager_is_a_process_manager(backend: Backend) -> None:
    manager = OrderProcess(CommandBus(backend))
    assert isinstance(manager, ProcessManager)
    assert not isinstance(object(), ProcessManager)


async def test_a_failed_reply_reaches_update_state_before_compensation(backend: Backend) -> None:
    manager = OrderProcess(CommandBus(backend))
    pid = await manager.start({"order_id": "o-1"})
    await manager.handle_reply(await reply_to_awaited(manager, pid, ReplyOutcome.SUCCESS))
    failed = await reply_to_awaited(manager, pid, ReplyOutcome.FAILED, error_code="DECLINED")
    await manager.handle_reply(failed)
    process = await manager.get(pid)
    assert process is not None
    assert process.state.failures == ["charge: DECLINED"]  # the state recorded the failure
    assert process.current_step is Step.RELEASE  # the overridden compensation is honoured
    assert await sent_commands(backend) == ["ReserveOrder", "ChargeOrder", "ReleaseOrder"]


async def test_handle_reply_updates_the_process_it_was_given(backend: Backend) -> None:
    manager = OrderProcess(CommandBus(backend))
    pid = await manager.start({"order_id": "o-2"})
    process = await manager.get(pid)
    assert process is not None and process.current_step is Step.RESERVE
    reply = await reply_to_awaited(manager, pid, ReplyOutcome.SUCCESS)
    await manager.handle_reply(reply, process)
    assert process.current_step is Step.CHARGE
    assert process.state.reserved is True
    assert process.version == 2


async def test_start_refuses_other_data_for_an_existing_id(backend: Backend) -> None:
    manager = OrderProcess(CommandBus(backend))
    pid = uuid4()
    assert await manager.start({"order_id": "o-3"}, process_id=pid) == pid
    assert await manager.start({"order_id": "o-3"}, process_id=pid) == pid
    with pytest.raises(ProcessAlreadyExistsError, match="other initial data"):
        await manager.start({"order_id": "o-4"}, process_id=pid)
    assert await sent_commands(backend) == ["ReserveOrder"]


async def test_create_initial_state_errors_are_hook_errors(backend: Backend) -> None:
    manager = OrderProcess(CommandBus(backend))
    with pytest.raises(ProcessHookError, match="create_initial_state raised KeyError") as e:
        await manager.start({"wrong": "key"})
    assert isinstance(e.value.cause, KeyError)
    assert await manager.find_by_status(list(ProcessStatus)) == []


async def test_state_and_step_classes_may_be_properties(backend: Backend) -> None:
    class PropertyOrder(OrderProcess):
        @property
        def state_class(self) -> type[OrderState]:  # type: ignore[override]
            return OrderState

        @property
        def step_class(self) -> type[Step]:  # type: ignore[override]
            return Step

    manager = PropertyOrder(CommandBus(backend))
    pid = await manager.start({"order_id": "o-5"})
    process = await manager.get(pid)
    assert process is not None
    assert isinstance(process.state, OrderState)
    await manager.handle_reply(await reply_to_awaited(manager, pid, ReplyOutcome.SUCCESS))
    process = await manager.get(pid)
    assert process is not None and process.state.reserved is True


def test_a_state_class_that_is_not_a_class_is_refused() -> None:
    class Broken(OrderProcess):
        state_class = "OrderState"  # type: ignore[assignment]

    with pytest.raises(ProcessDefinitionError, match="state_class must be a class"):
        Broken(CommandBus.in_memory())


@pytest.mark.parametrize(
    ("hook", "instead"),
    [
        ("_execute_step", "build_command"),
        ("_complete_process", "get_next_step returns None"),
        ("_handle_failure", "update_state"),
        ("_run_compensations", "get_compensation_step"),
    ],
)
def test_the_seeds_private_hooks_fail_loudly(hook: str, instead: str) -> None:
    async def override(self: Any, *args: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(ProcessDefinitionError, match=instead) as refused:
        type("Overrides", (OrderProcess,), {hook: override})
    assert hook in str(refused.value)
    assert isinstance(refused.value, TypeError)


async def test_the_seeds_router_constructor_run_and_plain_stop(backend: Backend) -> None:
    bus = CommandBus(backend)
    manager = OrderProcess(bus)
    pool = getattr(backend, "pool", backend)  # the seed passes the psycopg pool
    router = ProcessReplyRouter(
        pool=pool,
        process_repo=backend.processes,
        managers={manager.process_type: manager},
        reply_queue=manager.reply_queue,
    )
    pid = await manager.start({"order_id": "o-6"})
    reserve = await reply_to_awaited(manager, pid, ReplyOutcome.SUCCESS)
    await backend.queue.enqueue(manager.reply_queue, [reserve.to_message()])
    running = asyncio.create_task(router.run(0.05))  # the seed: run(poll_interval)
    for _ in range(200):
        process = await manager.get(pid)
        if process is not None and process.current_step is Step.CHARGE:
            break
        await asyncio.sleep(0.01)
    router.stop()  # the seed's plain call, not awaited
    await asyncio.wait_for(running, 5)
    assert not router.is_running
    process = await manager.get(pid)
    assert process is not None and process.current_step is Step.CHARGE


async def test_run_refuses_nonsense_arguments(backend: Backend) -> None:
    from commandbus.errors import ValidationError

    router = ProcessReplyRouter(backend, managers=[OrderProcess(CommandBus(backend))])
    with pytest.raises(ValidationError, match="poll_interval"):
        await router.run(-1)
    with pytest.raises(ValidationError, match="concurrency"):
        await router.run(0.1, concurrency=0)
    assert not router.is_running


def test_a_subclass_keeps_the_state_class_its_parent_set() -> None:
    @dataclass
    class RicherState(OrderState):
        note: str = ""

    class Richer(OrderProcess):
        state_class = RicherState

    class RicherStill(Richer):  # no generic arguments of its own
        pass

    assert RicherStill.state_class is RicherState
    assert RicherStill.step_class is Step
