"""State machine mode: states, transitions with guards, final states, compiled to
BaseProcessManager's hooks and run by the real kernel (scenario harness)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pytest

from commandbus.models import Reply
from commandbus.process import (
    ProcessHookError,
    ProcessStatus,
    StateMachineProcessManager,
    final,
    save,
    state,
    transition,
    undo,
)
from commandbus.testing.scenario import ProcessScenario


@dataclass
class Application:
    applicant: str
    urgent: bool = False
    ticket: str | None = None
    status: str | None = None
    checks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Application:
        return cls(**data)


def count_check(s: Application, reply: Reply) -> None:
    s.checks += 1
    s.status = str(reply.result["status"])


def pending(s: Application, reply: Reply) -> bool:
    return reply.result["status"] == "pending"


def approved(s: Application) -> bool:
    return s.status == "approved"


class Approval(StateMachineProcessManager[Application, Any]):
    """Submit an application, poll its status until decided, tell the applicant."""

    process_type = "Approval"
    domain = "office"
    states = (
        state(
            "submit",
            "Submit",
            data=lambda s: {"applicant": s.applicant, "urgent": s.urgent},
            on_reply=save(ticket="ticket"),
            compensation=undo("withdraw", "Withdraw", data=lambda s: {"ticket": s.ticket}),
        ),
        state("check", "CheckStatus", data=lambda s: {"ticket": s.ticket}, on_reply=count_check),
        state("notify_rejection", "NotifyRejection", data=lambda s: {"to": s.applicant}),
        final("approved"),
        final("rejected"),
    )
    transitions = (
        transition("submit", "check"),
        transition("check", "check", guard=pending, label="still pending"),
        transition("check", "approved", guard=approved),
        transition("check", "notify_rejection"),
        transition("notify_rejection", "rejected"),
    )


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


class Gate(StateMachineProcessManager[Application, Any]):
    """An initial state that is not the first declared, and a guard-only exit."""

    process_type = "Gate"
    domain = "office"
    states = (
        final("done"),
        state("ask", "Ask", on_reply=save(status="status")),
        state("open", "Open", initial=True),
    )
    transitions = (
        transition("open", "ask"),
        transition("ask", "done", guard=approved),
    )


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
