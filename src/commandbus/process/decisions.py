"""What goes into and comes out of the kernel: incoming messages (replies, timers, cancels,
and the wire form of timer messages) and the ``Decision`` value with its parts. Plain
values, no behaviour; ``commandbus.process.kernel`` decides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from hashlib import sha1
from typing import Generic, TypeVar
from uuid import UUID

from commandbus.models import JsonObject, Reply
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessState,
)
from commandbus.validation import validate_name

S = TypeVar("S", bound=ProcessState)
T = TypeVar("T", bound=StrEnum)

#: Namespace of the ``uuid5`` command ids a process derives.
PROCESS_COMMAND_NAMESPACE = UUID("6f1c1f2e-3f3b-5b8a-9d0e-7c1c6a9f4b21")
#: ``kind`` of a timer message on a process reply queue.
TIMER_MESSAGE_KIND = "commandbus.process_timer"


# -- incoming messages --------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyReceived:
    reply: Reply


@dataclass(frozen=True)
class TimerFired:
    """A step timer: fires for ``command_id``; acts only if that command is still awaited."""

    command_id: UUID


@dataclass(frozen=True)
class CancelRequested:
    """``cancel(reason)``. ``awaited_started`` is a fact the engine reads (under the command
    row's lock) before deciding: the awaited forward command has started (claimed, or
    already answered with its reply still queued), so it cannot be withdrawn and the
    cancel waits for its outcome; False when it can still be withdrawn (or there is none).
    ``awaited_elsewhere``: the command was relayed to another cluster, where it may or may
    not have started; the cancel waits for its outcome and asks its cluster to withdraw
    it (which answers CANCELED if it had not started)."""

    reason: str
    awaited_started: bool = False
    awaited_elsewhere: bool = False


@dataclass(frozen=True)
class StepRetryRequested:
    """An operator re-sends the awaited step of a process that needs one (a new command;
    the old one is withdrawn if it has not started)."""

    operator: str | None = None


@dataclass(frozen=True)
class StepCompletionRequested:
    """An operator completes the awaited step with ``result``, as if its command had
    replied SUCCESS with that data (the command is withdrawn if it has not started)."""

    result: JsonObject
    operator: str | None = None


OperatorRequest = StepRetryRequested | StepCompletionRequested
IncomingMessage = (
    ReplyReceived | TimerFired | CancelRequested | StepRetryRequested | StepCompletionRequested
)


def timer_message(domain: str, process_id: UUID, command_id: UUID, fire_at: datetime) -> JsonObject:
    """The wire form of a step timer (a delayed message on the process reply queue)."""
    return {
        "kind": TIMER_MESSAGE_KIND,
        "domain": domain,
        "process_id": str(process_id),
        "correlation_id": str(process_id),
        "command_id": str(command_id),
        "fire_at": fire_at.isoformat(),
    }


def parse_timer_message(message: JsonObject) -> tuple[str, UUID, TimerFired] | None:
    """``(domain, process_id, TimerFired)`` for a timer message, None for anything else.
    Raises ``ValueError`` for a message that claims to be a timer but is malformed."""
    if not isinstance(message, dict) or message.get("kind") != TIMER_MESSAGE_KIND:
        return None
    try:
        domain = validate_name(message["domain"])
        process_id = UUID(str(message["process_id"]))
        command_id = UUID(str(message["command_id"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"malformed process timer message: {exc!r}") from exc
    return domain, process_id, TimerFired(command_id)


# -- the decision -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingCommand:
    """A command to send, with ``correlation_id`` = process id and ``reply_to`` = the
    manager's reply queue (added by the engine). ``data_json`` is ``data`` encoded (the
    validation encodes it anyway; the engine hands it on so it is not encoded again)."""

    domain: str
    command_type: str
    command_id: UUID
    data: JsonObject
    step_name: str
    kind: AuditEntryKind
    data_json: str | None = None
    #: Seconds before the command becomes visible to workers (0: at once).
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class TimerRequest:
    """Schedule ``TimerFired(command_id)`` after ``delay_seconds`` (at ``fire_at``)."""

    command_id: UUID
    delay_seconds: float
    fire_at: datetime


class Ignored(StrEnum):
    """Why a message changes nothing (typed; the text of ``Decision.ignored`` is for
    people and the message log)."""

    FINISHED = "finished"  # the process is terminal
    OTHER_PROCESS = "other_process"  # the reply correlates to another process
    NOT_SENT = "not_sent"  # the command was not sent by this process
    DUPLICATE = "duplicate"  # the command was already answered
    STALE = "stale"  # the process no longer awaits the command
    TIMER_NOT_AWAITED = "timer_not_awaited"
    TIMER_ANSWERED = "timer_answered"
    TIMER_WAITING_FOR_OPERATOR = "timer_waiting_for_operator"
    TIMER_WHILE_CANCELING = "timer_while_canceling"  # the cancel waits for the reply
    DEADLINE_NOT_APPLICABLE = "deadline_not_applicable"  # compensating, or between steps
    ALREADY_COMPENSATING = "already_compensating"
    NOT_WAITING_FOR_OPERATOR = "not_waiting_for_operator"  # a step action out of place
    #: decided by the engine, before the kernel: no such process, no correlation id
    UNKNOWN_PROCESS = "unknown_process"
    NO_CORRELATION = "no_correlation"


@dataclass(frozen=True)
class Decision(Generic[S, T]):
    """What to write. ``process`` is the new row (None: the process is unchanged).
    ``ignored`` (a reason) means the message changes nothing and goes to the message log;
    ``ignored_because`` says why, typed."""

    process: ProcessMetadata[S, T] | None
    commands: tuple[OutgoingCommand, ...] = ()
    audit_inserts: tuple[ProcessAuditEntry, ...] = ()
    audit_updates: tuple[ProcessAuditEntry, ...] = ()
    timers: tuple[TimerRequest, ...] = ()
    #: Commands the process no longer awaits: the engine cancels each one that has not
    #: started (PENDING or in the troubleshooting queue) so that it never runs.
    withdrawals: tuple[UUID, ...] = ()
    ignored: str | None = None
    ignored_because: Ignored | None = None

    @classmethod
    def ignore(cls, because: Ignored, reason: str) -> Decision[S, T]:
        return cls(process=None, ignored=reason, ignored_because=because)


_NAMESPACE_BYTES = PROCESS_COMMAND_NAMESPACE.bytes


def deadline_id_for(domain: str, process_id: UUID) -> UUID:
    """The id a process's deadline timer carries (in place of a command id)."""
    name = f"{domain}/{process_id}/deadline".encode()
    digest = sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    return UUID(bytes=digest[:16], version=5)


def command_id_for(domain: str, process_id: UUID, seq: int) -> UUID:
    """The id of the ``seq``-th command (1-based) of a process: deterministic, unique.

    ``uuid5(PROCESS_COMMAND_NAMESPACE, f"{domain}/{process_id}/{seq}")``, computed as
    ``uuid.uuid5`` does but without converting the namespace to bytes on every call."""
    name = f"{domain}/{process_id}/{seq}".encode()
    digest = sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    return UUID(bytes=digest[:16], version=5)
