"""Value objects of the command bus: commands, replies, metadata, audit events.

Everything here is plain data with no I/O, so it can be shared by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from commandbus.errors import InvalidOperationError

JsonObject = dict[str, Any]


class CommandStatus(StrEnum):
    """Lifecycle status of a command (stored as its string value)."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    IN_TROUBLESHOOTING_QUEUE = "IN_TROUBLESHOOTING_QUEUE"

    @property
    def is_terminal(self) -> bool:
        return self in (CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.CANCELED)


class ReplyOutcome(StrEnum):
    """Outcome carried by a reply message.

    ``IN_TROUBLESHOOTING_QUEUE`` is a notice, not a final answer: the command waits for an
    operator, who later retries it (a new reply follows), cancels it (``CANCELED``) or
    completes it (``SUCCESS``).
    """

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    IN_TROUBLESHOOTING_QUEUE = "IN_TROUBLESHOOTING_QUEUE"


class AuditEventType(StrEnum):
    SENT = "SENT"
    RECEIVED = "RECEIVED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    RETRY_EXHAUSTED = "RETRY_EXHAUSTED"
    MOVED_TO_TSQ = "MOVED_TO_TSQ"
    BUSINESS_RULE_FAILED = "BUSINESS_RULE_FAILED"
    OPERATOR_RETRY = "OPERATOR_RETRY"
    OPERATOR_CANCEL = "OPERATOR_CANCEL"
    OPERATOR_COMPLETE = "OPERATOR_COMPLETE"
    #: A delivery's handler ran past its lease (visibility timeout); its outcome was
    #: discarded because the command had been delivered again meanwhile.
    LEASE_EXPIRED = "LEASE_EXPIRED"
    #: Canceled before it started because the process that sent it no longer awaits it
    #: (the process was canceled, or the step timed out and was re-sent or given up).
    WITHDRAWN = "WITHDRAWN"


@dataclass(frozen=True)
class Command:
    """A command as a handler receives it."""

    domain: str
    command_type: str
    command_id: UUID
    data: JsonObject
    correlation_id: UUID | None = None
    reply_to: str | None = None
    created_at: datetime | None = None
    #: What the sender attached (W3C trace context, ``causation_id``); None: nothing.
    headers: JsonObject | None = field(default=None, compare=False)

    @property
    def causation_id(self) -> str | None:
        """The id of the message that caused this command (set for the commands a
        process sends with telemetry on: the command whose reply the process acted on)."""
        value = (self.headers or {}).get("causation_id")
        return value if isinstance(value, str) else None


class CommandLike(Protocol):
    """What a reply needs of the command it answers."""

    @property
    def command_id(self) -> UUID: ...

    @property
    def correlation_id(self) -> UUID | None: ...

    @property
    def domain(self) -> str: ...

    @property
    def command_type(self) -> str: ...


