"""State machine mode: a process as states and the transitions between them, with guards
and final states (after python-statemachine)::

    class StatementReportMachine(
        StateMachineProcessManager[StatementReportState, StatementReportStep]
    ):
        process_type = "StatementReport"
        domain = "reporting"
        states = (
            state(Step.QUERY, "StatementQuery", data=..., on_reply=..., compensation=undo(...)),
            state(Step.AGGREGATE, "StatementDataAggregation", data=..., on_reply=...),
            state(Step.RENDER, "StatementRender", data=..., on_reply=...),
            final("reported"),
            final("nothing_to_report"),
        )
        transitions = (
            transition(Step.QUERY, Step.AGGREGATE),
            transition(Step.AGGREGATE, Step.RENDER, guard=has_rows),
            transition(Step.AGGREGATE, "nothing_to_report"),
            transition(Step.RENDER, "reported"),
        )

A non-final state is a step: entering it sends its command (the state's action), and the
process waits there for the reply. When the reply is a SUCCESS, the state's ``on_reply``
updates the process state, then the transitions out of the state are tried in the order
they are declared: the first whose guard holds (``guard(state)`` or ``guard(state,
reply)``; no guard always holds) is taken. Entering a final state completes the process.

The rest is the kernel's, as for every process manager: a FAILED reply (a business rule
refused the step) runs the state's ``on_failure``, compensates the completed states in
reverse order and ends FAILED; an operator's cancel compensates too; timeouts act as the
state's ``on_timeout`` says. So transitions are triggered by SUCCESS replies, chosen by
their result and the state; a transition ``on=ReplyOutcome.FAILED`` is refused, since it
could never fire.

Checked when the class is created (``ProcessDefinitionError``, naming the state): unique
names, every non-final state has a command and at least one transition, transitions name
declared states, none leaves a final state, none follows an unguarded transition from the
same state (it would never fire), every state is reachable from the initial one, and a
final state is reachable from every state; guards are plain functions of the right
arguments; compensable states have a compensation; with a step enum, its members are
exactly the command states and compensations (final states are not steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from commandbus.models import Reply, ReplyOutcome
from commandbus.process.declared import CompiledDefinition, DeclaredProcessManager
from commandbus.process.declared_steps import (
    CommandStep,
    Condition,
    DataFn,
    ReplyFn,
    TimeoutFn,
    check_condition,
    check_step,
    condition_label,
    evaluate_condition,
    save,
    undo,
)
from commandbus.process.errors import ProcessDefinitionError
from commandbus.process.graph import (
    START_KEY,
    EdgeKind,
    GraphEdge,
    GraphNode,
    NodeKind,
    ProcessGraph,
)
from commandbus.process.models import TimeoutAction, TState, TStep

__all__ = [
    "MachineState",
    "StateMachineProcessManager",
    "Transition",
    "final",
    "save",
    "state",
    "transition",
    "undo",
]


@dataclass(frozen=True)
class MachineState:
    """A state of the machine: a step that sends ``step``'s command, or a final state."""

    name: str
    step: CommandStep | None
    initial: bool = False

    @property
    def is_final(self) -> bool:
        return self.step is None


@dataclass(frozen=True)
class Transition:
    """``transition(source, target, guard=...)``: see ``transition``."""

    source: str
    target: str
    guard: Condition | None = None
    label: str | None = None
    on: ReplyOutcome = ReplyOutcome.SUCCESS


def state(
    name: str,
    command_type: str | None = None,
    *,
    data: DataFn | Mapping[str, Any] | None = None,
    on_reply: ReplyFn | None = None,
    on_failure: ReplyFn | None = None,
    compensation: CommandStep | None = None,
    compensable: bool = False,
    timeout: float | None = None,
    on_timeout: TimeoutAction | TimeoutFn | None = None,
    domain: str | None = None,
    delay: float | Callable[[Any], float] | None = None,
    initial: bool = False,
) -> MachineState:
    """A state whose action sends a ``command_type`` command; the arguments are those of
    ``commandbus.process.dsl.step``. ``initial=True`` marks where the process starts
    (default: the first state declared)."""
    command = CommandStep(
        name=name,
        command_type=command_type,
        data=data,
        on_reply=on_reply,
        on_failure=on_failure,
        timeout_seconds=timeout,
        on_timeout=on_timeout,
        compensation=compensation,
        compensable=compensable,
        domain=domain,
        delay_seconds=delay,
    )
    return MachineState(name, command, initial)


