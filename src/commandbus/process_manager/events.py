"""The process stream's own events (seed 003's event model) and ``ProcessEvent``, what
``decide`` and ``evolve`` receive.

Each process instance has one stream, ``<process_type>-<process_id>``, holding its whole
history: the inputs that entered it (external events, wrapped as ``EventReceived``; task
outcomes; timers; a cancel) and what it decided (the manager's own events, the tasks it
planned, its end). Its state is folded from that stream, so it can be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from commandbus.models import JsonObject

__all__ = [
    "COMPENSATION_PLANNED",
    "ENGINE_EVENT_TYPES",
    "EVENT_RECEIVED",
    "PROCESS_CANCELLED",
    "PROCESS_COMPLETED",
    "PROCESS_FINISHED",
    "PROCESS_STARTED",
    "STATE_NAMED",
    "TASK_CANCELLED",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_IGNORED",
    "TIMER_CANCELLED",
    "TIMER_FIRED",
    "TIMER_SCHEDULED",
    "TRANSITION_PLANNED",
    "ProcessEvent",
    "derived_id",
]

#: The process was created by its start event.
PROCESS_STARTED = "ProcessStarted"
#: An external event entered the process (its type, data and origin are in the data).
EVENT_RECEIVED = "EventReceived"
#: A task's command was sent (seed 003: ``TransitionPlanned(transition_id, from_state,
#: to_state, task_id, ...)``).
TRANSITION_PLANNED = "TransitionPlanned"
#: A task's command replied SUCCESS (``TaskCompleted(task_id, transition_id, result)``).
TASK_COMPLETED = "TaskCompleted"
#: A task's command failed, was canceled by an operator, or timed out (``TaskFailed(task_id,
#: transition_id, reason)``).
TASK_FAILED = "TaskFailed"
#: The process stopped waiting for a task; a late success is compensated.
TASK_CANCELLED = "TaskCancelled"
#: A task outcome that came too late (cancelled task) or twice: recorded, not decided on.
TASK_IGNORED = "TaskIgnored"
TIMER_SCHEDULED = "TimerScheduled"
TIMER_FIRED = "TimerFired"
TIMER_CANCELLED = "TimerCancelled"
#: Completed tasks to undo, one after the other, and the end to reach afterwards.
COMPENSATION_PLANNED = "CompensationPlanned"
#: The read model's current step changed (``Decision.state_name``).
STATE_NAMED = "StateNamed"
#: Someone asked the process to stop (``ProcessCancelled(reason)``).
PROCESS_CANCELLED = "ProcessCancelled"
#: The process reached its end: ``status`` COMPLETED, FAILED, CANCELED or COMPENSATED.
PROCESS_FINISHED = "ProcessFinished"
#: Seed 003's name for a successful end, kept as an alias in the data of PROCESS_FINISHED.
PROCESS_COMPLETED = "ProcessCompleted"

ENGINE_EVENT_TYPES = frozenset(
    {
        PROCESS_STARTED,
        EVENT_RECEIVED,
        TRANSITION_PLANNED,
        TASK_COMPLETED,
        TASK_FAILED,
        TASK_CANCELLED,
        TASK_IGNORED,
        TIMER_SCHEDULED,
        TIMER_FIRED,
        TIMER_CANCELLED,
        COMPENSATION_PLANNED,
        STATE_NAMED,
        PROCESS_CANCELLED,
        PROCESS_FINISHED,
    }
)


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """An event as a process sees it. For an external event, ``event_type`` and ``data``
    are the original's (``source`` says where it came from); for the engine's events,
    their type and data (e.g. ``TaskCompleted`` with ``task_id`` and ``result``)."""

    event_type: str
    data: JsonObject
    #: The id of the event in the process stream.
    event_id: UUID
    #: Its version in the process stream (0: not stored yet).
    version: int = 0
    recorded_at: datetime | None = None
    #: For an external event: ``{"stream", "event_id", "position"}`` of the original.
    source: JsonObject | None = field(default=None)

    def get(self, key: str, default: Any = None) -> Any:
        """``data.get(key, default)``."""
        return self.data.get(key, default)


def derived_id(base: UUID, *parts: object) -> UUID:
    """A deterministic id (uuid5) under ``base``: the same input gives the same event and
    command ids, so a repeated input is recognised instead of applied twice."""
    return uuid5(base, ":".join(str(p) for p in parts))
