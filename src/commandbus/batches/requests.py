"""Checking what a caller asks of batches, before anything is written (pure).

The bus (and the sync API over it) validates with these functions, then hands the
results to the batch store and the command store in one transaction; a call that fails
here writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

from commandbus.batches.models import BatchCommand, BatchKind, BatchMetadata, NewBatch
from commandbus.errors import (
    BatchNotFoundError,
    CommandBusError,
    InvalidOperationError,
    ValidationError,
)
from commandbus.models import SendRequest
from commandbus.validation import (
    validate_name,
    validate_optional_text,
    validate_queue_name,
    validate_uuid,
)

__all__ = [
    "MAX_BATCH_MEMBERS",
    "MAX_BATCH_NAME_CHARS",
    "batch_commands",
    "batch_requests",
    "member_counts",
    "new_batch",
    "not_added_error",
]

MAX_BATCH_NAME_CHARS = 200
#: The most members one call creates (a batch may grow beyond it while open).
MAX_BATCH_MEMBERS = 100_000


def new_batch(
    domain: object,
    batch_id: object,
    kind: BatchKind,
    name: object,
    reply_to: object,
    keep_open: object,
    members: int,
) -> NewBatch:
    """The row of a batch about to be created with ``members`` members."""
    if not isinstance(keep_open, bool):
        raise ValidationError(f"keep_open must be True or False, got {keep_open!r}")
    if members > MAX_BATCH_MEMBERS:
        raise ValidationError(
            f"{members} members in one batch creation; at most {MAX_BATCH_MEMBERS} "
            "(create it with keep_open=True and add the rest with send(batch_id=...))"
        )
    if members == 0 and not keep_open:
        raise ValidationError(
            "a batch needs at least one member, or keep_open=True to add them later"
        )
    return NewBatch(
        domain=validate_name(domain),
        batch_id=uuid4() if batch_id is None else validate_uuid(batch_id, "batch_id"),
        kind=kind,
        name=validate_optional_text(name, "batch name", MAX_BATCH_NAME_CHARS),
        reply_to=None if reply_to is None else validate_queue_name(reply_to),
        is_open=keep_open,
        total=members,
    )


def batch_commands(commands: object) -> list[BatchCommand]:
    """``commands`` as a list, if it is a sequence of ``BatchCommand``."""
    if not isinstance(commands, Sequence) or isinstance(commands, str | bytes):
        raise ValidationError(
            f"commands must be a list of BatchCommand, got {type(commands).__name__}"
        )
    for index, command in enumerate(commands):
        if not isinstance(command, BatchCommand):
            raise ValidationError(
                f"commands[{index}] must be a BatchCommand, got {type(command).__name__}"
            )
    return list(commands)


def batch_requests(batch: NewBatch, commands: Sequence[BatchCommand]) -> list[SendRequest]:
    """The send requests of a batch's commands (``batch_commands``): in the batch's
    domain, joining it. Each is validated afterwards like any send
    (``CommandBus.send_batch``)."""
    requests: list[SendRequest] = []
    for command in commands:
        requests.append(
            SendRequest(
                domain=batch.domain,
                command_type=command.command_type,
                # validated by the bus, as every send
                command_id=command.command_id or uuid4(),  # type: ignore[arg-type]
                data=command.data,
                correlation_id=command.correlation_id,  # type: ignore[arg-type]
                reply_to=command.reply_to,
                max_attempts=command.max_attempts,
                delay=command.delay,
                batch_id=batch.batch_id,
            )
        )
    return requests


def member_counts(requests: Sequence[SendRequest]) -> list[tuple[str, UUID, int]]:
    """How many of ``requests`` join each batch, in key order (the order batch rows are
    locked in everywhere, so two senders cannot deadlock)."""
    counts: dict[tuple[UUID, str], int] = {}
    for request in requests:
        if request.batch_id is not None:
            key = (request.batch_id, request.domain)
            counts[key] = counts.get(key, 0) + 1
    return [(domain, batch_id, n) for (batch_id, domain), n in sorted(counts.items())]


def not_added_error(
    domain: str, batch_id: UUID, kind: BatchKind, batch: BatchMetadata | None
) -> CommandBusError:
    """Why members could not join ``batch`` (as read after the refusal)."""
    if batch is None:
        return BatchNotFoundError(domain, batch_id)
    if batch.kind is not kind:
        return InvalidOperationError(
            f"batch {batch_id} is a batch of {batch.kind.value.lower()}, not of "
            f"{kind.value.lower()}"
        )
    if not batch.is_open:
        return InvalidOperationError(
            f"batch {batch_id} is closed ({batch.status.value}): only a batch created with "
            "keep_open=True and not closed yet takes new members"
        )
    return InvalidOperationError(
        f"batch {batch_id} changed while members were added; nothing was sent, try again"
    )
