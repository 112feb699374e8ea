"""``PostgresBatchStore``: batch rows in ``commandbus.batch`` (see ``sql/batch_queries.sql``).

The counters are not written here: the statements that change a member's status move
them (``count_batch_changes``, ``sql/009_batches.sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commandbus.batches.models import (
    BatchKind,
    BatchMetadata,
    BatchQuery,
    BatchStatus,
    NewBatch,
)
from commandbus.batches.ports import MemberChange
from commandbus.errors import DuplicateBatchError, StorageError
from commandbus.postgres.connections import statement_conn, transaction_conn, violates_unique
from commandbus.postgres.queries import Queries

__all__ = ["PostgresBatchStore", "batch_metadata"]

Q = Queries("batch_queries.sql")


def batch_metadata(row: dict[str, Any]) -> BatchMetadata:
    """A ``commandbus.batch`` row (``SELECT *``) as ``BatchMetadata``."""
    return BatchMetadata(
        domain=row["domain"],
        batch_id=row["batch_id"],
        kind=BatchKind(row["kind"]),
        name=row["name"],
        status=BatchStatus(row["status"]),
        is_open=row["is_open"],
        reply_to=row["reply_to"],
        total=row["total_count"],
        completed=row["completed_count"],
        failed=row["failed_count"],
        canceled=row["canceled_count"],
        in_troubleshooting=row["in_troubleshooting_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
    )


class PostgresBatchStore:
    """``BatchStore`` on PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def create(self, batch: NewBatch, *, conn: Any) -> None:
        params = {
            "domain": batch.domain,
            "batch_id": batch.batch_id,
            "kind": batch.kind.value,
            "name": batch.name,
            "reply_to": batch.reply_to,
            "is_open": batch.is_open,
            "total": batch.total,
        }
        try:
            # A savepoint: a duplicate undoes this insert only, the caller's transaction
            # stays usable.
            async with transaction_conn(self._pool, conn) as c:
                await c.execute(Q.create_batch, params)
        except StorageError as exc:
            if violates_unique(exc, "batch_pkey"):
                raise DuplicateBatchError(batch.domain, batch.batch_id) from None
            raise

    async def add_members(
        self, domain: str, batch_id: UUID, kind: BatchKind, count: int, *, conn: Any
    ) -> bool:
        params = {"domain": domain, "batch_id": batch_id, "kind": kind.value, "count": count}
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.add_batch_members, params)
            added: bool = cur.rowcount == 1
        return added

    async def close(
        self, domain: str, batch_id: UUID, *, conn: Any | None = None
    ) -> BatchMetadata | None:
        params = {"domain": domain, "batch_id": batch_id}
        async with transaction_conn(self._pool, conn) as c:
            cur = await c.execute(Q.close_batch, params)
            if cur.rowcount == 1:
                await c.execute(Q.recount_batch, params)
            return await self.get(domain, batch_id, conn=c)

    async def count_changes(self, changes: Sequence[MemberChange], *, conn: Any) -> int:
        if not changes:
            return 0
        params = {
            "domains": [c[0] for c in changes],
            "batch_ids": [c[1] for c in changes],
            "from_statuses": [c[2] for c in changes],
            "to_statuses": [c[3] for c in changes],
        }
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.count_batch_changes, params)
            row = await cur.fetchone()
        finished: int = row[0] if row is not None else 0
        return finished

    async def get(
        self, domain: str, batch_id: UUID, *, conn: Any | None = None
    ) -> BatchMetadata | None:
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.get_batch, {"domain": domain, "batch_id": batch_id})
            row = await cur.fetchone()
        return None if row is None else batch_metadata(row)

    async def query(self, query: BatchQuery, *, conn: Any | None = None) -> list[BatchMetadata]:
        params = {
            "domain": query.domain,
            "status": query.status.value if query.status is not None else None,
            "kind": query.kind.value if query.kind is not None else None,
            "limit": query.limit,
            "offset": query.offset,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.query_batches, params)
            rows = await cur.fetchall()
        return [batch_metadata(r) for r in rows]
