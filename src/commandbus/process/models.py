"""Process manager domain models (seed story S057).

Plain data with no I/O. ``ProcessMetadata`` is generic over the typed state and the step
enum of a process type; the repository stores the state as JSON (``to_dict``) and the
manager turns it back into its ``state_class`` (``from_dict``) when it loads a process.

Besides the seed's fields, ``ProcessMetadata`` carries the engine's bookkeeping, stored in
columns of the ``commandbus.process`` row:

- ``version`` — bumped by every update; updates check it (optimistic concurrency on top of
  the row lock the engine already holds);
- ``awaiting_command_id`` — the one command whose reply the process waits for (a forward
  step or a compensation). Any other reply is stale and ignored;
- ``command_seq`` — how many commands the process has sent; command ids are derived from
  it (``uuid5``), so deciding is deterministic and a re-decision can never send twice;
- ``deadline_at`` — when the awaited command times out (``StepDefinition.timeout_seconds``);
- ``compensation`` — while COMPENSATING: the compensation steps still to send, those that
  failed, and the status to end in.

and the start input, ``initial_data``, written with the new row and never updated (replay
folds a process's history from it: ``commandbus.process.replay``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, Self, TypeVar
from uuid import UUID

from commandbus.models import JsonObject, Reply, ReplyOutcome

__all__ = [
    "FINAL_REPLY_OUTCOMES",
    "AuditEntryKind",
    "CompensationPlan",
    "ProcessAuditEntry",
    "ProcessCommand",
    "ProcessMessageDisposition",
    "ProcessMessageRecord",
    "ProcessMetadata",
    "ProcessResponse",
    "ProcessSnapshot",
    "ProcessState",
    "ProcessStatus",
    "StepDefinition",
    "TState",
    "TStep",
    "TimeoutAction",
    "completed_steps",
]


class ProcessStatus(StrEnum):
    """Status of a process instance (values as in the design document).

    ``PENDING`` and ``IN_PROGRESS`` exist for compatibility with the design; the engine
    never stores them, because a start and every step are single transactions: a process
    is stored WAITING (for a reply) from its first commit on.
    """

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    WAITING_FOR_REPLY = "WAITING"
    WAITING_FOR_TSQ = "WAITING_FOR_TSQ"
    #: A step timed out (``TimeoutAction.TSQ``): an operator decides — retry the step,
    #: complete it with a result, or cancel. Its command is not in the TSQ (it may still
    #: reply late, which continues the process).
    WAITING_FOR_OPERATOR = "WAITING_FOR_OPERATOR"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def needs_operator(self) -> bool:
        """The process waits for a person: its step's command is in the troubleshooting
        queue, or the step timed out."""
        return self in (ProcessStatus.WAITING_FOR_TSQ, ProcessStatus.WAITING_FOR_OPERATOR)


_TERMINAL = frozenset(
    {
        ProcessStatus.COMPLETED,
        ProcessStatus.COMPENSATED,
        ProcessStatus.FAILED,
        ProcessStatus.CANCELED,
    }
)

#: Reply outcomes that answer a command for good (``IN_TROUBLESHOOTING_QUEUE`` is a notice).
FINAL_REPLY_OUTCOMES = frozenset({ReplyOutcome.SUCCESS, ReplyOutcome.FAILED, ReplyOutcome.CANCELED})


class ProcessState(Protocol):
    """Typed process state: a (mutable) class with JSON (de)serialisation."""

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a JSON-compatible dict for storage."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Deserialise from the dict ``to_dict`` produced."""
        ...


TState = TypeVar("TState", bound=ProcessState)
TStep = TypeVar("TStep", bound=StrEnum)
TData = TypeVar("TData")
TResult = TypeVar("TResult")


class AuditEntryKind(StrEnum):
    """Whether an audit entry is a forward step, a compensation of one, or the upgrade of
    the stored state to a newer ``state_version`` (not a command: ``command_type`` is
    ``state_upgrade`` and ``command_data`` the two versions)."""

    STEP = "STEP"
    COMPENSATION = "COMPENSATION"
    STATE_UPGRADE = "STATE_UPGRADE"


