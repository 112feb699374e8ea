"""The counting rules of batches, as pure functions.

A member of a batch is in at most one counter, chosen by its status (``counter_of``).
When members change status, ``recount`` moves them between counters and says what the
batch's status becomes; a batch finishes once it is closed and every member has ended.
PostgreSQL applies the same rules in SQL (``commandbus.batch_counter``,
``commandbus.batch_status`` and ``commandbus.count_batch_changes`` in
``postgres/sql/009_batches.sql``); the in-memory adapter applies these functions, and one
contract suite holds both to the same results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from commandbus.batches.models import BatchStatus

__all__ = ["COUNTERS", "Counts", "counter_of", "finished_status", "recount"]

#: The counters, by the member statuses they count (commands' and processes' statuses).
COUNTERS: dict[str, str] = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "COMPENSATED": "failed",
    "CANCELED": "canceled",
    "IN_TROUBLESHOOTING_QUEUE": "in_troubleshooting",
    "WAITING_FOR_TSQ": "in_troubleshooting",
    "WAITING_FOR_OPERATOR": "in_troubleshooting",
}


def counter_of(status: str | None) -> str | None:
    """The counter a member in ``status`` is in; None while it has not ended."""
    return None if status is None else COUNTERS.get(status)


@dataclass(frozen=True)
class Counts:
    """A batch's counters and status, before or after a change."""

    status: BatchStatus
    is_open: bool
    total: int
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    in_troubleshooting: int = 0


def finished_status(counts: Counts) -> BatchStatus:
    """The status of a batch with these counts: finished once it is closed and every
    member has ended; a finished batch stays finished."""
    if counts.status.is_finished:
        return counts.status
    ended = counts.completed + counts.failed + counts.canceled
    if not counts.is_open and counts.total > 0 and ended >= counts.total:
        if counts.failed + counts.canceled > 0:
            return BatchStatus.COMPLETED_WITH_FAILURES
        return BatchStatus.COMPLETED
    return counts.status


def recount(counts: Counts, moves: Iterable[tuple[str | None, str | None]]) -> Counts:
    """``counts`` after members moved from one status to another (``(from, to)``; None:
    no status, e.g. nothing changed but the batch is looked at again, as after a close).
    A batch becomes IN_PROGRESS once a member has moved."""
    delta = {"completed": 0, "failed": 0, "canceled": 0, "in_troubleshooting": 0}
    moved = False
    for before, after in moves:
        moved = moved or before != after
        old, new = counter_of(before), counter_of(after)
        if old is not None:
            delta[old] -= 1
        if new is not None:
            delta[new] += 1
    status = counts.status
    if moved and status is BatchStatus.PENDING:
        status = BatchStatus.IN_PROGRESS
    next_counts = Counts(
        status=status,
        is_open=counts.is_open,
        total=counts.total,
        completed=counts.completed + delta["completed"],
        failed=counts.failed + delta["failed"],
        canceled=counts.canceled + delta["canceled"],
        in_troubleshooting=counts.in_troubleshooting + delta["in_troubleshooting"],
    )
    return Counts(
        status=finished_status(next_counts),
        is_open=next_counts.is_open,
        total=next_counts.total,
        completed=next_counts.completed,
        failed=next_counts.failed,
        canceled=next_counts.canceled,
        in_troubleshooting=next_counts.in_troubleshooting,
    )
