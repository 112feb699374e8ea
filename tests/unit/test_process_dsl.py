"""The step DSL: a flow of steps compiles to BaseProcessManager's hooks, and the real
kernel, engine and router run it (scenario harness, memory backend, virtual clock)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.declared_examples import Fulfilment, Order, Triage

from commandbus.process import (
    BaseProcessManager,
    ProcessDefinitionError,
    ProcessHookError,
    ProcessStatus,
    StepDefinition,
    StepProcessManager,
    TimeoutAction,
    step,
    when,
)
from commandbus.testing.scenario import ProcessScenario


async def test_the_flow_runs_top_to_bottom() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 3})
    scenario.expect_command("Reserve", step="reserve", data={"amount": 3})
    await scenario.reply_success({"reservation": "R-1", "in_stock": True})
    ship = scenario.expect_command("Ship", data={})
    # delay: written now, visible to workers an hour later
    assert scenario.audit_trail[-1].scheduled_for == scenario.clock.now() + timedelta(hours=1)
    await scenario.reply_success({"id": "P-9"}, command=ship)
    scenario.expect_command("Notify", data={"template": "shipped"})
    await scenario.reply_success()
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_state(reservation="R-1", parcel="P-9", refused=None)
    scenario.expect_sent("Reserve", "Ship", "Notify")
    assert (await scenario.replay()).ok


async def test_a_branch_on_the_state_takes_the_other_arm_and_its_domain() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 1, "express": True})
    await scenario.reply_success({"reservation": "R-2"})
    sent = scenario.expect_command("ShipExpress")
    stored = await scenario.backend.commands.get("shipping", sent.command_id)
    assert stored is not None and stored.command_type == "ShipExpress"
    await scenario.reply_success({"id": "P-1"})
    await scenario.reply_success()
    scenario.expect_sent("Reserve", "ShipExpress", "Notify")
    scenario.expect_status(ProcessStatus.COMPLETED)


async def test_a_branch_on_the_reply_can_finish_early() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 5})
    await scenario.reply_success({"reservation": "R-3", "in_stock": False})
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_sent("Reserve")
    assert (await scenario.replay()).ok


async def test_on_failure_records_the_refusal_and_nothing_is_compensated() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 500})
    await scenario.reply_failed("LIMIT", "too many")
    scenario.expect_status(ProcessStatus.FAILED, error_code="LIMIT")
    scenario.expect_state(refused="LIMIT", reservation=None)
    scenario.expect_compensations()


async def test_a_later_failure_runs_the_compensation_with_data_from_the_state() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 2, "express": True})
    await scenario.reply_success({"reservation": "R-4"})
    await scenario.reply_failed("NO_COURIER")
    scenario.expect_command("Release", data={"reservation": "R-4"}, compensation=True)
    await scenario.reply_success({"released": "R-4"})
    scenario.expect_status(ProcessStatus.FAILED, error_code="NO_COURIER")
    scenario.expect_compensations("release")
    scenario.expect_state(released=["R-4"], refused=None)  # on_failure is per step
    assert (await scenario.replay()).ok


async def test_timeout_and_on_timeout_per_attempt() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 1})
    first = scenario.expect_command("Reserve")
    await scenario.fire_timeout()  # attempt 1: sent again
    second = scenario.expect_command("Reserve")
    assert second.command_id != first.command_id
    await scenario.fire_timeout()  # attempt 2: give up (nothing completed to undo)
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.FAILED, error_code="STEP_TIMEOUT")
    assert (await scenario.replay()).ok


async def test_cancel_compensates_completed_steps() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 1})
    await scenario.reply_success({"reservation": "R-5"})
    await scenario.cancel("customer changed their mind")
    scenario.expect_command("Release", data={"reservation": "R-5"})
    await scenario.reply_success({"released": "R-5"})
    scenario.expect_status(ProcessStatus.CANCELED)


def test_the_definition_becomes_hooks_steps_and_a_step_enum() -> None:
    manager = Fulfilment(_bus())
    assert isinstance(manager, BaseProcessManager)
    assert [str(m) for m in Fulfilment.step_class] == [
        "reserve",
        "release",  # a compensation follows the step it undoes
        "ship_express",
        "ship",
        "notify",
    ]
    assert manager.parse_step("ship") is Fulfilment.step_class("ship")
    assert Fulfilment.steps[0] == StepDefinition("reserve", "Reserve", "release", 30.0)
    assert manager.get_compensation_step(manager.parse_step("reserve")) == "release"
    assert manager.get_compensation_step(manager.parse_step("ship")) is None
    state = Order(amount=1)
    assert manager.get_step_timeout(manager.parse_step("reserve"), state) == 30.0
    assert manager.get_step_timeout(manager.parse_step("notify"), state) is None
    # Without on_timeout, a step times out as the manager's default says.
    assert manager.on_step_timeout(manager.parse_step("notify"), state, 1) is TimeoutAction.TSQ


async def test_a_branch_before_the_first_step_sees_no_reply_and_nested_branches_work() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(Triage)
    await scenario.start({"amount": 10})
    scenario.expect_command("Book")
    await scenario.start({"amount": 1000})
    scenario.expect_command("Approve")
    await scenario.reply_success({"approved": True})
    scenario.expect_command("Book")
    await scenario.start({"amount": 1000})
    await scenario.reply_success({"approved": False})
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_sent("Approve")


class SloppyCondition(StepProcessManager[Order, Any]):
    process_type = "Sloppy"
    domain = "shop"
    flow = (
        step("first", "First"),
        when(lambda s: s.reservation, then=step("second", "Second")),  # a str, not a bool
    )


async def test_a_condition_that_returns_no_bool_is_a_hook_error_at_run_time() -> None:
    scenario: ProcessScenario[Order] = ProcessScenario(SloppyCondition)
    await scenario.start({"amount": 1})
    with pytest.raises(ProcessHookError, match=r"get_next_step.*not a bool"):
        await scenario.reply_success()
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)  # nothing was decided


def _bus() -> Any:
    from commandbus import CommandBus

    return CommandBus.in_memory()


class OddNames(StepProcessManager[Order, Any]):
    process_type = "OddNames"
    domain = "shop"
    flow = (step("mro", "First"), step("pay now", "Second"), step("_missing_", "Third"))


async def test_any_step_name_gets_a_member_of_the_generated_enum() -> None:
    assert [m.value for m in OddNames.step_class] == ["mro", "pay now", "_missing_"]
    scenario: ProcessScenario[Order] = ProcessScenario(OddNames)
    await scenario.start({"amount": 1})
    await scenario.reply_success()
    await scenario.reply_success()
    await scenario.reply_success()
    scenario.expect_sent("First", "Second", "Third")
    assert [e.step_name for e in scenario.audit_trail] == ["mro", "pay now", "_missing_"]
    assert (await scenario.replay()).ok


def test_the_default_initial_state_needs_a_state_class() -> None:
    class Untyped(StepProcessManager):  # type: ignore[type-arg]
        process_type = "Untyped"
        domain = "shop"
        flow = (step("only", "Only"),)

    with pytest.raises(ProcessDefinitionError, match="no state_class with from_dict"):
        Untyped(_bus()).create_initial_state({})
