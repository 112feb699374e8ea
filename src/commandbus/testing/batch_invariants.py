"""The invariants of batches, checked after a simulated (or any) run.

For every batch: its counters equal a recount of its members' current statuses (each
member in exactly the counter of its status, ``commandbus.batches.counting``); it is
finished exactly when it is closed and every member has ended; and its ``reply_to``
queue received exactly one completion notice for it if it finished (none otherwise),
carrying the final counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from uuid import UUID

from commandbus.batches.counting import counter_of
from commandbus.batches.models import BatchMetadata, BatchNotice, BatchStatus
from commandbus.testing.invariants import InvariantViolation

__all__ = ["check_batches", "expected_counts"]


def expected_counts(member_statuses: Sequence[str]) -> dict[str, int]:
    """The counters of a batch whose members are in these statuses."""
    counted = Counter(counter_of(status) for status in member_statuses)
    return {
        "total": len(member_statuses),
        "completed": counted["completed"],
        "failed": counted["failed"],
        "canceled": counted["canceled"],
        "in_troubleshooting": counted["in_troubleshooting"],
    }


def _counts(batch: BatchMetadata | BatchNotice) -> dict[str, int]:
    return {
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "canceled": batch.canceled,
        "in_troubleshooting": batch.in_troubleshooting,
    }


def check_batches(
    batches: Sequence[BatchMetadata],
    member_statuses: Mapping[UUID, Sequence[str]],
    notices: Sequence[BatchNotice],
) -> list[InvariantViolation]:
    """Violations of the batch invariants (see the module docstring); ``notices`` are all
    the completion notices the batches' queues received."""
    found: list[InvariantViolation] = []

    def violation(batch: BatchMetadata, detail: str) -> None:
        found.append(
            InvariantViolation(None, "batch_counters", f"batch {batch.batch_id}: {detail}")
        )

    by_batch: dict[UUID, list[BatchNotice]] = {}
    for notice in notices:
        by_batch.setdefault(notice.batch_id, []).append(notice)
    for batch in batches:
        statuses = member_statuses.get(batch.batch_id, [])
        expected = expected_counts(statuses)
        if _counts(batch) != expected:
            violation(batch, f"counters {_counts(batch)}, its members say {expected}")
        ended = expected["completed"] + expected["failed"] + expected["canceled"]
        should_finish = not batch.is_open and expected["total"] > 0 and ended == expected["total"]
        if batch.status.is_finished != should_finish:
            violation(batch, f"is {batch.status.value} with members {expected}")
        elif should_finish:
            failures = expected["failed"] + expected["canceled"]
            status = BatchStatus.COMPLETED_WITH_FAILURES if failures else BatchStatus.COMPLETED
            if batch.status is not status:
                violation(batch, f"is {batch.status.value}, expected {status.value}")
        received = by_batch.get(batch.batch_id, [])
        wanted = 1 if batch.status.is_finished and batch.reply_to is not None else 0
        if len(received) != wanted:
            violation(batch, f"{len(received)} completion notices, expected {wanted}")
        elif received and _counts(received[0]) != _counts(batch):
            violation(batch, f"notice counts {_counts(received[0])} != {_counts(batch)}")
    return found
