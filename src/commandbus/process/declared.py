"""What the step DSL (``commandbus.process.dsl``) and the state machine
(``commandbus.process.fsm``) share: the command a step sends, the checks a definition
passes when its class is created, and the base class that turns a compiled definition into
``BaseProcessManager``'s hooks.

A declared process is still a ``BaseProcessManager``: the kernel calls the same hooks
(``get_first_step``, ``build_command``, ``update_state``, ``get_next_step``,
``get_compensation_step``, ``get_step_timeout``, ``on_step_timeout``), here answered from
a table compiled once, when the class statement runs. So audit, replay,
``process replay --check``, the scenario harness and the simulation treat it like any
hand-written manager, and a definition that could not run raises
``ProcessDefinitionError`` at import time instead of in production.

The functions a definition names (how a command's data is built, how a reply updates the
state, conditions) are called by the kernel, so they must be pure like every hook: plain
(not ``async``) functions of the state and the reply, no I/O, no clock, no randomness.
What can be checked when the class is created is: they are callables, not coroutine or
generator functions, and they accept the arguments they will be given.
"""

from __future__ import annotations

import inspect
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from commandbus.errors import ValidationError
from commandbus.models import Reply, ReplyOutcome
from commandbus.process.base import BaseProcessManager
from commandbus.process.errors import ProcessDefinitionError
from commandbus.process.graph import ProcessGraph
from commandbus.process.models import (
    ProcessCommand,
    StepDefinition,
    TimeoutAction,
    TState,
    TStep,
)
from commandbus.validation import (
    MAX_DELAY_SECONDS,
    validate_command_type,
    validate_name,
    validate_seconds,
)

__all__ = [
    "CommandStep",
    "CompiledDefinition",
    "DeclaredProcessManager",
    "check_condition",
    "save",
    "undo",
]

#: Builds a command's data from the state: a dict or an object with ``to_dict``.
DataFn = Callable[[Any], Any]
#: Updates the state (in place) from a reply.
ReplyFn = Callable[[Any, Reply], None]
#: Chooses what a step timeout does: ``(state, attempt) -> TimeoutAction``.
TimeoutFn = Callable[[Any, int], TimeoutAction]
#: A condition: ``(state) -> bool`` or ``(state, reply) -> bool``.
Condition = Callable[..., bool]

#: The hooks a declared process answers from its definition: a class that also defines
#: one of them would no longer do what its definition (and its diagram) says.
STRUCTURAL_HOOKS = (
    "get_first_step",
    "build_command",
    "update_state",
    "get_next_step",
    "get_compensation_step",
)


@dataclass(frozen=True)
class CommandStep:
    """One command a declared process sends, and what its reply does (see ``dsl.step``,
    ``fsm.state`` and ``undo``, which build it and document the fields)."""

    name: str
    command_type: str | None
    data: DataFn | Mapping[str, Any] | None = None
    on_reply: ReplyFn | None = None
    on_failure: ReplyFn | None = None
    timeout_seconds: float | None = None
    on_timeout: TimeoutAction | TimeoutFn | None = None
    compensation: CommandStep | None = None
    compensable: bool = False
    domain: str | None = None
    delay_seconds: float | Callable[[Any], float] | None = None

    # -- what the hooks do ------------------------------------------------------------

    def build(self, state: Any) -> ProcessCommand[Any]:
        data = self.data
        if callable(data):
            built = data(state)
        elif data is None:
            built = {}
        else:
            built = dict(data)
        delay = self.delay_seconds
        seconds = delay(state) if callable(delay) else (delay or 0.0)
        assert self.command_type is not None  # checked when the class was created
        return ProcessCommand(self.command_type, built, domain=self.domain, delay_seconds=seconds)

    def apply_reply(self, state: Any, reply: Reply) -> None:
        """``on_reply`` for a SUCCESS reply, ``on_failure`` for a FAILED one (the kernel
        then compensates); the other outcomes never reach ``update_state``."""
        if reply.outcome is ReplyOutcome.SUCCESS and self.on_reply is not None:
            self.on_reply(state, reply)
        elif reply.outcome is ReplyOutcome.FAILED and self.on_failure is not None:
            self.on_failure(state, reply)

    def timeout_action(self, state: Any, attempt: int, default: TimeoutAction) -> TimeoutAction:
        chosen = self.on_timeout
        if chosen is None:
            return default
        if isinstance(chosen, TimeoutAction):
            return chosen
        action = chosen(state, attempt)
        if not isinstance(action, TimeoutAction):
            raise TypeError(
                f"on_timeout of step {self.name!r} returned {action!r}, not a TimeoutAction"
            )
        return action

    def describe(self) -> str:
        """The second line of the step's node in a diagram."""
        parts = [str(self.command_type)]
        if self.timeout_seconds is not None:
            parts.append(f"timeout {self.timeout_seconds:g}s")
        return ", ".join(parts)


