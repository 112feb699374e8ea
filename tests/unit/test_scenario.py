"""The scenario harness itself: hook errors, parked timers, misuse."""

from __future__ import annotations

from typing import Any

import pytest
from examples.statement_report import (
    StatementReportProcess,
    StatementReportState,
    StatementReportStep,
)

from commandbus.models import Reply
from commandbus.process import ProcessHookError, ProcessStatus, TimeoutAction
from commandbus.testing.clock import VirtualClock
from commandbus.testing.scenario import ProcessScenario, ScenarioAssertionError

Step = StatementReportStep
REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["ACC-1"],
    "output_type": "html",
}


class BrokenUpdate(StatementReportProcess):
    def update_state(self, state: StatementReportState, step: Step, reply: Reply) -> None:
        raise KeyError("result_path")


class BrokenTimeout(StatementReportProcess):
    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return 5.0

    def on_step_timeout(self, step: Step, state: Any, attempt: int) -> TimeoutAction:
        raise RuntimeError("no idea what to do")


async def test_a_hook_error_surfaces_in_the_test() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(BrokenUpdate)
    await scenario.start(REQUEST)
    with pytest.raises(ProcessHookError, match=r"StatementReport.update_state raised KeyError"):
        await scenario.reply_success({"result_path": "s3://q"})
    await scenario.refresh()
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)  # nothing was applied


async def test_a_timer_whose_hook_fails_is_reported() -> None:
    clock = VirtualClock()
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(BrokenTimeout, clock=clock)
    await scenario.start(REQUEST)
    with pytest.raises(ScenarioAssertionError, match=r"parked: .*on_step_timeout raised"):
        await scenario.fire_timeout()
    # The clock stands at the deadline; the process is unchanged and still waits.
    assert clock.now() == scenario.process.deadline_at
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    assert scenario.ignored_messages[0].reason.startswith("StatementReport.on_step_timeout")


async def test_misuse_is_explained() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(StatementReportProcess)
    with pytest.raises(ScenarioAssertionError, match="no process started yet"):
        _ = scenario.status
    await scenario.start(REQUEST)
    await scenario.reply_failed("NOPE")
    with pytest.raises(ScenarioAssertionError, match="the process awaits no reply"):
        await scenario.reply_success()
    with pytest.raises(
        ScenarioAssertionError, match="expected one new command, the process sent 0"
    ):
        scenario.expect_command("StatementQuery")
    with pytest.raises(ScenarioAssertionError, match="expected the message to be ignored"):
        scenario.expect_ignored()
    with pytest.raises(ValueError, match="backwards"):
        await scenario.advance(-1)
