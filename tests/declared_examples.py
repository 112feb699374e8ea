"""Small declared processes the DSL, state machine and diagram tests share: an order
fulfilment in the step DSL, with branches, a named finish, a compensation and a timeout
policy; an approval as a state machine, with a polling loop and two final states."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from commandbus.models import Reply
from commandbus.process import (
    StateMachineProcessManager,
    StepProcessManager,
    TimeoutAction,
    final,
    finish,
    save,
    state,
    step,
    transition,
    undo,
    when,
)

# -- the step DSL ------------------------------------------------------------------------


@dataclass
class Order:
    amount: int
    express: bool = False
    reservation: str | None = None
    parcel: str | None = None
    refused: str | None = None
    released: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Order:
        return cls(**data)


def in_stock(state: Order, reply: Reply) -> bool:
    return bool(reply.result.get("in_stock", True))


def is_express(state: Order) -> bool:
    return state.express


def note_refusal(state: Order, reply: Reply) -> None:
    state.refused = reply.error_code


def note_release(state: Order, reply: Reply) -> None:
    state.released.append(str(reply.result["released"]))


def reserve_timeout(state: Order, attempt: int) -> TimeoutAction:
    return TimeoutAction.RETRY if attempt < 2 else TimeoutAction.COMPENSATE


class Fulfilment(StepProcessManager[Order, Any]):
    process_type = "Fulfilment"
    domain = "shop"
    flow = (
        step(
            "reserve",
            "Reserve",
            data=lambda s: {"amount": s.amount},
            on_reply=save(reservation="reservation"),
            on_failure=note_refusal,
            compensable=True,
            compensation=undo(
                "release",
                "Release",
                data=lambda s: {"reservation": s.reservation},
                on_reply=note_release,
            ),
            timeout=30,
            on_timeout=reserve_timeout,
        ),
        when(in_stock, otherwise=finish("out of stock")),
        when(
            is_express,
            then=step("ship_express", "ShipExpress", domain="shipping", on_reply=save(parcel="id")),
            otherwise=step("ship", "Ship", delay=3600, on_reply=save(parcel="id")),
        ),
        step("notify", "Notify", data={"template": "shipped"}),
    )


class Triage(StepProcessManager[Order, Any]):
    """A branch before the first step, and one inside another."""

    process_type = "Triage"
    domain = "shop"
    flow = (
        when(
            lambda s: s.amount > 100,
            then=(
                step("approve", "Approve"),
                when(lambda s, r: r.result.get("approved") is True, otherwise=finish("refused")),
            ),
        ),
        step("book", "Book"),
    )


# -- the state machine -------------------------------------------------------------------


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
