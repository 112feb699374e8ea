"""``Draft``: the events, commands and timers one input makes, folded as they are added,
and how a ``Decision`` turns into them. Pure: no I/O (the engine writes the draft)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.errors import ValidationError
from commandbus.events.ports import EncodedEvent
from commandbus.models import JsonObject
from commandbus.process.models import ProcessStatus
from commandbus.process_manager import events as E
from commandbus.process_manager.decision import FINISHING_STATUSES, Decision, Task
from commandbus.process_manager.events import ProcessEvent, derived_id
from commandbus.process_manager.instance import Book, ProcessInstance, TaskState
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.validation import (
    MAX_DELAY_SECONDS,
    encode_payload,
    json_text,
    validate_command_type,
    validate_name,
    validate_seconds,
    validate_text,
)

__all__ = ["Draft", "PlannedTimer", "process_event_of"]

TState = TypeVar("TState")


def process_event_of(
    event_type: str, data: JsonObject, event_id: UUID, version: int
) -> ProcessEvent:
    """What ``evolve``/``decide`` see of a process stream event: an ``EventReceived`` is
    unwrapped into the original event."""
    if event_type == E.EVENT_RECEIVED:
        return ProcessEvent(
            data["event_type"], data["data"], event_id, version, source=data.get("source")
        )
    return ProcessEvent(event_type, data, event_id, version)


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    task_id: str
    command_id: UUID
    domain: str
    command_type: str
    data: JsonObject
    max_attempts: int | None
    compensates: str | None


@dataclass(frozen=True, slots=True)
class PlannedTimer:
    name: str
    seq: int
    after: float
    data: JsonObject


@dataclass
class Draft(Generic[TState]):
    """Everything handling one input adds to a process (see the module docstring)."""

    manager: EventSourcedProcessManager[TState]
    instance: ProcessInstance[TState]
    #: The id of the input's own stream event: the events after it derive theirs from it.
    input_id: UUID
    book: Book = field(init=False)
    state: TState = field(init=False)
    events: list[EncodedEvent] = field(default_factory=list)
    commands: list[OutgoingCommand] = field(default_factory=list)
    timers: list[PlannedTimer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = self.instance.book.copy()
        self.state = self.instance.state

    @property
    def process_id(self) -> UUID:
        return self.instance.process_id

    def emit(self, event_type: str, data: JsonObject, event_id: UUID | None = None) -> ProcessEvent:
        """Add an event to the stream: fold it into the book and the manager's state."""
        if event_id is None:
            event_id = derived_id(self.input_id, len(self.events))
        # Encoded once, here: what goes in is JSON already (validated decisions, stored
        # events, replies), so the append needs no second validation.
        self.events.append(
            EncodedEvent(
                event_id=event_id,
                event_type=event_type,
                data=json_text(data),
                metadata="{}",
                correlation_id=self.process_id,
                causation_id=self.input_id,
            )
        )
        self.book.apply(event_type, data)
        version = self.instance.version + len(self.events)
        event = process_event_of(event_type, data, event_id, version)
        self.state = self.manager.evolve(self.state, event)
        return event

    # -- applying a decision -----------------------------------------------------------

    def apply(self, decision: Decision) -> None:
        if not isinstance(decision, Decision):
            raise TypeError(
                f"{type(self.manager).__name__}.decide returned {type(decision).__name__}, "
                "not a Decision"
            )
        for fact in decision.events:
            if fact.event_type in E.ENGINE_EVENT_TYPES:
                raise ValidationError(
                    f"{fact.event_type!r} is an event of the engine's own: name yours otherwise"
                )
            self.emit(fact.event_type, encode_check(fact.data, f"event {fact.event_type}"))
        if decision.state_name is not None and decision.state_name != self.book.data["state_name"]:
            self.emit(
                E.STATE_NAMED, {"state_name": validate_text(decision.state_name, "state_name", 200)}
            )
        for name in decision.cancel_timers:
            seq = self.book.data["timers"].get(name)
            if seq is not None:
                self.emit(E.TIMER_CANCELLED, {"name": name, "seq": seq})
        for task_id in decision.cancel_tasks:
            self.cancel_task(task_id)
        # Before the new tasks: the runs to undo are those completed so far.
        if decision.compensate:
            tasks = (
                self.book.completed_with_compensation()
                if decision.compensate == "all"
                else list(decision.compensate)
            )
            self.queue_compensations(tasks)
        for task in decision.commands:
            self.plan(task)
        for timer in decision.timers:
            self.schedule(timer.name, timer.after, encode_check(timer.data, f"timer {timer.name}"))
        if decision.finish is not None:
            self.finish(decision.finish, decision.error_code, decision.error_message)
        self.next_compensation()

    def queue_compensations(self, task_ids: list[str]) -> None:
        """Queue the compensations of these completed tasks' latest runs, in order."""
        entries = []
        for task_id in task_ids:
            record = self.book.task(task_id)
            if record is None or record["state"] != TaskState.COMPLETED:
                raise ValidationError(f"cannot compensate task {task_id!r}: it has not completed")
            if not record.get("compensation"):
                raise ValidationError(f"task {task_id!r} has no compensation")
            entries.append(
                {"task_id": task_id, "run": record["run"], "compensation": record["compensation"]}
            )
        if entries:
            self.emit(E.COMPENSATION_PLANNED, {"tasks": entries, "then": None})

    def plan(
        self,
        task: Task,
        *,
        compensates: str | None = None,
        run: int | None = None,
        late: bool = False,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"Decision.commands holds {type(task).__name__}, not a Task")
        task_id = validate_text(task.task_id, "task_id", 200)
        if not task_id:
            raise ValidationError("task_id must not be empty")
        record = self.book.task(task_id)
        if compensates is None and record is not None and record["state"] == TaskState.PENDING:
            raise ValidationError(f"task {task_id!r} is already running")
        if run is None:
            run = 1 if record is None else int(record["run"]) + 1
            if compensates is not None:
                run = int(record["run"]) if record is not None else 1
        kind = "compensation" if compensates is not None else "task"
        command_id = derived_id(self.process_id, kind, task_id, run)
        domain = validate_name(task.domain or self.manager.domain)
        command_type = validate_command_type(task.command_type)
        data = encode_check(task.data, f"task {task_id}")
        compensation = None
        if task.compensation is not None:
            c = task.compensation
            compensation = {
                "command_type": validate_command_type(c.command_type),
                "data": encode_check(c.data, f"compensation of {task_id}"),
                "domain": validate_name(c.domain or domain),
            }
        self.emit(
            E.TRANSITION_PLANNED,
            {
                "transition_id": str(command_id),
                "task_id": task_id,
                "run": run,
                "command_id": str(command_id),
                "command_type": command_type,
                "domain": domain,
                "data": data,
                "branch": task.branch,
                "compensation": compensation,
                "compensates": compensates,
                "late": late,
                "from_state": self.book.data["state_name"],
                "to_state": None,
            },
        )
        self.commands.append(
            OutgoingCommand(
                task_id, command_id, domain, command_type, data, task.max_attempts, compensates
            )
        )
        if task.timeout is not None and compensates is None:
            after = validate_seconds(task.timeout, "Task.timeout", MAX_DELAY_SECONDS)
            self.schedule(f"timeout:{task_id}", after, {"task_id": task_id, "run": run})

    def undo_late(self, sent: JsonObject) -> None:
        """Send the compensation of a task run whose success came after the process had
        stopped waiting for it (at once: it is not part of the process's own sequence)."""
        c = sent["compensation"]
        task = Task(sent["task_id"], c["command_type"], c["data"], c["domain"])
        self.plan(task, compensates=sent["task_id"], run=int(sent["run"]), late=True)

    def schedule(self, name: str, after: float, data: JsonObject) -> None:
        name = validate_text(name, "timer name", 200)
        after = validate_seconds(after, "Timer.after", MAX_DELAY_SECONDS, allow_zero=True)
        seq = int(self.book.data["timer_seq"]) + 1
        self.emit(E.TIMER_SCHEDULED, {"name": name, "seq": seq, "after": after, "data": data})
        self.timers.append(PlannedTimer(name, seq, after, data))

    def cancel_timeout(self, task_id: str) -> None:
        """Cancel the timeout timer of ``task_id``, if one is pending."""
        seq = self.book.data["timers"].get(f"timeout:{task_id}")
        if seq is not None:
            self.emit(E.TIMER_CANCELLED, {"name": f"timeout:{task_id}", "seq": seq})

    def cancel_task(self, task_id: str) -> None:
        record = self.book.task(task_id)
        if record is not None and record["state"] == TaskState.PENDING:
            self.emit(E.TASK_CANCELLED, {"task_id": task_id, "command_id": record["command_id"]})
            self.cancel_timeout(task_id)

    def finish(self, status: ProcessStatus, code: str | None, message: str | None) -> None:
        status = ProcessStatus(status)
        if status not in FINISHING_STATUSES:
            raise ValidationError(
                f"a decision can finish a process as {sorted(FINISHING_STATUSES)}, not {status}"
            )
        for task_id in self.book.pending_tasks():
            self.cancel_task(task_id)
        for name, seq in list(self.book.data["timers"].items()):
            self.emit(E.TIMER_CANCELLED, {"name": name, "seq": seq})
        end = {"status": status.value, "error_code": code, "error_message": message}
        if self.book.compensation_busy():
            self.emit(E.COMPENSATION_PLANNED, {"tasks": [], "then": end})
        else:
            self.emit(E.PROCESS_FINISHED, end)

    def next_compensation(self) -> None:
        """Send the next compensation in line, or reach the end waiting for them."""
        book = self.book
        if book.data["compensating"] is not None:
            return
        if book.data["to_compensate"]:
            entry = book.data["to_compensate"][0]
            c, task_id = entry["compensation"], entry["task_id"]
            task = Task(task_id, c["command_type"], c["data"], c["domain"])
            self.plan(task, compensates=task_id, run=int(entry["run"]))
            return
        then = book.data["then"]
        if then is not None:
            status = then["status"]
            if status in (ProcessStatus.FAILED.value, ProcessStatus.CANCELED.value):
                status = ProcessStatus.COMPENSATED.value
            self.emit(E.PROCESS_FINISHED, {**then, "status": status})


def encode_check(data: Any, what: str) -> JsonObject:
    """``data`` if it is a JSON object a payload can hold (a clear error otherwise)."""
    encode_payload(data, what)
    result: JsonObject = data
    return result
