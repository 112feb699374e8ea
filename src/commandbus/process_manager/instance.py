"""A process instance as loaded from its stream: the manager's state, and the engine's
``Book`` (tasks, timers, compensation, end), both folded from the same events.

The book is plain JSON (it goes into snapshots as it is) and changes only through
``Book.apply``, so loading a process and deciding on an event fold exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.models import JsonObject
from commandbus.process.models import ProcessStatus
from commandbus.process_manager import events as E

__all__ = ["Book", "ProcessInstance", "TaskState"]

TState = TypeVar("TState")


class TaskState:
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class Book:
    """The engine's bookkeeping of one process (see the module docstring)."""

    __slots__ = ("data",)

    def __init__(self, data: JsonObject | None = None) -> None:
        self.data: JsonObject = (
            data
            if data is not None
            else {
                "started": False,
                "finished": None,  # {"status", "error_code", "error_message"} once ended
                "then": None,  # the end waiting for compensations to finish
                "cancelled": False,
                "tasks": {},  # task_id -> record (see TRANSITION_PLANNED)
                "commands": {},  # command id -> its record (see ``command``)
                "timers": {},  # name -> seq of the pending timer
                "timer_seq": 0,
                "completed": 0,  # counter: the order in which tasks completed
                # Compensations left, in order: {"task_id", "run", "compensation"} each, taken
                # when planned (the task may run again meanwhile).
                "to_compensate": [],
                "compensating": None,  # {"task_id", "run"} of the one in flight
                "state_name": None,
            }
        )

    def copy(self) -> Book:
        """A copy that ``apply`` can change without touching this one: the containers it
        changes are copied (task records are changed in place, so they are copied too;
        command records, timers and queued compensations are only ever replaced)."""
        data = dict(self.data)
        data["tasks"] = {task_id: dict(record) for task_id, record in data["tasks"].items()}
        data["commands"] = dict(data["commands"])
        data["timers"] = dict(data["timers"])
        data["to_compensate"] = list(data["to_compensate"])
        return Book(data)

    # -- reading -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self.data["started"])

    @property
    def finished(self) -> JsonObject | None:
        finished: JsonObject | None = self.data["finished"]
        return finished

    def task(self, task_id: str) -> JsonObject | None:
        found: JsonObject | None = self.data["tasks"].get(task_id)
        return found

    def pending_tasks(self) -> list[str]:
        return [t for t, r in self.data["tasks"].items() if r["state"] == TaskState.PENDING]

    def command(self, command_id: UUID) -> JsonObject | None:
        """What the process sent as ``command_id``: ``task_id``, ``run``, ``compensates``
        (the task it undoes, for a compensation), ``late`` (undoing a success that came
        after the task was no longer awaited), ``compensation`` (what undoes it)."""
        found: JsonObject | None = self.data["commands"].get(str(command_id))
        return found

    @property
    def ending(self) -> bool:
        """Finished, or finishing once its compensations have replied: it decides nothing
        more."""
        return self.finished is not None or self.data["then"] is not None

    def completed_with_compensation(self) -> list[str]:
        """Completed tasks that have a compensation, most recently completed first."""
        done = [
            (r["completed_order"], t)
            for t, r in self.data["tasks"].items()
            if r["state"] == TaskState.COMPLETED and r.get("compensation")
        ]
        return [t for _, t in sorted(done, reverse=True)]

    def compensation_busy(self) -> bool:
        return bool(self.data["to_compensate"]) or self.data["compensating"] is not None

    def status(self) -> ProcessStatus:
        """The read model's status."""
        if self.finished is not None:
            return ProcessStatus(self.finished["status"])
        if self.compensation_busy():
            return ProcessStatus.COMPENSATING
        if self.pending_tasks():
            return ProcessStatus.WAITING_FOR_REPLY
        return ProcessStatus.IN_PROGRESS

    # -- folding -------------------------------------------------------------------

    def apply(self, event_type: str, data: JsonObject) -> None:
        """Fold one process stream event (events of the manager's own change nothing)."""
        d = self.data
        if event_type == E.PROCESS_STARTED:
            d["started"] = True
        elif event_type == E.TRANSITION_PLANNED:
            compensates = data.get("compensates")
            late = bool(data.get("late"))
            d["commands"][data["command_id"]] = {
                "task_id": data["task_id"],
                "run": data["run"],
                "compensates": compensates,
                "late": late,
                "compensation": data.get("compensation"),
            }
            if late:
                pass
            elif compensates is not None:
                d["compensating"] = {"task_id": compensates, "run": data["run"]}
                d["to_compensate"] = [
                    c
                    for c in d["to_compensate"]
                    if (c["task_id"], c["run"]) != (compensates, data["run"])
                ]
            else:
                d["tasks"][data["task_id"]] = {
                    "run": data["run"],
                    "command_id": data["command_id"],
                    "command_type": data["command_type"],
                    "domain": data["domain"],
                    "branch": data.get("branch"),
                    "compensation": data.get("compensation"),
                    "state": TaskState.PENDING,
                    "completed_order": None,
                }
            if data.get("to_state") is not None:
                d["state_name"] = data["to_state"]
        elif event_type in (E.TASK_COMPLETED, E.TASK_FAILED):
            self._task_ended(event_type == E.TASK_COMPLETED, data)
        elif event_type == E.TASK_CANCELLED:
            record = d["tasks"].get(data["task_id"])
            if record is not None and record["state"] == TaskState.PENDING:
                record["state"] = TaskState.CANCELLED
        elif event_type == E.TIMER_SCHEDULED:
            d["timer_seq"] = max(d["timer_seq"], data["seq"])
            d["timers"][data["name"]] = data["seq"]
        elif event_type in (E.TIMER_FIRED, E.TIMER_CANCELLED):
            if d["timers"].get(data["name"]) == data["seq"]:
                del d["timers"][data["name"]]
        elif event_type == E.COMPENSATION_PLANNED:
            queued = {(c["task_id"], c["run"]) for c in d["to_compensate"]}
            d["to_compensate"].extend(
                c for c in data["tasks"] if (c["task_id"], c["run"]) not in queued
            )
            if data.get("then") is not None:
                d["then"] = data["then"]
        elif event_type == E.PROCESS_CANCELLED:
            d["cancelled"] = True
        elif event_type == E.PROCESS_FINISHED:
            d["finished"] = {k: data.get(k) for k in ("status", "error_code", "error_message")}
            d["then"] = None
        elif event_type == E.STATE_NAMED:
            d["state_name"] = data["state_name"]

    def _task_ended(self, success: bool, data: JsonObject) -> None:
        d = self.data
        compensates = data.get("compensates")
        sent = d["commands"].get(data["command_id"], {})
        if sent.get("late"):
            return  # undid a late success: nothing else depends on it
        if compensates is not None:
            d["compensating"] = None
            record = d["tasks"].get(compensates)
            if record is not None and record["run"] == sent.get("run"):
                record["state"] = (
                    TaskState.COMPENSATED if success else TaskState.COMPENSATION_FAILED
                )
            return
        record = d["tasks"].get(data["task_id"])
        if record is None or record["command_id"] != data["command_id"]:
            return
        if success:
            d["completed"] += 1
            record["state"] = TaskState.COMPLETED
            record["completed_order"] = d["completed"]
        else:
            record["state"] = TaskState.FAILED


@dataclass
class ProcessInstance(Generic[TState]):
    """A process as loaded: its id, its stream's version, the manager's state, the book."""

    process_id: UUID
    stream: str
    version: int
    state: TState
    book: Book

    @property
    def status(self) -> ProcessStatus:
        return self.book.status()

    def summary(self) -> dict[str, Any]:
        return {"process_id": str(self.process_id), "version": self.version, **self.book.data}
