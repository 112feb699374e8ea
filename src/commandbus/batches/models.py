"""Value objects of batches: a group of commands (or of processes) of one domain whose
outcomes are counted together, with a completion notice when the last one ends.

Plain data, no I/O. The counting rules themselves are in ``commandbus.batches.counting``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from commandbus.models import JsonObject, SendResult

__all__ = [
    "BatchCommand",
    "BatchKind",
    "BatchMetadata",
    "BatchNotice",
    "BatchQuery",
    "BatchStatus",
    "CreateBatchResult",
    "NewBatch",
    "ProcessBatch",
    "ReceivedBatchNotice",
]


class BatchStatus(StrEnum):
    """PENDING until a member starts, IN_PROGRESS until every member has ended (and the
    batch is closed), then COMPLETED, or COMPLETED_WITH_FAILURES when a member failed or
    was canceled."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_FAILURES = "COMPLETED_WITH_FAILURES"

    @property
    def is_finished(self) -> bool:
        return self in (BatchStatus.COMPLETED, BatchStatus.COMPLETED_WITH_FAILURES)


class BatchKind(StrEnum):
    """What the members of a batch are."""

    COMMANDS = "COMMANDS"
    PROCESSES = "PROCESSES"


@dataclass(frozen=True)
class BatchCommand:
    """One command of ``CommandBus.create_batch``; it is sent in the batch's domain.
    The fields mean what they mean for ``CommandBus.send``."""

    command_type: str
    data: JsonObject
    command_id: UUID | str | None = None
    correlation_id: UUID | str | None = None
    reply_to: str | None = None
    max_attempts: int | None = None
    delay: float | None = None


@dataclass(frozen=True)
class ProcessBatch:
    """Start processes as one batch: ``manager.start_many(items, batch=ProcessBatch(...))``.
    Its counters count the processes' outcomes as a command batch counts commands'
    (COMPLETED; FAILED or COMPENSATED: failed; CANCELED; waiting for an operator: in the
    troubleshooting queue). ``batch_id`` is drawn here unless given, so the caller knows
    it before the start."""

    name: str | None = None
    reply_to: str | None = None
    batch_id: UUID | str = field(default_factory=uuid4)


@dataclass(frozen=True)
class NewBatch:
    """A validated batch row to insert (``BatchStore.create``)."""

    domain: str
    batch_id: UUID
    kind: BatchKind
    name: str | None
    reply_to: str | None
    is_open: bool
    total: int


@dataclass(frozen=True)
class BatchMetadata:
    """A batch and its counters. Each member is counted once, in the counter of its
    current status: ``completed``, ``failed`` (a business rule refused it; for a process:
    FAILED or COMPENSATED), ``canceled``, ``in_troubleshooting`` (waiting for an
    operator, who may still retry it), or none of them yet (``pending``)."""

    domain: str
    batch_id: UUID
    kind: BatchKind
    name: str | None
    status: BatchStatus
    is_open: bool
    reply_to: str | None
    total: int
    completed: int
    failed: int
    canceled: int
    in_troubleshooting: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None

    @property
    def pending(self) -> int:
        """Members that have not ended and are not waiting for an operator."""
        return self.total - self.completed - self.failed - self.canceled - self.in_troubleshooting


@dataclass(frozen=True)
class CreateBatchResult:
    """What ``CommandBus.create_batch`` sent: the batch's id and each command's result,
    in the order given."""

    batch_id: UUID
    results: list[SendResult]

    @property
    def total(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class BatchQuery:
    domain: str | None = None
    status: BatchStatus | None = None
    kind: BatchKind | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class BatchNotice:
    """The completion notice of a batch, written to its ``reply_to`` queue by the
    transaction that finished it (exactly once).

    Wire format (JSON object)::

        {"batch_id": "...", "domain": "...", "kind": "COMMANDS", "name": null,
         "status": "COMPLETED", "total": 3, "completed": 3, "failed": 0,
         "canceled": 0, "in_troubleshooting": 0}
    """

    batch_id: UUID
    domain: str
    kind: BatchKind
    name: str | None
    status: BatchStatus
    total: int
    completed: int
    failed: int
    canceled: int
    in_troubleshooting: int

    def to_message(self) -> JsonObject:
        return {
            "batch_id": str(self.batch_id),
            "domain": self.domain,
            "kind": self.kind.value,
            "name": self.name,
            "status": self.status.value,
            "total": self.total,
            "completed": self.completed,
            "failed": self.failed,
            "canceled": self.canceled,
            "in_troubleshooting": self.in_troubleshooting,
        }

    @classmethod
    def from_message(cls, message: Any) -> BatchNotice:
        """Parse a notice; ``ValueError`` saying why for anything else (a command reply
        on the same queue, say)."""
        if not isinstance(message, dict):
            raise ValueError(f"not a batch notice: a JSON object expected, got {message!r}")
        counts: dict[str, int] = {}
        for key in ("total", "completed", "failed", "canceled", "in_troubleshooting"):
            value = message.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"not a batch notice: {key!r} must be a count, got {value!r}")
            counts[key] = value
        name = message.get("name")
        if not isinstance(name, str | None) or not isinstance(message.get("domain"), str):
            raise ValueError("not a batch notice: 'domain' and 'name' must be strings")
        try:
            return cls(
                batch_id=UUID(str(message["batch_id"])),
                domain=message["domain"],
                kind=BatchKind(message["kind"]),
                name=name,
                status=BatchStatus(message["status"]),
                **counts,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not a batch notice: {exc!r}") from exc


@dataclass(frozen=True)
class ReceivedBatchNotice:
    """A notice read from a queue; acknowledge it with ``CommandBus.ack_reply``."""

    msg_id: int
    notice: BatchNotice
    read_count: int = 1