def final(name: str) -> MachineState:
    """A final state: entering it completes the process."""
    return MachineState(name, None)


def transition(
    source: str,
    target: str,
    *,
    guard: Condition | None = None,
    label: str | None = None,
    on: ReplyOutcome = ReplyOutcome.SUCCESS,
) -> Transition:
    """From ``source`` to ``target`` when ``source``'s command replies SUCCESS and
    ``guard`` holds (``guard(state)`` or ``guard(state, reply)``, the state already
    updated by the reply). ``label`` names it in diagrams (default: the guard's name)."""
    return Transition(source, target, guard, label, on)


@dataclass(frozen=True)
class _Route:
    target: str
    guard: Condition | None
    takes_reply: bool
    label: str | None


class CompiledMachine(CompiledDefinition):
    """States and transitions, checked; the routes out of each state in declared order."""

    def __init__(self, owner: str, states: object, transitions: object) -> None:
        self._states = _states(owner, states)
        declared = {s.name: s for s in self._states}
        initial = [s for s in self._states if s.initial] or [self._states[0]]
        if len(initial) > 1:
            raise ProcessDefinitionError(
                f"{owner}: states {initial[0].name!r} and {initial[1].name!r} are both "
                "initial; a process starts in one state"
            )
        self.initial = initial[0]
        if self.initial.is_final:
            raise ProcessDefinitionError(
                f"{owner}: the initial state {self.initial.name!r} is final; "
                "a process must send a command"
            )
        self._routes = _routes(owner, declared, transitions)
        super().__init__(owner, [s.step for s in self._states if s.step is not None])
        for name in self.steps:
            if name in declared and declared[name].is_final:
                raise ProcessDefinitionError(
                    f"{owner}: two steps are named {name!r}: a compensation and a final state"
                )
        _check_graph(owner, self._states, self.initial.name, self._routes)

    def first_step(self, state: Any) -> str:
        return self.initial.name

    def route(self, step: str, reply: Reply, state: Any) -> str:
        routes = self._routes.get(step)
        if routes is None:
            raise LookupError(f"{self.owner}: {step!r} is not a state of the machine")
        for route in routes:
            if route.guard is None or evaluate_condition(
                route.guard, route.takes_reply, state, reply
            ):
                return route.target
        raise LookupError(
            f"{self.owner}: no transition out of {step!r} holds for this reply and state "
            f"(its guards: {', '.join(condition_label(r.guard, r.label) for r in routes)}); "
            "add an unguarded transition last as the default"
        )

    def is_final(self, key: str) -> bool:
        found = next((s for s in self._states if s.name == key), None)
        return found is not None and found.is_final

    def graph(self, title: str) -> ProcessGraph:
        nodes = [GraphNode(START_KEY, "start", NodeKind.START)]
        edges = [GraphEdge(START_KEY, self.initial.name)]
        for machine_state in self._states:
            command = machine_state.step
            if command is None:
                nodes.append(GraphNode(machine_state.name, machine_state.name, NodeKind.FINAL))
                continue
            nodes.append(
                GraphNode(machine_state.name, machine_state.name, NodeKind.STEP, command.describe())
            )
            for route in self._routes.get(machine_state.name, ()):
                label = condition_label(route.guard, route.label) if route.guard else route.label
                edges.append(GraphEdge(machine_state.name, route.target, label=label))
        for machine_state in self._states:
            compensation = machine_state.step.compensation if machine_state.step else None
            if compensation is None:
                continue
            if all(n.key != compensation.name for n in nodes):
                nodes.append(
                    GraphNode(
                        compensation.name,
                        compensation.name,
                        NodeKind.COMPENSATION,
                        compensation.describe(),
                    )
                )
            edges.append(
                GraphEdge(machine_state.name, compensation.name, EdgeKind.COMPENSATION, "undo")
            )
        return ProcessGraph(title, tuple(nodes), tuple(edges))


def _states(owner: str, states: object) -> list[MachineState]:
    if not isinstance(states, Sequence) or isinstance(states, str) or not states:
        raise ProcessDefinitionError(
            f"{owner}: states must be a non-empty sequence of state(...) and final(...), "
            f"got {states!r}"
        )
    found: list[MachineState] = []
    names: set[str] = set()
    for item in states:
        if not isinstance(item, MachineState):
            raise ProcessDefinitionError(
                f"{owner}: {item!r} is not a state; declare it with state(...) or final(...)"
            )
        if not isinstance(item.name, str) or not item.name or item.name.startswith("<"):
            raise ProcessDefinitionError(f"{owner}: invalid state name {item.name!r}")
        if item.name in names:
            raise ProcessDefinitionError(
                f"{owner}: two states are named {item.name!r}: state names are what the "
                "audit trail records, they must be unique"
            )
        names.add(item.name)
        if item.step is not None:
            check_step(owner, item.step)
        found.append(item)
    return found


