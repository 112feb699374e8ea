"""A declared process that could not run is refused when its class is created: a clear
ProcessDefinitionError naming the step (never at run time, in production)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest

from commandbus.models import Reply, ReplyOutcome
from commandbus.process import (
    ProcessDefinitionError,
    StateMachineProcessManager,
    StepProcessManager,
    final,
    finish,
    state,
    step,
    transition,
    undo,
    when,
)


def define_flow(the_flow: Any, steps_enum: type | None = None) -> type:
    class Defined(StepProcessManager[Any, Any]):
        process_type = "Defined"
        domain = "shop"
        flow = the_flow
        if steps_enum is not None:
            step_class = steps_enum

    return Defined


def define_machine(the_states: Any, the_transitions: Any) -> type:
    class Defined(StateMachineProcessManager[Any, Any]):
        process_type = "Defined"
        domain = "shop"
        states = the_states
        transitions = the_transitions

    return Defined


def refused(match: str) -> Any:
    return pytest.raises(ProcessDefinitionError, match=match)


# -- the step DSL ------------------------------------------------------------------------


def test_duplicate_step_names() -> None:
    with refused("Defined: two steps are named 'pay'"):
        define_flow((step("pay", "Pay"), step("pay", "PayAgain")))
    with refused("two steps are named 'pay'"):  # a compensation is a step too
        define_flow((step("pay", "Pay"), step("ship", "Ship", compensation=undo("pay", "X"))))


def test_a_step_or_compensation_without_a_command() -> None:
    with refused("step 'pay' has no command: name the command type it sends"):
        define_flow((step("pay"),))
    with refused("compensation 'refund' has no command"):
        define_flow((step("pay", "Pay", compensation=undo("refund")),))
    with refused("step 'pay': invalid command type 'pay now'"):
        define_flow((step("pay", "pay now"),))


def test_the_first_bad_step_from_the_top_is_named() -> None:
    with refused("step 'first' has no command"):
        define_flow((step("first"), when(lambda s: True, then=step("second")), step("third")))


def test_a_compensable_step_without_a_compensation() -> None:
    with refused("step 'pay' is compensable but has no compensation"):
        define_flow((step("pay", "Pay", compensable=True),))
    with refused("compensation 'refund' has a compensation of its own"):
        compensation = step("refund", "Refund", compensation=undo("again", "Again"))
        define_flow((step("pay", "Pay", compensation=compensation),))


def test_steps_after_finish_are_unreachable() -> None:
    with refused("step 'ship' is unreachable: it follows finish()"):
        define_flow((step("pay", "Pay"), when(lambda s: True, then=(finish(), step("ship", "S")))))


def test_a_flow_must_send_a_command_whichever_way_it_starts() -> None:
    with refused("the flow can end before its first step"):
        define_flow((when(lambda s: s.big, then=step("pay", "Pay")),))
    with refused("flow must be a non-empty sequence"):
        define_flow(())
    with refused("flow must be a non-empty sequence"):
        define_flow(step("pay", "Pay"))
    with refused("when\\(condition\\) has no step in then or otherwise"):
        define_flow((step("pay", "Pay"), when(lambda s: True)))
    with refused("flow element 'ship' is not a step"):
        define_flow((step("pay", "Pay"), "ship"))


class Steps(StrEnum):
    PAY = "pay"
    SHIP = "ship"


def test_the_step_enum_and_the_flow_must_agree() -> None:
    assert define_flow((step("pay", "Pay"), step("ship", "Ship")), Steps).step_class is Steps
    with refused("step 'ship' of Steps is never reached"):
        define_flow((step("pay", "Pay"),), Steps)
    with refused("step 'refund' is not a member of Steps"):
        define_flow((step("pay", "Pay", compensation=undo("refund", "Refund")),), Steps)


async def async_condition(state: Any) -> bool:
    return True


def generator_condition(state: Any) -> Any:
    yield True


def three_arguments(state: Any, reply: Reply, extra: int) -> bool:
    return True


class AsyncCallable:
    async def __call__(self, state: Any) -> bool:
        return True


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        (async_condition, "'async_condition' is async"),
        (AsyncCallable(), "AsyncCallable\\(\\) is async"),
        (generator_condition, "'generator_condition' is a generator function"),
        (three_arguments, "'three_arguments' must take \\(state\\) or \\(state, reply\\)"),
        ("yes", "'yes' is a str, not a function"),
    ],
)
def test_a_condition_must_be_a_plain_function_of_state_and_reply(
    condition: Any, problem: str
) -> None:
    with refused(f"Defined: the condition of when\\(.*\\) {problem}"):
        define_flow((step("pay", "Pay"), when(condition, then=step("ship", "Ship"))))


def test_data_builders_and_reply_handlers_are_checked_too() -> None:
    async def build(state: Any) -> dict[str, Any]:
        return {}

    with refused("step 'pay': data 'test_data_.*build' is async"):
        define_flow((step("pay", "Pay", data=build),))
    with refused("step 'pay': on_reply '.*<lambda>' must take \\(state, reply\\)"):
        define_flow((step("pay", "Pay", on_reply=lambda s: None),))
    with refused("step 'pay': on_timeout .* must take \\(state, attempt\\)"):
        define_flow((step("pay", "Pay", on_timeout=lambda s: None),))
    with refused("step 'pay': data must be a function of the state or a dict"):
        define_flow((step("pay", "Pay", data=42),))  # type: ignore[arg-type]
    with refused("step 'pay': its timeout must be a number of seconds > 0"):
        define_flow((step("pay", "Pay", timeout=-1),))


def test_a_declared_class_answers_the_step_hooks_itself() -> None:
    with refused("defines get_next_step, but its steps are declared"):

        class Mixed(StepProcessManager[Any, Any]):
            process_type = "Mixed"
            domain = "shop"
            flow = (step("pay", "Pay"),)

            def get_next_step(self, current_step: Any, reply: Reply, state: Any) -> Any:
                return None


def test_a_class_that_declares_nothing_cannot_be_used() -> None:
    from commandbus import CommandBus

    class Empty(StepProcessManager[Any, Any]):
        process_type = "Empty"
        domain = "shop"

    with refused("Empty declares no process"):
        Empty(CommandBus.in_memory())


# -- the state machine -------------------------------------------------------------------


def test_a_transition_out_of_a_final_state() -> None:
    with refused("transition 'done' -> 'pay' leaves the final state 'done'"):
        define_machine(
            (state("pay", "Pay"), final("done")),
            (transition("pay", "done"), transition("done", "pay")),
        )


def test_unreachable_states_and_states_that_never_finish() -> None:
    with refused("state 'refund' is unreachable: no transition from the initial state 'pay'"):
        define_machine(
            (state("pay", "Pay"), state("refund", "Refund"), final("done")),
            (transition("pay", "done"), transition("refund", "done")),
        )
    with refused("state 'poll' can never reach a final state"):
        define_machine(
            (state("pay", "Pay"), state("poll", "Poll"), final("done")),
            (
                transition("pay", "done", guard=lambda s: s.paid),
                transition("pay", "poll"),
                transition("poll", "poll"),
            ),
        )


def test_transitions_must_name_states_and_be_able_to_fire() -> None:
    with refused("transition 'pay' -> 'ship' names 'ship', which is no state"):
        define_machine((state("pay", "Pay"), final("done")), (transition("pay", "ship"),))
    with refused("transition 'pay' -> 'done' never fires: the unguarded transition"):
        define_machine(
            (state("pay", "Pay"), state("ship", "Ship"), final("done")),
            (transition("pay", "ship"), transition("pay", "done"), transition("ship", "done")),
        )
    with refused("triggered on FAILED, but only a SUCCESS reply moves"):
        define_machine(
            (state("pay", "Pay"), final("done")),
            (transition("pay", "done", on=ReplyOutcome.FAILED),),
        )
    with refused("state 'pay' has no transition out of it"):
        define_machine((state("pay", "Pay"), final("done")), ())


def test_states_are_unique_and_start_once_with_a_command() -> None:
    with refused("two states are named 'pay'"):
        define_machine(
            (state("pay", "Pay"), state("pay", "Pay"), final("done")), (transition("pay", "done"),)
        )
    with refused("two steps are named 'done': a compensation and a final state"):
        define_machine(
            (state("pay", "Pay", compensation=undo("done", "Refund")), final("done")),
            (transition("pay", "done"),),
        )
    with refused("states 'pay' and 'ship' are both initial"):
        define_machine(
            (state("pay", "Pay", initial=True), state("ship", "Ship", initial=True), final("d")),
            (transition("pay", "d"), transition("ship", "d")),
        )
    with refused("the initial state 'done' is final"):
        define_machine((final("done"), state("pay", "Pay")), (transition("pay", "done"),))
    with refused("step 'pay' has no command"):
        define_machine((state("pay"), final("done")), (transition("pay", "done"),))
    with refused("step 'pay' is compensable but has no compensation"):
        define_machine(
            (state("pay", "Pay", compensable=True), final("done")), (transition("pay", "done"),)
        )


def test_a_guard_must_be_a_plain_function_of_state_and_reply() -> None:
    with refused("the guard of transition 'pay' -> 'done' 'async_condition' is async"):
        define_machine(
            (state("pay", "Pay"), final("done")),
            (transition("pay", "done", guard=async_condition), transition("pay", "done")),
        )
    with refused("the guard of transition 'pay' -> 'done' 'three_arguments' must take"):
        define_machine(
            (state("pay", "Pay"), final("done")),
            (transition("pay", "done", guard=three_arguments),),
        )
