"""The port of batch storage, and the backend that has one.

``BatchBackend`` is a ``Backend`` with a ``batches`` store; ``PostgresBackend`` and
``InMemoryBackend`` are both. The store writes batch rows; the counters are moved by the
command store (and the process repository) in the statements that change a member's
status, so a counter can never lag behind the status it counts. Arguments arrive
validated (``commandbus.batches.requests``); the store only stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from uuid import UUID

from commandbus.batches.models import BatchKind, BatchMetadata, BatchQuery, NewBatch
from commandbus.ports import Backend, Conn

__all__ = ["BatchBackend", "BatchStore", "MemberChange"]

#: A member of batch ``(domain, batch_id)`` went from one status to another (None: none).
MemberChange = tuple[str, UUID, str | None, str | None]


class BatchStore(Protocol):
    """Batch rows: created, grown while open, closed, read."""

    async def create(self, batch: NewBatch, *, conn: Conn) -> None:
        """Insert the batch row (status PENDING, counters 0, ``total`` members). Raises
        ``DuplicateBatchError`` when ``(domain, batch_id)`` exists (also when a concurrent
        creator races: like a unique index, the second waits for the first)."""
        ...

    async def add_members(
        self, domain: str, batch_id: UUID, kind: BatchKind, count: int, *, conn: Conn
    ) -> bool:
        """Add ``count`` to the total of the open batch of ``kind``, holding its row lock
        until ``conn`` ends (the members are inserted next in the same transaction, and no
        settlement of the batch can finish it meanwhile). False, with nothing changed,
        when there is no such open batch of that kind (the caller reads it to say why)."""
        ...

    async def close(
        self, domain: str, batch_id: UUID, *, conn: Conn | None = None
    ) -> BatchMetadata | None:
        """Close the batch to new members. If every member has ended it finishes now, in
        this transaction, with its completion notice. Closing a closed batch changes
        nothing. Returns the batch after the change, None when there is no such batch."""
        ...

    async def count_changes(self, changes: Sequence[MemberChange], *, conn: Conn) -> int:
        """Count status changes of members made outside the stores' own statements —
        a new member's first status (from None) — exactly as those statements count
        theirs. Returns how many batches this finished."""
        ...

    async def get(
        self, domain: str, batch_id: UUID, *, conn: Conn | None = None
    ) -> BatchMetadata | None: ...

    async def query(self, query: BatchQuery, *, conn: Conn | None = None) -> list[BatchMetadata]:
        """Batches matching the filters, newest first (``created_at`` descending, then
        ``batch_id``)."""
        ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that stores batches."""

    batches: BatchStore