@dataclass(frozen=True)
class Reply:
    """A reply to a command, as sent to the command's ``reply_to`` queue.

    Wire format (JSON object; see ``docs/reply.schema.json``)::

        {"command_id": "...", "correlation_id": "...", "domain": "...",
         "command_type": "...", "outcome": "SUCCESS", "result": {...},
         "error_code": null, "error_message": null}
    """

    command_id: UUID
    correlation_id: UUID | None
    outcome: ReplyOutcome
    data: JsonObject | None = None
    error_code: str | None = None
    error_message: str | None = None
    domain: str | None = None
    command_type: str | None = None
    #: Trace context of the handler that answered (with telemetry on); None: none.
    headers: JsonObject | None = field(default=None, compare=False)

    @property
    def result(self) -> JsonObject:
        """A SUCCESS reply's result, typed ``JsonObject`` (``{}`` when the handler returned
        nothing), so reading it needs no ``None`` check. Raises ``InvalidOperationError``
        for any other outcome, which carries an error instead: check ``outcome`` first, or
        read ``data``."""
        if self.outcome is not ReplyOutcome.SUCCESS:
            raise InvalidOperationError(
                f"a {self.outcome.value} reply has no result "
                f"(error {self.error_code}: {self.error_message})"
            )
        return self.data if self.data is not None else {}

    @classmethod
    def answering(
        cls,
        command: CommandLike,
        outcome: ReplyOutcome,
        data: JsonObject | None = None,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        headers: JsonObject | None = None,
    ) -> Reply:
        """The reply to ``command`` (a ``Command`` or its ``CommandMetadata``): correlated
        like it, naming its domain and type. A SUCCESS reply carries ``data`` and no error;
        any other outcome carries the error and no data."""
        success = outcome is ReplyOutcome.SUCCESS
        return cls(
            command_id=command.command_id,
            correlation_id=command.correlation_id,
            outcome=outcome,
            data=data if success else None,
            error_code=None if success else error_code,
            error_message=None if success else error_message,
            domain=command.domain,
            command_type=command.command_type,
            headers=headers,
        )

    def to_message(self) -> JsonObject:
        message: JsonObject = {
            "command_id": str(self.command_id),
            "correlation_id": str(self.correlation_id) if self.correlation_id else None,
            "domain": self.domain,
            "command_type": self.command_type,
            "outcome": self.outcome.value,
            "result": self.data,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }
        if self.headers is not None:
            message["headers"] = self.headers
        return message

    @classmethod
    def from_message(cls, message: JsonObject) -> Reply:
        """Parse a reply message; raises ``ValueError`` with the reason if malformed
        (see ``docs/reply.schema.json``)."""
        if not isinstance(message, dict):
            raise ValueError(
                f"malformed reply message: a JSON object expected, got {type(message).__name__}"
            )
        if not isinstance(message.get("command_id"), str):
            raise ValueError("malformed reply message: 'command_id' must be a UUID string")
        for key in ("correlation_id", "error_code", "error_message", "domain", "command_type"):
            if not isinstance(message.get(key), str | None):
                raise ValueError(f"malformed reply message: {key!r} must be a string or null")
        try:
            command_id = UUID(message["command_id"])
            raw_corr = message.get("correlation_id")
            correlation_id = UUID(raw_corr) if raw_corr else None
            outcome = _OUTCOMES.get(message["outcome"]) or ReplyOutcome(message["outcome"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed reply message: {exc!r}") from exc
        result = message.get("result")
        if result is not None and not isinstance(result, dict):
            raise ValueError("malformed reply message: 'result' must be a JSON object or null")
        headers = message.get("headers")
        return cls(
            command_id=command_id,
            correlation_id=correlation_id,
            outcome=outcome,
            data=result,
            error_code=message.get("error_code"),
            error_message=message.get("error_message"),
            domain=message.get("domain"),
            command_type=message.get("command_type"),
            headers=headers if isinstance(headers, dict) else None,
        )


_OUTCOMES = {o.value: o for o in ReplyOutcome}


@dataclass(frozen=True)
class ReceivedReply:
    """A reply read from a reply queue; acknowledge it with ``CommandBus.ack_reply``."""

    msg_id: int
    reply: Reply
    read_count: int = 1


@dataclass(frozen=True)
class CommandMetadata:
    domain: str
    command_id: UUID
    command_type: str
    status: CommandStatus
    attempts: int
    max_attempts: int
    correlation_id: UUID | None
    reply_to: str | None
    created_at: datetime
    updated_at: datetime
    last_error_type: str | None = None
    last_error_code: str | None = None
    last_error_msg: str | None = None
    msg_id: int | None = None
    batch_id: UUID | None = None


@dataclass(frozen=True)
class AuditEvent:
    domain: str
    command_id: UUID
    event_type: AuditEventType
    timestamp: datetime
    details: JsonObject | None = None


@dataclass(frozen=True)
class TroubleshootingItem:
    domain: str
    command_id: UUID
    command_type: str
    data: JsonObject
    attempts: int
    max_attempts: int
    last_error_type: str | None
    last_error_code: str | None
    last_error_msg: str | None
    correlation_id: UUID | None
    reply_to: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SendRequest:
    """One command to send; the fields mirror ``CommandBus.send``.

    ``encoded_data`` is internal: the JSON text of ``data``, filled in when ``CommandBus``
    validates the request (validation encodes the payload anyway), so that the storage
    adapter does not encode it a second time. Leave it None; the bus overwrites it.
    """

    domain: str
    command_type: str
    command_id: UUID
    data: JsonObject
    correlation_id: UUID | None = None
    reply_to: str | None = None
    max_attempts: int | None = None
    delay: float | None = None
    encoded_data: str | None = field(default=None, repr=False, compare=False)
    #: Stored with the queue message (trace context, causation id): see ``telemetry``.
    headers: JsonObject | None = None
    #: The open batch of the domain this command joins (``CommandBus.send(batch_id=...)``).
    batch_id: UUID | None = None


@dataclass(frozen=True)
class SendResult:
    command_id: UUID
    msg_id: int


@dataclass(frozen=True)
class QueueMessage:
    """A raw message claimed from a queue."""

    msg_id: int
    queue_name: str
    message: JsonObject
    read_count: int
    enqueued_at: datetime
    visible_at: datetime


@dataclass(frozen=True)
class QueueStats:
    """A queue at one moment (dashboards, metrics): its messages, those leased by a
    consumer right now, those scheduled for later, and the oldest one's enqueue time."""

    queue: str
    depth: int
    in_flight: int
    delayed: int
    oldest_enqueued_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float:
        """Seconds the oldest message has waited (0 for an empty queue)."""
        if self.oldest_enqueued_at is None:
            return 0.0
        return max((now - self.oldest_enqueued_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class ClaimedCommand:
    """A command claimed by a worker, with the attempt number this delivery is."""

    msg_id: int
    command: Command
    attempt: int
    max_attempts: int


@dataclass(frozen=True)
class QueuedReply:
    """A reply to enqueue on ``queue`` as part of a settlement."""

    queue: str
    reply: Reply


class SettleAction(StrEnum):
    """What happens to the queue message of a settled command."""

    DELETE = "DELETE"  # done: remove the message
    RETRY = "RETRY"  # keep the message, make it visible again after a delay
    ARCHIVE = "ARCHIVE"  # move the message to the archive (TSQ or business failure)


@dataclass(frozen=True)
class Settlement:
    """Everything one settled delivery writes, decided by the worker core.

    Adapters apply a list of settlements in one transaction, mechanically: they make no
    decisions of their own.
    """

    domain: str
    command_id: UUID
    msg_id: int
    action: SettleAction
    status: CommandStatus
    attempts: int
    audit: tuple[tuple[AuditEventType, JsonObject | None], ...]
    retry_delay: float = 0.0
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    reply: QueuedReply | None = None
    #: For logs and metrics only (adapters ignore them): the command's type, and when it
    #: was sent (send-to-completion latency).
    command_type: str | None = field(default=None, compare=False)
    sent_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CommandQuery:
    status: CommandStatus | None = None
    domain: str | None = None
    command_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 100
    offset: int = 0
    correlation_id: UUID | None = None
    batch_id: UUID | None = None


@dataclass(frozen=True)
class OperatorSettlement:
    """What an operator's action on a TSQ item writes, decided by ``ops.decisions``;
    the adapter applies it (``CommandStore.apply_operator``) under the row lock the caller
    holds, mechanically, as it applies a ``Settlement``."""

    domain: str
    command_id: UUID
    status: CommandStatus
    audit: tuple[tuple[AuditEventType, JsonObject | None], ...]
    #: Put the archived payload back on the command queue with a fresh attempt budget.
    requeue: bool = False
    reply: QueuedReply | None = None


@dataclass(frozen=True)
class PrunedHistory:
    """What a retention run (``commandbus history prune``) deleted: finished commands,
    their audit events and their archived messages."""

    commands: int = 0
    audit_events: int = 0
    archived_messages: int = 0

    def __add__(self, other: PrunedHistory) -> PrunedHistory:
        return PrunedHistory(
            self.commands + other.commands,
            self.audit_events + other.audit_events,
            self.archived_messages + other.archived_messages,
        )