def _routes(
    owner: str, declared: Mapping[str, MachineState], transitions: object
) -> dict[str, list[_Route]]:
    if not isinstance(transitions, Sequence) or isinstance(transitions, str):
        raise ProcessDefinitionError(
            f"{owner}: transitions must be a sequence of transition(...), got {transitions!r}"
        )
    routes: dict[str, list[_Route]] = {name: [] for name, s in declared.items() if not s.is_final}
    for item in transitions:
        if not isinstance(item, Transition):
            raise ProcessDefinitionError(
                f"{owner}: {item!r} is not a transition; declare it with transition(...)"
            )
        what = f"transition {item.source!r} -> {item.target!r}"
        for end in (item.source, item.target):
            if end not in declared:
                raise ProcessDefinitionError(f"{owner}: {what} names {end!r}, which is no state")
        if declared[item.source].is_final:
            raise ProcessDefinitionError(
                f"{owner}: {what} leaves the final state {item.source!r}: a process that "
                "reached a final state is complete"
            )
        if item.on is not ReplyOutcome.SUCCESS:
            raise ProcessDefinitionError(
                f"{owner}: {what} is triggered on {item.on!s}, but only a SUCCESS reply moves "
                "a reply-driven process on: FAILED compensates and ends FAILED, CANCELED "
                "compensates. Choose by the result of a SUCCESS reply (a guard), or use an "
                "event-driven process (commandbus.process_manager)"
            )
        out = routes[item.source]
        if out and out[-1].guard is None:
            raise ProcessDefinitionError(
                f"{owner}: {what} never fires: the unguarded transition {item.source!r} -> "
                f"{out[-1].target!r} before it is always taken"
            )
        takes_reply = False
        if item.guard is not None:
            takes_reply = check_condition(owner, f"the guard of {what}", item.guard)
        out.append(_Route(item.target, item.guard, takes_reply, item.label))
    return routes


def _check_graph(
    owner: str,
    states: Sequence[MachineState],
    initial: str,
    routes: Mapping[str, Sequence[_Route]],
) -> None:
    for machine_state in states:
        if not machine_state.is_final and not routes[machine_state.name]:
            raise ProcessDefinitionError(
                f"{owner}: state {machine_state.name!r} has no transition out of it: add one, "
                "or make it final"
            )
    reached = {initial}
    frontier = [initial]
    while frontier:
        for route in routes.get(frontier.pop(), ()):
            if route.target not in reached:
                reached.add(route.target)
                frontier.append(route.target)
    for machine_state in states:
        if machine_state.name not in reached:
            raise ProcessDefinitionError(
                f"{owner}: state {machine_state.name!r} is unreachable: no transition from "
                f"the initial state {initial!r} leads to it"
            )
    # Backwards from the final states: a state that cannot reach one loops for ever.
    finishing = {s.name for s in states if s.is_final}
    changed = True
    while changed:
        changed = False
        for source, out in routes.items():
            if source not in finishing and any(r.target in finishing for r in out):
                finishing.add(source)
                changed = True
    for machine_state in states:
        if machine_state.name not in finishing:
            raise ProcessDefinitionError(
                f"{owner}: state {machine_state.name!r} can never reach a final state: "
                "every path from it loops (add a transition to a final state)"
            )


class StateMachineProcessManager(DeclaredProcessManager[TState, TStep]):
    """A process manager declared as ``states`` and ``transitions`` (see the module
    documentation). Set ``process_type``, ``domain``, ``states`` and ``transitions``;
    ``create_initial_state`` defaults to ``state_class.from_dict(initial_data)``."""

    #: ``state(...)`` and ``final(...)``; the first is initial unless one says so.
    states: ClassVar[Sequence[MachineState]]
    #: ``transition(...)``, tried in this order for each state.
    transitions: ClassVar[Sequence[Transition]] = ()

    @classmethod
    def compile_definition(cls, owner: str) -> CompiledDefinition | None:
        states = getattr(cls, "states", None)
        if states is None:
            return None
        return CompiledMachine(owner, states, getattr(cls, "transitions", ()))