def undo(
    name: str,
    command_type: str | None = None,
    *,
    data: DataFn | Mapping[str, Any] | None = None,
    on_reply: ReplyFn | None = None,
    timeout: float | None = None,
    domain: str | None = None,
) -> CommandStep:
    """A compensation: the command that undoes a completed step, named ``name`` (a step
    of its own in the audit trail). ``data(state)`` builds its data; ``on_reply(state,
    reply)`` records its SUCCESS reply. Compensations run for the completed steps in
    reverse order when the process fails or is canceled; one that fails, or times out
    after ``timeout`` seconds, is recorded and the others still run."""
    return CommandStep(
        name=name,
        command_type=command_type,
        data=data,
        on_reply=on_reply,
        timeout_seconds=timeout,
        domain=domain,
    )


def save(**fields: str) -> ReplyFn:
    """An ``on_reply`` that copies result fields into the state: ``save(query_result_path=
    "result_path")`` sets ``state.query_result_path`` to the reply's ``result_path`` (a
    field missing from the result leaves the state as it was)."""
    for attribute, key in fields.items():
        if not isinstance(key, str):
            raise ProcessDefinitionError(
                f"save({attribute}=...) names the result field to copy: a str, got {key!r}"
            )

    def copy_result_fields(state: Any, reply: Reply) -> None:
        result = reply.data or {}
        for attribute, key in fields.items():
            if key in result:
                setattr(state, attribute, result[key])

    copy_result_fields.__qualname__ = f"save({', '.join(f'{a}={k!r}' for a, k in fields.items())})"
    return copy_result_fields


# -- checks when the class is created ---------------------------------------------------


def _plain_function_problem(fn: object) -> str | None:
    """Why ``fn`` cannot be a hook-like function, or None."""
    if not callable(fn):
        return f"is a {type(fn).__name__}, not a function"
    call = fn if inspect.isroutine(fn) or isinstance(fn, type) else type(fn).__call__
    for candidate in (fn, call):
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return "is async: deciding is pure and synchronous, make it a plain def"
        if inspect.isgeneratorfunction(candidate):
            return "is a generator function: it must return its value"
    return None


def _accepts(fn: Callable[..., Any], count: int) -> bool | None:
    """Whether ``fn`` can be called with ``count`` positional arguments (None: unknown)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature
        return None
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def check_callable(owner: str, what: str, fn: object, arguments: str, count: int) -> None:
    """``fn`` must be a plain function taking ``count`` positional ``arguments``."""
    problem = _plain_function_problem(fn)
    if problem is None and _accepts(fn, count) is False:  # type: ignore[arg-type]
        problem = f"must take {arguments}"
    if problem is not None:
        raise ProcessDefinitionError(f"{owner}: {what} {_name_of(fn)} {problem}")


def check_condition(owner: str, what: str, fn: object) -> bool:
    """A condition (a guard) must be a plain function of ``(state)`` or ``(state,
    reply)`` returning a bool; returns whether it takes the reply."""
    problem = _plain_function_problem(fn)
    if problem is None:
        assert callable(fn)
        with_reply, state_only = _accepts(fn, 2), _accepts(fn, 1)
        if with_reply is None and state_only is None:
            return True  # no signature to read: call it as documented, with both
        if with_reply:
            return True
        if state_only:
            return False
        problem = "must take (state) or (state, reply)"
    raise ProcessDefinitionError(f"{owner}: {what} {_name_of(fn)} {problem}")


def evaluate_condition(fn: Condition, takes_reply: bool, state: Any, reply: Reply | None) -> bool:
    result = fn(state, reply) if takes_reply else fn(state)
    if not isinstance(result, bool):
        raise TypeError(
            f"condition {_name_of(fn)} returned {type(result).__name__}, not a bool"
            + (" (is it async?)" if inspect.isawaitable(result) else "")
        )
    return result


def _name_of(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str):
        return repr(name)
    # A callable object: its class says more than its repr (which may carry an address).
    return f"{type(fn).__qualname__}()" if callable(fn) else repr(fn)


def condition_label(fn: object, label: str | None) -> str:
    """How a condition is shown in a diagram: its label, else its function's name."""
    if label:
        return label
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) and name != "<lambda>" else "condition"


