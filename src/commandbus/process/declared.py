"""The base class of declared processes — the step DSL (``commandbus.process.dsl``) and
the state machine (``commandbus.process.fsm``) — which turns a definition, compiled when
its class is created, into ``BaseProcessManager``'s hooks.

A declared process is still a ``BaseProcessManager``: the kernel calls the same hooks
(``get_first_step``, ``build_command``, ``update_state``, ``get_next_step``,
``get_compensation_step``, ``get_step_timeout``, ``on_step_timeout``), here answered from
a table compiled once, when the class statement runs. So audit, replay,
``process replay --check``, the scenario harness and the simulation treat it like any
hand-written manager, and a definition that could not run raises
``ProcessDefinitionError`` at import time instead of in production. The steps themselves
and their checks are in ``commandbus.process.declared_steps``.
"""

from __future__ import annotations

import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, ClassVar

from commandbus.models import Reply
from commandbus.process.base import BaseProcessManager
from commandbus.process.declared_steps import CommandStep, save, undo
from commandbus.process.errors import ProcessDefinitionError
from commandbus.process.graph import ProcessGraph
from commandbus.process.models import (
    ProcessCommand,
    StepDefinition,
    TimeoutAction,
    TState,
    TStep,
)

__all__ = [
    "CommandStep",
    "CompiledDefinition",
    "DeclaredProcessManager",
    "save",
    "undo",
]

#: The hooks a declared process answers from its definition: a class that also defines
#: one of them would no longer do what its definition (and its diagram) says.
STRUCTURAL_HOOKS = (
    "get_first_step",
    "build_command",
    "update_state",
    "get_next_step",
    "get_compensation_step",
)


# -- the compiled definition and the manager it drives ----------------------------------


class CompiledDefinition(ABC):
    """A definition checked and compiled when its class was created: the command steps
    by name (forward steps and compensations), and how the next step is chosen."""

    def __init__(self, owner: str, steps: Iterable[CommandStep]) -> None:
        self.owner = owner
        self.steps: dict[str, CommandStep] = {}
        for step in steps:
            self._add(step)
            if step.compensation is not None:
                self._add(step.compensation)

    def _add(self, step: CommandStep) -> None:
        known = self.steps.get(step.name)
        if known is not None and known is not step:
            raise ProcessDefinitionError(
                f"{self.owner}: two steps are named {step.name!r}: step names are what the "
                "audit trail records, they must be unique (compensations included)"
            )
        self.steps[step.name] = step

    def step(self, name: str) -> CommandStep:
        found = self.steps.get(name)
        if found is None:
            raise LookupError(f"{self.owner} has no step {name!r}")
        return found

    @abstractmethod
    def first_step(self, state: Any) -> str:
        """The name of the first step to send."""

    @abstractmethod
    def route(self, step: str, reply: Reply, state: Any) -> str:
        """The graph key of what follows ``step``'s SUCCESS ``reply``: a step name, or a
        final node's key (the process completes)."""

    @abstractmethod
    def is_final(self, key: str) -> bool: ...

    @abstractmethod
    def graph(self, title: str) -> ProcessGraph: ...

    def next_step(self, step: str, reply: Reply, state: Any) -> str | None:
        key = self.route(step, reply, state)
        return None if self.is_final(key) else key

    def step_definitions(self) -> tuple[StepDefinition, ...]:
        """The same steps as ``BaseProcessManager.steps`` declares them."""
        return tuple(
            StepDefinition(
                name,
                str(step.command_type),
                compensation_step=step.compensation.name if step.compensation else None,
                timeout_seconds=step.timeout_seconds,
            )
            for name, step in self.steps.items()
        )


