"""Retention on PostgreSQL: ``prune_finished`` in batches (see ``sql/history_queries.sql``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.models import PrunedHistory
from commandbus.postgres.connections import statement_conn
from commandbus.postgres.queries import Queries

Q = Queries("history_queries.sql")
logger = logging.getLogger("commandbus.postgres")

#: Weeks of audit partitions kept ready ahead (see 011_audit_partitions.sql).
WEEKS_AHEAD = 8

#: Before any row: where the first batch starts.
_BEGINNING = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


class HistoryPruning:
    """``CommandHistory`` of ``PostgresCommandStore``: one statement (one transaction) per
    batch; each batch starts at the ``created_at`` the previous one reached. Then the
    audit trail's weekly partitions are kept: the coming weeks created, the weeks before
    the cutoff that are now empty dropped."""

    _pool: AsyncConnectionPool[Any]

    async def prune_finished(
        self,
        finished_before: datetime,
        *,
        domain: str | None = None,
        batch_size: int = 5_000,
        on_batch: Callable[[PrunedHistory], None] | None = None,
    ) -> PrunedHistory:
        total = PrunedHistory()
        reached = _BEGINNING
        while True:
            params = {
                "cutoff": finished_before,
                "after": reached,
                "domain": domain,
                "limit": batch_size,
            }
            async with statement_conn(self._pool, None) as conn:
                cur = await conn.execute(Q.prune_finished, params)
                row = await cur.fetchone()
            assert row is not None
            batch = PrunedHistory(row[0], row[1], row[2])
            total += batch
            if on_batch is not None:
                on_batch(batch)
            if batch.commands < batch_size or row[3] is None:
                break
            reached = row[3]
        params = {"cutoff": finished_before, "weeks_ahead": WEEKS_AHEAD}
        async with statement_conn(self._pool, None) as conn:
            cur = await conn.execute(Q.maintain_audit_partitions, params)
            kept = await cur.fetchone()
        assert kept is not None
        logger.info(
            "audit partitions: %d emptied ones dropped, %d of the coming weeks created",
            kept[0],
            kept[1],
        )
        return total
