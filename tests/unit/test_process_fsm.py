"""State machine mode: states, transitions with guards, final states, compiled to
BaseProcessManager's hooks and run by the real kernel (scenario harness)."""

from __future__ import annotations

import pytest
from tests.declared_examples import Application, Approval, Gate

from commandbus.process import (
    ProcessHookError,
    ProcessStatus,
)
from commandbus.testing.scenario import ProcessScenario


async def test_guards_choose_the_transition_and_a_state_may_loop() -> None:
    scenario: ProcessScenario[Application] = ProcessScenario(Approval)
    await scenario.start({"applicant": "ada"})
    scenario.expect_command("Submit", step="submit", data={"applicant": "ada", "urgent": False})
    await scenario.reply_success({"ticket": "T-1"})
    scenario.expect_command("CheckStatus", data={"ticket": "T-1"})
    await scenario.reply_success({"status": "pending"})
    scenario.expect_command("CheckStatus")  # the guard on the reply: check again
    await scenario.reply_success({"status": "approved"})
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_state(ticket="T-1", status="approved", checks=2)
    scenario.expect_sent("Submit", "CheckStatus", "CheckStatus")
    assert (await scenario.replay()).ok


async def test_the_unguarded_transition_is_the_default() -> None:
    scenario: ProcessScenario[Application] = ProcessScenario(Approval)
    await scenario.start({"applicant": "bob"})
    await scenario.reply_success({"ticket": "T-2"})
    await scenario.reply_success({"status": "rejected"})
    scenario.expect_command("NotifyRejection", data={"to": "bob"})
    await scenario.reply_success()
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_sent("Submit", "CheckStatus", "NotifyRejection")


async def test_a_failure_compensates_the_completed_states() -> None:
    scenario: ProcessScenario[Application] = ProcessScenario(Approval)
    await scenario.start({"applicant": "cy"})
    await scenario.reply_success({"ticket": "T-3"})
    await scenario.reply_failed("ARCHIVED", "the ticket was archived")
    scenario.expect_command("Withdraw", data={"ticket": "T-3"}, compensation=True)
    await scenario.reply_success()
    scenario.expect_status(ProcessStatus.FAILED, error_code="ARCHIVED")
    scenario.expect_compensations("withdraw")
    assert (await scenario.replay()).ok


async def test_initial_marks_the_start_and_no_matching_guard_is_a_hook_error() -> None:
    scenario: ProcessScenario[Application] = ProcessScenario(Gate)
    await scenario.start({"applicant": "dee"})
    scenario.expect_command("Open")
    await scenario.reply_success()
    scenario.expect_command("Ask")
    with pytest.raises(ProcessHookError, match="no transition out of 'ask' holds"):
        await scenario.reply_success({"status": "maybe"})
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    await scenario.reply_success({"status": "approved"})
    scenario.expect_status(ProcessStatus.COMPLETED)


def test_final_states_are_not_steps() -> None:
    assert [str(m) for m in Approval.step_class] == [
        "submit",
        "withdraw",
        "check",
        "notify_rejection",
    ]
    assert [d.name for d in Approval.steps] == [str(m) for m in Approval.step_class]