class DeclaredProcessManager(BaseProcessManager[TState, TStep]):
    """Base of ``StepProcessManager`` and ``StateMachineProcessManager``: the hooks,
    answered from ``definition`` (compiled when a subclass with a definition is created).

    Typed state and steps come from the generic arguments as for any manager; without a
    step enum (or with ``StrEnum`` or ``Any`` in its place) one is made from the step
    names. A given step
    enum must have exactly the definition's steps as members."""

    #: The compiled definition (None on a class that declares none, which cannot be used).
    definition: ClassVar[CompiledDefinition | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _infer_generic_arguments(cls)
        compiled = cls.compile_definition(cls.__qualname__)
        cls.definition = compiled
        if compiled is None:
            return
        for hook in STRUCTURAL_HOOKS:
            if getattr(cls, hook) is not getattr(DeclaredProcessManager, hook):
                raise ProcessDefinitionError(
                    f"{cls.__qualname__} defines {hook}, but its steps are declared: the "
                    "definition answers that hook (and is what validation and diagrams "
                    "describe). Declare it in the definition, or write a BaseProcessManager"
                )
        _settle_step_class(cls, compiled)
        if "steps" not in cls.__dict__:
            cls.steps = compiled.step_definitions()

    @classmethod
    @abstractmethod
    def compile_definition(cls, owner: str) -> CompiledDefinition | None:
        """The class's definition, checked and compiled (None: the class declares none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self).definition is None:
            raise ProcessDefinitionError(
                f"{type(self).__qualname__} declares no process: give it its steps "
                "(flow = (...) for the step DSL; states and transitions for a state machine)"
            )
        super().__init__(*args, **kwargs)

    @property
    def compiled(self) -> CompiledDefinition:
        compiled = type(self).definition
        assert compiled is not None  # __init__ refused a class without one
        return compiled

    @classmethod
    def definition_graph(cls) -> ProcessGraph:
        """The definition as a graph (``commandbus.process.diagram`` draws it)."""
        if cls.definition is None:
            raise ProcessDefinitionError(f"{cls.__qualname__} declares no process")
        process_type = cls.__dict__.get("process_type", getattr(cls, "process_type", None))
        title = process_type if isinstance(process_type, str) else cls.__qualname__
        return cls.definition.graph(title)

    # -- the hooks, from the definition ------------------------------------------------

    def create_initial_state(self, initial_data: dict[str, Any]) -> TState:
        """By default ``state_class.from_dict(initial_data)``; override to check the input."""
        from_dict = getattr(getattr(self, "state_class", None), "from_dict", None)
        if not callable(from_dict):
            raise ProcessDefinitionError(
                f"{type(self).__qualname__}: no state_class with from_dict (give the state "
                "class as the first generic argument), or override create_initial_state"
            )
        state: TState = from_dict(dict(initial_data))
        return state

    def get_first_step(self, state: TState) -> TStep:
        return self.parse_step(self.compiled.first_step(state))

    def build_command(self, step: TStep, state: TState) -> ProcessCommand[Any]:
        return self.compiled.step(str(step)).build(state)

    def update_state(self, state: TState, step: TStep, reply: Reply) -> None:
        self.compiled.step(str(step)).apply_reply(state, reply)

    def get_next_step(self, current_step: TStep, reply: Reply, state: TState) -> TStep | None:
        following = self.compiled.next_step(str(current_step), reply, state)
        return None if following is None else self.parse_step(following)

    def get_compensation_step(self, step: TStep) -> TStep | None:
        compensation = self.compiled.step(str(step)).compensation
        return None if compensation is None else self.parse_step(compensation.name)

    def get_step_timeout(self, step: TStep, state: TState) -> float | None:
        return self.compiled.step(str(step)).timeout_seconds

    def on_step_timeout(self, step: TStep, state: TState, attempt: int) -> TimeoutAction:
        return self.compiled.step(str(step)).timeout_action(
            state, attempt, self.default_timeout_action
        )


def _infer_generic_arguments(cls: type) -> None:
    """``class M(StepProcessManager[State, Step])``: ``BaseProcessManager`` infers its
    typed state and steps only from its own generic alias, so do it for ours."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, DeclaredProcessManager)):
            continue
        args = typing.get_args(base)
        if len(args) != 2:
            continue
        state_cls, step_cls = args
        if "state_class" not in cls.__dict__ and isinstance(state_cls, type):
            cls.state_class = state_cls  # type: ignore[attr-defined]
        if "step_class" not in cls.__dict__ and isinstance(step_cls, type):
            cls.step_class = step_cls  # type: ignore[attr-defined]


#: Marks a step enum made from a definition's step names (a subclass may redefine them).
_GENERATED = "__commandbus_generated_steps__"


def _settle_step_class(cls: type, compiled: CompiledDefinition) -> None:
    names = list(compiled.steps)
    declared = cls.__dict__.get("step_class", getattr(cls, "step_class", None))
    if (
        not isinstance(declared, type)
        or declared in (StrEnum, Any)
        or getattr(declared, _GENERATED, False)
    ):
        generated = StrEnum(f"{cls.__name__}Step", _member_names(names))  # type: ignore[misc]
        setattr(generated, _GENERATED, True)
        cls.step_class = generated  # type: ignore[attr-defined]
        return
    if not issubclass(declared, StrEnum):
        raise ProcessDefinitionError(
            f"{cls.__qualname__}.step_class must be a StrEnum, got {declared!r}"
        )
    members = {str(m) for m in declared}
    unknown = [n for n in names if n not in members]
    if unknown:
        raise ProcessDefinitionError(
            f"{cls.__qualname__}: step {unknown[0]!r} is not a member of "
            f"{declared.__name__} (its values: {sorted(members)})"
        )
    unused = [str(m) for m in declared if str(m) not in compiled.steps]
    if unused:
        raise ProcessDefinitionError(
            f"{cls.__qualname__}: step {unused[0]!r} of {declared.__name__} is never reached: "
            "no step or compensation of the definition is named so (remove it or declare it)"
        )


def _member_names(values: list[str]) -> list[tuple[str, str]]:
    """Enum member names for step names (the values): upper-case identifiers, since a
    step may be called anything (``mro`` or ``_missing_`` would break an enum)."""
    members: list[tuple[str, str]] = []
    taken: set[str] = set()
    for index, value in enumerate(values):
        name = re.sub(r"\W", "_", value).upper()
        if not name.isidentifier() or name.startswith("_") or name in taken:
            name = f"STEP_{index + 1}_{name.strip('_')}".rstrip("_")
        while name in taken:
            name += "_"
        taken.add(name)
        members.append((name, value))
    return members
