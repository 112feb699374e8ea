"""The step DSL: a process as a sequence of named steps over explicit state, read top to
bottom like the flow it describes (after proofit404/stories)::

    class StatementReportSteps(StepProcessManager[StatementReportState, StatementReportStep]):
        process_type = "StatementReport"
        domain = "reporting"
        flow = (
            step(Step.QUERY, "StatementQuery",
                 data=lambda s: StatementQueryRequest(s.from_date, s.to_date, s.account_list),
                 on_reply=save(query_result_path="result_path"),
                 compensation=undo(Step.DELETE_QUERY_RESULT, "DeleteQueryResult",
                                   data=lambda s: DeletePathRequest(s.query_result_path))),
            when(lambda s: s.output_type == "csv",
                 then=(step(Step.EXPORT, "StatementExport", ...),),
                 otherwise=(step(Step.RENDER, "StatementRender", ...),)),
        )

Each ``step`` names its command type and how its data is built from the state
(``data``), how its reply updates the state (``on_reply`` for SUCCESS, ``on_failure`` for
a business failure), its compensation (``undo``), its timeout and what a timeout does.
``when(condition, then=..., otherwise=...)`` branches on the state (and the reply of the
step before); after the branch the flow goes on with what follows it. ``finish()`` ends
the process (COMPLETED) where it stands.

The class compiles to ``BaseProcessManager``'s hooks when it is created (see
``commandbus.process.declared``), after these checks — each failure is a
``ProcessDefinitionError`` naming the step:

- every element is a ``step``, ``when`` or ``finish``; step names are unique
  (compensations included) and every step has a command type;
- nothing follows a ``finish()`` in its sequence (it would never run), a ``when`` has at
  least one step, and the flow sends a command whichever way its first branches go;
- a step marked ``compensable=True`` has a compensation;
- data builders, reply handlers and conditions are plain functions with the right
  arguments (``data(state)``, ``on_reply(state, reply)``, ``condition(state)`` or
  ``condition(state, reply)``), not coroutines;
- with a step enum, its members are exactly the steps and compensations of the flow.

Parallel groups (fan-out, fan-in) are not part of this DSL: the reply-driven kernel awaits
one command at a time. Processes that run branches in parallel are event-driven
(``commandbus.process_manager``, its tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from commandbus.models import Reply
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
    "Branch",
    "Finish",
    "FlowElement",
    "StepProcessManager",
    "finish",
    "save",
    "step",
    "undo",
    "when",
]

#: The key of the end a flow reaches when it runs out of steps.
END_KEY = "<end>"


@dataclass(frozen=True)
class Branch:
    """``when(condition, then=..., otherwise=...)``: see ``when``."""

    condition: Condition
    then: tuple[Any, ...]
    otherwise: tuple[Any, ...]
    label: str | None = None


@dataclass(frozen=True)
class Finish:
    """``finish()``: the process completes here."""

    label: str | None = None


FlowElement = CommandStep | Branch | Finish


def step(
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
) -> CommandStep:
    """A step: sends a ``command_type`` command and waits for its reply.

    - ``data(state)`` builds the command's data (a dict or an object with ``to_dict``);
      a dict is sent as it is; none sends ``{}``;
    - ``on_reply(state, reply)`` updates the state in place from a SUCCESS reply
      (``save(field="result_field")`` copies result fields); ``on_failure(state, reply)``
      from a FAILED one (a business rule refused the step), before the completed steps
      are compensated and the process ends FAILED;
    - ``compensation=undo(...)`` undoes the step if the process fails or is canceled
      after it completed; ``compensable=True`` says it must have one;
    - ``timeout`` seconds for its reply, and ``on_timeout`` what then: a
      ``TimeoutAction``, or ``(state, attempt) -> TimeoutAction`` (``attempt`` counts the
      sends of the step in a row); default: the manager's ``default_timeout_action``;
    - ``domain`` the command goes to (default: the process's); ``delay`` seconds before
      it is visible to workers (a number or ``(state) -> seconds``).
    """
    return CommandStep(
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


def when(
    condition: Condition,
    then: Sequence[FlowElement] | FlowElement = (),
    otherwise: Sequence[FlowElement] | FlowElement = (),
    *,
    label: str | None = None,
) -> Branch:
    """A branch: ``condition(state)`` (or ``condition(state, reply)``, the reply of the
    step before; None before the first step) chooses ``then`` or ``otherwise``; either
    may be empty, and both go on with what follows the branch. ``label`` names the
    condition in diagrams (default: the function's name)."""
    return Branch(condition, _elements(then), _elements(otherwise), label)


def _elements(arm: Sequence[FlowElement] | FlowElement) -> tuple[Any, ...]:
    # ``then=step(...)``: one element without the tuple around it.
    if isinstance(arm, CommandStep | Branch | Finish):
        return (arm,)
    return tuple(arm)


def finish(label: str | None = None) -> Finish:
    """The process completes here (``label`` names the end in diagrams)."""
    return Finish(label)


# -- compiling -------------------------------------------------------------------------


@dataclass(frozen=True)
class _GoTo:
    step: str


@dataclass(frozen=True)
class _End:
    key: str


@dataclass(frozen=True)
class _Decide:
    key: str
    branch: Branch
    takes_reply: bool
    then: _Next
    otherwise: _Next


_Next = _GoTo | _End | _Decide


class CompiledFlow(CompiledDefinition):
    """A flow compiled to "what follows each step": a step, an end, or a decision."""

    def __init__(self, owner: str, flow: object) -> None:
        if not isinstance(flow, Sequence) or isinstance(flow, str) or not flow:
            raise ProcessDefinitionError(
                f"{owner}: flow must be a non-empty sequence of step(...), when(...) and "
                f"finish(), got {flow!r}"
            )
        self._forward: list[CommandStep] = []
        self._after: dict[str, _Next] = {}
        self._decisions: list[_Decide] = []
        self._ends: dict[str, str] = {}  # end key -> label
        self._owner = owner
        # Keys and order follow the text, top to bottom (compiling walks it backwards).
        self._text_order: dict[int, int] = {}
        self._branch_ids: set[int] = set()
        for element in _in_text_order(tuple(flow)):
            self._text_order.setdefault(id(element), len(self._text_order))
            if isinstance(element, Branch):
                self._branch_ids.add(id(element))
            elif isinstance(element, CommandStep):
                check_step(owner, element)  # top to bottom: the first bad step is named
        self.start = self._sequence(tuple(flow), self._end(None))
        self._forward.sort(key=lambda s: self._text_order[id(s)])
        self._decisions.sort(key=lambda d: self._text_order[id(d.branch)])
        super().__init__(owner, self._forward)
        if _may_end_without_a_step(self.start):
            raise ProcessDefinitionError(
                f"{owner}: the flow can end before its first step (a when(...) or finish() "
                "at its start lets the process send nothing); a process must send a command"
            )

    def _end(self, label: str | None) -> _End:
        key = END_KEY if label is None else f"{END_KEY}:{label}"
        self._ends[key] = label or "completed"
        return _End(key)

    def _sequence(self, elements: tuple[Any, ...], after: _Next) -> _Next:
        for index, element in enumerate(elements[:-1]):
            if isinstance(element, Finish):
                skipped = _first_step_in(elements[index + 1 :])
                raise ProcessDefinitionError(
                    f"{self._owner}: step {skipped!r} is unreachable: it follows finish() "
                    "in the same sequence"
                    if skipped
                    else f"{self._owner}: nothing may follow finish() in a sequence"
                )
        following = after
        for element in reversed(elements):
            following = self._element(element, following)
        return following

    def _element(self, element: object, following: _Next) -> _Next:
        if isinstance(element, CommandStep):
            check_step(self._owner, element)
            if element.name in self._after:
                raise ProcessDefinitionError(
                    f"{self._owner}: two steps are named {element.name!r}: a step appears "
                    "once in the flow (put a step both branches need after the branch)"
                )
            self._forward.append(element)
            self._after[element.name] = following
            return _GoTo(element.name)
        if isinstance(element, Branch):
            label = condition_label(element.condition, element.label)
            takes_reply = check_condition(
                self._owner, f"the condition of when({label})", element.condition
            )
            if not element.then and not element.otherwise:
                raise ProcessDefinitionError(
                    f"{self._owner}: when({label}) has no step in then or otherwise"
                )
            branches = [b for b in self._text_order if b in self._branch_ids]
            key = f"<decision:{branches.index(id(element)) + 1}>"
            then = self._sequence(element.then, following)
            otherwise = self._sequence(element.otherwise, following)
            decision = _Decide(key, element, takes_reply, then, otherwise)
            self._decisions.append(decision)
            return decision
        if isinstance(element, Finish):
            return self._end(element.label)
        raise ProcessDefinitionError(
            f"{self._owner}: flow element {element!r} is not a step(...), when(...) or finish()"
        )

    # -- deciding (the hooks call these) ----------------------------------------------

    def _resolve(self, following: _Next, state: Any, reply: Reply | None) -> _GoTo | _End:
        while isinstance(following, _Decide):
            chosen = evaluate_condition(
                following.branch.condition, following.takes_reply, state, reply
            )
            following = following.then if chosen else following.otherwise
        return following

    def first_step(self, state: Any) -> str:
        first = self._resolve(self.start, state, None)
        assert isinstance(first, _GoTo)  # checked when the class was created
        return first.step

    def route(self, step: str, reply: Reply, state: Any) -> str:
        following = self._after.get(step)
        if following is None:
            raise LookupError(f"{self.owner}: {step!r} is not a forward step of the flow")
        target = self._resolve(following, state, reply)
        return target.step if isinstance(target, _GoTo) else target.key

    def is_final(self, key: str) -> bool:
        return key in self._ends

    # -- the picture ---------------------------------------------------------------------

    def graph(self, title: str) -> ProcessGraph:
        nodes = [GraphNode(START_KEY, "start", NodeKind.START)]
        edges = [GraphEdge(START_KEY, _key(self.start))]
        for forward in self._forward:
            nodes.append(GraphNode(forward.name, forward.name, NodeKind.STEP, forward.describe()))
            edges.append(GraphEdge(forward.name, _key(self._after[forward.name])))
        for decision in self._decisions:
            label = condition_label(decision.branch.condition, decision.branch.label)
            nodes.append(GraphNode(decision.key, label + "?", NodeKind.DECISION))
            edges.append(GraphEdge(decision.key, _key(decision.then), label="yes"))
            edges.append(GraphEdge(decision.key, _key(decision.otherwise), label="no"))
        for key, label in self._ends.items():
            if any(e.target == key for e in edges):
                nodes.append(GraphNode(key, label, NodeKind.FINAL))
        for forward in self._forward:
            if forward.compensation is not None:
                undo_step = forward.compensation
                if all(n.key != undo_step.name for n in nodes):
                    nodes.append(
                        GraphNode(
                            undo_step.name,
                            undo_step.name,
                            NodeKind.COMPENSATION,
                            undo_step.describe(),
                        )
                    )
                edges.append(GraphEdge(forward.name, undo_step.name, EdgeKind.COMPENSATION, "undo"))
        return ProcessGraph(title, tuple(nodes), tuple(edges))


def _key(following: _Next) -> str:
    if isinstance(following, _GoTo):
        return following.step
    return following.key


def _may_end_without_a_step(following: _Next) -> bool:
    if isinstance(following, _GoTo):
        return False
    if isinstance(following, _End):
        return True
    return _may_end_without_a_step(following.then) or _may_end_without_a_step(following.otherwise)


def _in_text_order(elements: Sequence[Any]) -> Iterator[Any]:
    for element in elements:
        yield element
        if isinstance(element, Branch):
            yield from _in_text_order(element.then)
            yield from _in_text_order(element.otherwise)


def _first_step_in(elements: Sequence[Any]) -> str | None:
    for element in elements:
        if isinstance(element, CommandStep):
            return element.name
        if isinstance(element, Branch):
            found = _first_step_in(element.then) or _first_step_in(element.otherwise)
            if found:
                return found
    return None


class StepProcessManager(DeclaredProcessManager[TState, TStep]):
    """A process manager declared as a ``flow`` of steps (see the module documentation).

    Set ``process_type``, ``domain`` and ``flow``; ``create_initial_state`` defaults to
    ``state_class.from_dict(initial_data)``. Everything else of ``BaseProcessManager``
    applies (``default_timeout_action``, ``process_timeout_seconds``, ``state_version``
    upgrades, ``get_step_timeout``/``on_step_timeout`` overrides)."""

    #: The steps, top to bottom: ``step(...)``, ``when(...)`` and ``finish()``.
    flow: ClassVar[Sequence[FlowElement]]

    @classmethod
    def compile_definition(cls, owner: str) -> CompiledDefinition | None:
        flow = getattr(cls, "flow", None)
        return None if flow is None else CompiledFlow(owner, flow)
