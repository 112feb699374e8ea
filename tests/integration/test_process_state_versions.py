"""Long-lived states across a deploy (seed 002, "backward-compatible state evolution"):
processes started with version 1 of a state class finish under version 2, their states
upgraded on load by the class's upcasters and the upgrade recorded in the audit trail; the
replay check calls that change compatible, and a changed command a divergence. On the
in-memory backend and on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import pytest

from commandbus import CommandBus
from commandbus.models import Reply, ReplyOutcome
from commandbus.ports import Backend
from commandbus.process import (
    AuditEntryKind,
    BaseProcessManager,
    ProcessCommand,
    ProcessStatus,
    StateLoadError,
)
from commandbus.process.replay import check_replay, replay_all


class Step(StrEnum):
    RESERVE = "reserve"
    CHARGE = "charge"


@dataclass
class OrderV1:
    order_id: str
    amount: int
    reservation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderV1:
        return cls(**data)


@dataclass
class OrderV2:
    """Version 2 adds the currency (a v1 order was always in euros)."""

    state_version: ClassVar[int] = 2

    order_id: str
    amount: int
    currency: str
    reservation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderV2:
        return cls(**data)

    @staticmethod
    def upcast_v1_v2(data: dict[str, Any]) -> None:
        data["currency"] = "EUR"


@dataclass
class OrderV3(OrderV2):
    """Claims version 3 but has no upcaster from 2."""

    state_version: ClassVar[int] = 3


class OrderProcess(BaseProcessManager[OrderV1, Step]):
    process_type = "Order"
    domain = "versions"

    def create_initial_state(self, initial_data: dict[str, Any]) -> Any:
        return OrderV1(initial_data["order_id"], initial_data["amount"])

    def get_first_step(self, state: Any) -> Step:
        return Step.RESERVE

    def build_command(self, step: Step, state: Any) -> ProcessCommand[Any]:
        if step is Step.RESERVE:
            return ProcessCommand("Reserve", {"order_id": state.order_id})
        return ProcessCommand("Charge", {"amount": state.amount})

    def update_state(self, state: Any, step: Step, reply: Reply) -> None:
        if step is Step.RESERVE and reply.data:
            state.reservation = reply.data["reservation"]

    def get_next_step(self, current_step: Step, reply: Reply, state: Any) -> Step | None:
        return Step.CHARGE if current_step is Step.RESERVE else None


class OrderProcessV2(OrderProcess):
    """The deploy: version 2 of the state, which the charge command now carries."""

    state_class = OrderV2

    def create_initial_state(self, initial_data: dict[str, Any]) -> Any:
        return OrderV2(initial_data["order_id"], initial_data["amount"], "EUR")

    def build_command(self, step: Step, state: Any) -> ProcessCommand[Any]:
        if step is Step.CHARGE:
            return ProcessCommand("Charge", {"amount": state.amount, "currency": state.currency})
        return super().build_command(step, state)


class OrderProcessV2SameCommands(OrderProcessV2):
    def build_command(self, step: Step, state: Any) -> ProcessCommand[Any]:
        return OrderProcess.build_command(self, step, state)


class OrderProcessV3(OrderProcessV2):
    state_class = OrderV3


async def answer(manager: OrderProcess, pid: Any, data: dict[str, Any]) -> None:
    process = await manager.get(pid)
    assert process is not None and process.awaiting_command_id is not None
    reply = Reply(process.awaiting_command_id, pid, ReplyOutcome.SUCCESS, data)
    await manager.handle_reply(reply)


async def live_v1_processes(backend: Backend) -> tuple[Any, Any]:
    """Two processes of version 1: one waiting for its reservation, one for its charge."""
    v1 = OrderProcess(CommandBus(backend))
    waiting = await v1.start({"order_id": "A", "amount": 10})
    charging = await v1.start({"order_id": "B", "amount": 20})
    await answer(v1, charging, {"reservation": "R-B"})
    return waiting, charging


async def test_live_v1_processes_finish_under_v2(backend: Backend) -> None:
    waiting, charging = await live_v1_processes(backend)
    v2 = OrderProcessV2(CommandBus(backend))
    for pid in (waiting, charging):
        process = await v2.get(pid)
        assert process is not None and isinstance(process.state, OrderV2)
        assert process.state.currency == "EUR"  # upgraded on load
    await answer(v2, waiting, {"reservation": "R-A"})
    await answer(v2, waiting, {})
    await answer(v2, charging, {})
    for pid in (waiting, charging):
        process = await v2.get(pid)
        assert process is not None and process.status is ProcessStatus.COMPLETED
        trail = await v2.get_audit_trail(pid)
        upgrades = [e for e in trail if e.kind is AuditEntryKind.STATE_UPGRADE]
        assert [e.command_data for e in upgrades] == [{"from_version": 1, "to_version": 2}]
        raw = await backend.processes.get_by_id("versions", pid)
        assert raw is not None and raw.state["__state_version__"] == 2
    charge = (await v2.get_audit_trail(waiting))[-1]
    assert charge.command_data == {"amount": 10, "currency": "EUR"}


async def test_a_state_from_a_newer_version_or_without_an_upcaster_does_not_load(
    backend: Backend,
) -> None:
    _, charging = await live_v1_processes(backend)
    v2 = OrderProcessV2(CommandBus(backend))
    await answer(v2, charging, {})  # stored as version 2 now
    with pytest.raises(StateLoadError, match="newer than this code's version 1"):
        await OrderProcess(CommandBus(backend)).get(charging)  # a rollback
    with pytest.raises(StateLoadError, match="no upcast_v2_v3"):
        await OrderProcessV3(CommandBus(backend)).get(charging)


async def test_replay_check_tells_a_compatible_change_from_a_divergence(
    backend: Backend,
) -> None:
    waiting, charging = await live_v1_processes(backend)
    v1 = OrderProcess(CommandBus(backend))
    await answer(v1, charging, {})  # completed under version 1
    same_commands = OrderProcessV2SameCommands(CommandBus(backend))
    assert await check_replay(backend, [same_commands]) == []
    results = {r.process.process_id: r for r in await replay_all(backend, [same_commands])}
    assert results[charging].compatible == [
        "state upgraded from version 1 to 2",
        "field(s) added with their defaults: currency",
    ]
    # Version 2 also changed what the charge command carries: that is a divergence.
    mismatches = await check_replay(backend, [OrderProcessV2(CommandBus(backend))])
    assert [(m.process_id, m.field) for m in mismatches] == [
        (charging, "audit[2].command_data.currency")
    ]
    assert waiting not in {m.process_id for m in mismatches}