def check_step(owner: str, step: object, *, compensation: bool = False) -> CommandStep:
    """The checks of one command step (a forward step or a compensation); returns it."""
    role = "compensation" if compensation else "step"
    if not isinstance(step, CommandStep):
        raise ProcessDefinitionError(
            f"{owner}: {step!r} is not a step; declare it with step(...), state(...) or undo(...)"
        )
    if not isinstance(step.name, str) or not step.name:
        raise ProcessDefinitionError(f"{owner}: a {role} needs a name, got {step.name!r}")
    where = f"{owner}: {role} {step.name!r}"
    if step.name.startswith("<"):
        raise ProcessDefinitionError(f"{where}: a step name must not start with '<'")
    if step.command_type is None or step.command_type == "":
        raise ProcessDefinitionError(
            f"{where} has no command: name the command type it sends, "
            f"e.g. {role if compensation else 'step'}({step.name!r}, 'DoSomething', ...)"
        )
    try:
        validate_command_type(step.command_type)
        if step.domain is not None:
            validate_name(step.domain)
        if step.timeout_seconds is not None:
            validate_seconds(step.timeout_seconds, "its timeout", MAX_DELAY_SECONDS)
        if step.delay_seconds is not None and not callable(step.delay_seconds):
            validate_seconds(step.delay_seconds, "its delay", MAX_DELAY_SECONDS, allow_zero=True)
    except ValidationError as exc:
        raise ProcessDefinitionError(f"{where}: {exc}") from exc
    if callable(step.data):
        check_callable(where, "data", step.data, "(state)", 1)
    elif step.data is not None and not isinstance(step.data, Mapping):
        raise ProcessDefinitionError(
            f"{where}: data must be a function of the state or a dict, got {step.data!r}"
        )
    for what, fn in (("on_reply", step.on_reply), ("on_failure", step.on_failure)):
        if fn is not None:
            check_callable(where, what, fn, "(state, reply)", 2)
    if step.on_timeout is not None and not isinstance(step.on_timeout, TimeoutAction):
        check_callable(where, "on_timeout", step.on_timeout, "(state, attempt)", 2)
    if callable(step.delay_seconds):
        check_callable(where, "delay", step.delay_seconds, "(state)", 1)
    if compensation:
        if step.compensation is not None:
            raise ProcessDefinitionError(
                f"{where} has a compensation of its own: compensations are not compensated"
            )
    elif step.compensation is not None:
        check_step(owner, step.compensation, compensation=True)
    elif step.compensable:
        raise ProcessDefinitionError(
            f"{where} is compensable but has no compensation: give it "
            f"compensation=undo('undo_{step.name}', 'UndoCommand', ...), or drop compensable=True"
        )
    return step


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
        from_dict = getattr(self.state_class, "from_dict", None)
        if not callable(from_dict):
            raise ProcessDefinitionError(
                f"{type(self).__qualname__}: state_class has no from_dict; "
                "override create_initial_state"
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
        generated = StrEnum(f"{cls.__name__}Step", [(name, name) for name in names])  # type: ignore[misc]
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
