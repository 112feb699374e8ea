"""What can enter a process, and what it makes of it: ``plan`` turns one ``Input``
(an external event, a command's reply, a timer, a cancel) and the process as it stands
into a ``Draft`` to write, or a reason to ignore it. Pure: ``decide``/``evolve`` run
here, nothing is read or written (``ProcessEngine`` does both, for many inputs at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from commandbus.events.models import RecordedEvent
from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.process.models import ProcessStatus
from commandbus.process_manager import events as E
from commandbus.process_manager.draft import Draft
from commandbus.process_manager.events import derived_id
from commandbus.process_manager.instance import ProcessInstance, TaskState
from commandbus.process_manager.manager import EventSourcedProcessManager

__all__ = ["Input", "Planned", "plan"]

TState = TypeVar("TState")


@dataclass(frozen=True)
class Input:
    """One input for one process. ``input_id`` is the id its record gets in the process
    stream: derived from the input, so the same input is recognised when it comes again."""

    process_id: UUID
    input_id: UUID
    kind: str  # "event" | "reply" | "timer" | "cancel"
    #: What is logged if the input is ignored (a message, or a summary of an event).
    message: JsonObject
    event: RecordedEvent | None = None
    key: str | None = None
    starts: bool = False
    reply: Reply | None = None
    timer: JsonObject | None = None
    reason: str = ""

    @classmethod
    def of_event(cls, pid: UUID, key: str, event: RecordedEvent, starts: bool) -> Input:
        summary = {
            "event_type": event.event_type,
            "stream": event.stream,
            "event_id": str(event.event_id),
            "position": event.position,
        }
        return cls(pid, derived_id(pid, "event", event.event_id), "event", summary,
                   event=event, key=key, starts=starts)  # fmt: skip

    @classmethod
    def of_reply(cls, reply: Reply, raw: JsonObject) -> Input:
        assert reply.correlation_id is not None
        pid = reply.correlation_id
        return cls(pid, derived_id(pid, "reply", reply.command_id), "reply", raw, reply=reply)

    @classmethod
    def of_timer(cls, message: JsonObject) -> Input:
        pid = UUID(str(message["process_id"]))
        name, seq = str(message["name"]), int(message["seq"])
        timer = {"name": name, "seq": seq, "data": message.get("data") or {}}
        return cls(pid, derived_id(pid, "timer", name, seq), "timer", message, timer=timer)

    @classmethod
    def of_cancel(cls, pid: UUID, reason: str) -> Input:
        return cls(pid, derived_id(pid, "cancel"), "cancel", {"cancel": reason}, reason=reason)


@dataclass
class Planned:
    """What an input makes: a draft to write, or a reason it was ignored (logged), or a
    troubleshooting notice (the read model only)."""

    draft: Draft[Any] | None = None
    ignored: str | None = None
    tsq_notice: Reply | None = None


def plan(
    manager: EventSourcedProcessManager[TState],
    instance: ProcessInstance[TState],
    item: Input,
) -> Planned:
    if item.kind == "event":
        return _external(manager, instance, item)
    if item.kind == "reply":
        return _reply(manager, instance, item)
    if item.kind == "timer":
        return _timer(manager, instance, item)
    return _cancel(manager, instance, item)


def _external(
    manager: EventSourcedProcessManager[TState], instance: ProcessInstance[TState], item: Input
) -> Planned:
    event = item.event
    assert event is not None
    if instance.book.ending:
        return Planned(ignored="the process has finished")
    draft = Draft(manager, instance, item.input_id)
    if not instance.book.started:
        if not item.starts:
            return Planned(ignored="the process has not started")
        draft.emit(E.PROCESS_STARTED, {"key": item.key}, derived_id(item.process_id, "started"))
    source = {"stream": event.stream, "event_id": str(event.event_id), "position": event.position}
    received = draft.emit(
        E.EVENT_RECEIVED,
        {"event_type": event.event_type, "data": event.data, "source": source},
        item.input_id,
    )
    draft.apply(manager.decide(draft.state, received))
    return Planned(draft)


def _reply(
    manager: EventSourcedProcessManager[TState], instance: ProcessInstance[TState], item: Input
) -> Planned:
    reply = item.reply
    assert reply is not None
    found = instance.book.command(reply.command_id)
    if found is None:
        return Planned(ignored="a reply to a command the process did not send")
    if reply.outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE:
        return Planned(tsq_notice=reply)
    task_id, compensates = found["task_id"], found["compensates"]
    ok = reply.outcome is ReplyOutcome.SUCCESS
    outcome: JsonObject = {
        "task_id": task_id,
        "transition_id": str(reply.command_id),
        "command_id": str(reply.command_id),
        "compensates": compensates,
        "run": found["run"],
        "late": bool(found["late"]),
    }
    if ok:
        outcome["result"] = reply.data or {}
    else:
        outcome.update(
            reason=reply.outcome.value,
            error_code=reply.error_code,
            error_message=reply.error_message,
        )
    draft = Draft(manager, instance, item.input_id)
    record = instance.book.task(task_id)
    awaited = (
        record is not None
        and record["command_id"] == str(reply.command_id)
        and record["state"] == TaskState.PENDING
    )
    if compensates is not None:
        draft.emit(E.TASK_COMPLETED if ok else E.TASK_FAILED, outcome, item.input_id)
        if not found["late"]:
            draft.next_compensation()
    elif not awaited:
        late = {**outcome, "outcome": reply.outcome.value, "why": "no longer awaited"}
        draft.emit(E.TASK_IGNORED, late, item.input_id)
        if ok and found["compensation"]:
            draft.undo_late(found)  # a success that came too late did its work: undo it
    else:
        event = draft.emit(E.TASK_COMPLETED if ok else E.TASK_FAILED, outcome, item.input_id)
        draft.cancel_timeout(task_id)
        if not instance.book.ending:
            draft.apply(manager.decide(draft.state, event))
    return Planned(draft)


def _timer(
    manager: EventSourcedProcessManager[TState], instance: ProcessInstance[TState], item: Input
) -> Planned:
    fired = item.timer
    assert fired is not None
    name, seq = fired["name"], fired["seq"]
    if instance.book.data["timers"].get(name) != seq or instance.book.ending:
        return Planned()  # cancelled, replaced or fired already: nothing to record
    draft = Draft(manager, instance, item.input_id)
    event = draft.emit(E.TIMER_FIRED, fired, item.input_id)
    if name.startswith("timeout:"):
        task_id = str(fired["data"]["task_id"])
        record = instance.book.task(task_id)
        if record is None or record["state"] != TaskState.PENDING:
            return Planned(draft)
        event = draft.emit(
            E.TASK_FAILED,
            {
                "task_id": task_id,
                "transition_id": record["command_id"],
                "command_id": record["command_id"],
                "compensates": None,
                "run": record["run"],
                "late": False,
                "reason": "TIMEOUT",
                "error_code": "TIMEOUT",
                "error_message": f"no reply to task {task_id} in time",
            },
        )
    draft.apply(manager.decide(draft.state, event))
    return Planned(draft)


def _cancel(
    manager: EventSourcedProcessManager[TState], instance: ProcessInstance[TState], item: Input
) -> Planned:
    if instance.book.ending or not instance.book.started:
        return Planned(ignored="the process has ended or not started")
    draft = Draft(manager, instance, item.input_id)
    event = draft.emit(E.PROCESS_CANCELLED, {"reason": item.reason}, item.input_id)
    draft.apply(manager.decide(draft.state, event))
    if draft.book.finished is None and draft.book.data["then"] is None:
        draft.finish(ProcessStatus.CANCELED, "CANCELED", item.reason or "cancelled")
        draft.next_compensation()
    return Planned(draft)
