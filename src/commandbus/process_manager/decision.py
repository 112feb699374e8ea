"""What ``decide`` returns (seed 003: ``Decision(events, commands)``), and its parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from commandbus.models import JsonObject
from commandbus.process.models import ProcessStatus

__all__ = ["FINISHING_STATUSES", "Compensation", "Decision", "Fact", "Task", "Timer"]

#: The statuses a decision may end a process with.
FINISHING_STATUSES = frozenset(
    {ProcessStatus.COMPLETED, ProcessStatus.FAILED, ProcessStatus.CANCELED}
)


@dataclass(frozen=True, slots=True)
class Fact:
    """An event of the manager's own, appended to the process stream (e.g.
    ``Fact("PreviewRequested", {"env": "staging"})``)."""

    event_type: str
    data: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Compensation:
    """The command that undoes a completed task (sent by the engine when compensating)."""

    command_type: str
    data: JsonObject = field(default_factory=dict)
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A command the process sends and waits for. ``task_id`` names it within the process
    (``"deploy-staging"``); a task id may be planned again once its last run ended.

    ``branch`` groups parallel tasks in the audit trail; ``timeout`` (seconds) fails the
    task with reason ``TIMEOUT`` if no reply came by then (a late reply is then ignored,
    and compensated if it was a success); ``compensation`` is what undoes it."""

    task_id: str
    command_type: str
    data: JsonObject = field(default_factory=dict)
    domain: str | None = None
    branch: str | None = None
    timeout: float | None = None
    compensation: Compensation | None = None
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer: ``TimerFired(name, data)`` enters the process ``after`` seconds
    from now, once. Scheduling a timer of the same name replaces the pending one."""

    name: str
    after: float
    data: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a process decided on one event. Pure data: the engine applies it, all of it
    in the transaction that handles the event.

    - ``events``: the manager's own facts, appended to the process stream;
    - ``commands``: tasks to send (several at once run in parallel);
    - ``timers``: timers to schedule; ``cancel_timers``: names to cancel;
    - ``cancel_tasks``: tasks no longer waited for (a late success is compensated);
    - ``compensate``: completed tasks to undo, in the order given (``"all"``: every completed
      task with a compensation, most recent first), one after the other;
    - ``finish``: end the process (COMPLETED, FAILED, CANCELED), once the compensations it
      started have replied (COMPENSATED instead of FAILED/CANCELED when there were some);
    - ``state_name``: what the read model shows as the process's current step.
    """

    events: Sequence[Fact] = ()
    commands: Sequence[Task] = ()
    timers: Sequence[Timer] = ()
    cancel_timers: Sequence[str] = ()
    cancel_tasks: Sequence[str] = ()
    compensate: Sequence[str] | Literal["all"] = ()
    finish: ProcessStatus | None = None
    error_code: str | None = None
    error_message: str | None = None
    state_name: str | None = None