class TimeoutAction(StrEnum):
    """What a process does when the command of a step did not reply in time.

    - ``TSQ`` (default): park the process WAITING_FOR_OPERATOR with error ``STEP_TIMEOUT``;
      an operator retries the step, completes it with a result, or cancels the process
      (``retry_step``, ``complete_step``, ``cancel``). The command stays awaited, so a
      late reply still continues the process.
    - ``RETRY``: send the step again as a new command; a late reply to the old one is
      ignored. Only safe when the step's handler is idempotent.
    - ``COMPENSATE``: give up the step and compensate the completed ones; ends FAILED.
    - ``FAIL``: end FAILED at once, without compensation.
    """

    TSQ = "TSQ"
    RETRY = "RETRY"
    COMPENSATE = "COMPENSATE"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CompensationPlan:
    """Progress of a compensation (stored as JSON in ``process.compensation``).

    ``remaining`` are the compensation steps not yet sent, in the order they will be sent
    (the reverse of the order their forward steps completed). ``target`` is the status the
    process ends in when all of them replied successfully; if any failed, it ends FAILED
    with error ``COMPENSATION_FAILED``.
    """

    target: ProcessStatus
    remaining: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    #: A cancel that waits for the outcome of this forward step (its command had started
    #: and could not be withdrawn); the plan is made when that reply arrives.
    waiting_for: str | None = None
    #: Kept once that reply came (the audit does not record the cancel itself): replay
    #: feeds the cancel before that step's reply.
    waited_for: str | None = None

    def to_dict(self) -> JsonObject:
        data: JsonObject = {
            "target": self.target.value,
            "remaining": list(self.remaining),
            "failed": list(self.failed),
        }
        if self.waiting_for is not None:
            data["waiting_for"] = self.waiting_for
        if self.waited_for is not None:
            data["waited_for"] = self.waited_for
        return data

    @classmethod
    def from_dict(cls, data: JsonObject) -> CompensationPlan:
        waiting_for = data.get("waiting_for")
        waited_for = data.get("waited_for")
        return cls(
            target=ProcessStatus(data["target"]),
            remaining=tuple(data.get("remaining", ())),
            failed=tuple(data.get("failed", ())),
            waiting_for=waiting_for if isinstance(waiting_for, str) else None,
            waited_for=waited_for if isinstance(waited_for, str) else None,
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ProcessMetadata(Generic[TState, TStep]):
    """A process instance. ``state`` is typed (``TState``) when loaded through a manager,
    a plain dict when read straight from a repository."""

    domain: str
    process_id: UUID
    process_type: str
    status: ProcessStatus = ProcessStatus.PENDING
    current_step: TStep | None = None
    state: TState = None  # type: ignore[assignment]  # always set by the engine

    created_at: datetime = field(default_factory=_utcnow)
    updated_at: datetime = field(default_factory=_utcnow)
    completed_at: datetime | None = None

    error_code: str | None = None
    error_message: str | None = None

    # Engine bookkeeping (see the module docstring).
    version: int = 0
    awaiting_command_id: UUID | None = None
    command_seq: int = 0
    deadline_at: datetime | None = None
    compensation: CompensationPlan | None = None

    #: The start input given to ``start``/``start_many`` (a copy), kept for replay.
    #: Written once with the new row and never updated; None for processes stored
    #: before it was kept (they cannot be replayed without it).
    initial_data: JsonObject | None = None
    #: The batch the process was started in (``start_many(..., batch=...)``), or None.
    #: Written with the new row and never updated.
    batch_id: UUID | None = None

    def copy(self, **changes: Any) -> ProcessMetadata[TState, TStep]:
        """A shallow copy with ``changes`` applied (the state object is shared).

        Same result as ``dataclasses.replace`` at a fraction of its cost (the engine makes
        a few copies per message)."""
        if not _PROCESS_FIELDS.issuperset(changes):
            unknown = changes.keys() - _PROCESS_FIELDS
            raise TypeError(f"ProcessMetadata has no field(s) {sorted(unknown)}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


_PROCESS_FIELDS = frozenset(ProcessMetadata.__dataclass_fields__)


@dataclass
class ProcessAuditEntry:
    """One command a process sent and the reply that answered it.

    ``reply_*`` and ``received_at`` hold the reply the process acted on (a troubleshooting
    notice is replaced by the final reply that follows it). Replies the process ignored
    (duplicates, late or stale ones) are not written here but in the message log.
    ``timed_out_at`` is set when the step's timer fired while the reply was awaited;
    ``scheduled_for`` when a step's command was sent to run later.
    """

    step_name: str
    command_id: UUID
    command_type: str
    command_data: dict[str, Any] | None
    sent_at: datetime

    reply_outcome: ReplyOutcome | None = None
    reply_data: dict[str, Any] | None = None
    received_at: datetime | None = None

    kind: AuditEntryKind = AuditEntryKind.STEP
    error_code: str | None = None
    error_message: str | None = None
    timed_out_at: datetime | None = None
    #: When the command becomes visible to workers, for a step sent later
    #: (``ProcessCommand(delay_seconds=…)``); None: at once.
    scheduled_for: datetime | None = None

    @property
    def is_answered(self) -> bool:
        """True once a final reply (not a troubleshooting notice) was recorded."""
        return self.reply_outcome in FINAL_REPLY_OUTCOMES

    def copy(self) -> ProcessAuditEntry:
        """A shallow copy (like ``copy.copy``, several times faster)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


@dataclass(frozen=True)
class StepDefinition:
    """Optional static configuration of a step (``BaseProcessManager.steps``).

    ``compensation_step`` is the default of ``get_compensation_step``; ``timeout_seconds``
    the default of ``get_step_timeout`` (None: the step never times out).
    """

    name: str
    command_type: str
    compensation_step: str | None = None
    timeout_seconds: float | None = None


def _data_to_dict(data: object) -> JsonObject:
    to_dict = getattr(data, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if not isinstance(result, dict):
            raise TypeError(f"{type(data).__name__}.to_dict() must return a dict")
        return result
    if isinstance(data, dict):
        return data
    raise TypeError(
        f"command data of type {type(data).__name__} has no to_dict(); "
        "use a dict or a class with to_dict()/from_dict()"
    )


@dataclass(frozen=True)
class ProcessCommand(Generic[TData]):
    """A command a step sends: its type and typed data (a dict or a ``to_dict`` class).

    ``domain`` is where the command goes; None means the process manager's own domain.
    ``delay_seconds`` sends it later ("remind in 3 days": ``3 * 86400``): it is written
    now, durably, and becomes visible to workers then; the audit entry shows it as
    ``scheduled_for`` and the step's timeout counts from then.
    """

    command_type: str
    data: TData
    domain: str | None = None
    delay_seconds: float = 0.0

    def data_dict(self) -> JsonObject:
        """The data as the JSON object that goes on the wire."""
        return _data_to_dict(self.data)

    def to_dict(self) -> JsonObject:
        result: JsonObject = {"command_type": self.command_type, "data": self.data_dict()}
        if self.domain is not None:
            result["domain"] = self.domain
        if self.delay_seconds:
            result["delay_seconds"] = self.delay_seconds
        return result

    @classmethod
    def from_dict(cls, data: JsonObject, data_type: type[TData]) -> ProcessCommand[TData]:
        from_dict = getattr(data_type, "from_dict", None)
        payload = from_dict(data["data"]) if callable(from_dict) else data["data"]
        return cls(
            command_type=data["command_type"],
            data=payload,
            domain=data.get("domain"),
            delay_seconds=float(data.get("delay_seconds", 0.0)),
        )


@dataclass(frozen=True)
class ProcessResponse(Generic[TResult]):
    """A reply with its result parsed into ``TResult`` (via ``from_dict`` when it has one)."""

    outcome: ReplyOutcome
    result: TResult | None
    error_code: str | None
    error_message: str | None

    @classmethod
    def from_reply(cls, reply: Reply, result_type: type[TResult]) -> ProcessResponse[TResult]:
        result: Any = None
        if reply.data is not None:
            from_dict = getattr(result_type, "from_dict", None)
            result = from_dict(reply.data) if callable(from_dict) else reply.data
        return cls(
            outcome=reply.outcome,
            result=result,
            error_code=reply.error_code,
            error_message=reply.error_message,
        )


class ProcessMessageDisposition(StrEnum):
    """What the router did with a message it did not apply."""

    IGNORED = "IGNORED"  # a stray: duplicate, stale, late, unknown or terminal process
    PARKED = "PARKED"  # could not be handled (malformed, no manager, a hook raised)


@dataclass(frozen=True)
class ProcessMessageRecord:
    """A message from a process reply queue that was ignored or parked (message log)."""

    disposition: ProcessMessageDisposition
    reason: str
    message: JsonObject
    domain: str | None = None
    process_id: UUID | None = None
    command_id: UUID | None = None
    queue_name: str | None = None
    msg_id: int | None = None
    recorded_at: datetime | None = None
    id: int | None = None


@dataclass
class ProcessSnapshot(Generic[TState, TStep]):
    """A process with its audit trail (in send order): what ``decide`` looks at."""

    process: ProcessMetadata[TState, TStep]
    audit: list[ProcessAuditEntry] = field(default_factory=list)

    def entry_for(self, command_id: UUID) -> ProcessAuditEntry | None:
        for entry in reversed(self.audit):
            if entry.command_id == command_id:
                return entry
        return None

    def awaited_entry(self) -> ProcessAuditEntry | None:
        """The audit entry of the command the process awaits, if any."""
        awaited = self.process.awaiting_command_id
        return self.entry_for(awaited) if awaited is not None else None


def completed_steps(trail: Sequence[ProcessAuditEntry]) -> list[str]:
    """Forward steps answered SUCCESS, in the order they were sent (what compensation
    walks backwards); compensation commands themselves are not steps."""
    return [
        e.step_name
        for e in trail
        if e.kind is AuditEntryKind.STEP and e.reply_outcome is ReplyOutcome.SUCCESS
    ]
