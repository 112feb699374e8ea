"""The command steps of declared processes (``commandbus.process.dsl``,
``commandbus.process.fsm``): the command a step sends and what its reply does, the
helpers that build one (``undo``, ``save``), and the checks a step and the functions it
names pass when the class that declares them is created.

The functions a definition names (how a command's data is built, how a reply updates the
state, conditions) are called by the kernel, so they must be pure like every hook: plain
(not ``async``) functions of the state and the reply, no I/O, no clock, no randomness.
What can be checked when the class is created is: they are callables, not coroutine or
generator functions, and they accept the arguments they will be given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from commandbus.errors import ValidationError
from commandbus.models import Reply, ReplyOutcome
from commandbus.process.errors import ProcessDefinitionError
from commandbus.process.models import ProcessCommand, TimeoutAction
from commandbus.validation import (
    MAX_DELAY_SECONDS,
    validate_command_type,
    validate_name,
    validate_seconds,
)

__all__ = [
    "CommandStep",
    "Condition",
    "DataFn",
    "ReplyFn",
    "TimeoutFn",
    "check_condition",
    "check_step",
    "condition_label",
    "evaluate_condition",
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
