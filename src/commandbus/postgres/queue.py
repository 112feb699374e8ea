"""``PostgresMessageQueue``: named queues in the ``commandbus.queue_message`` table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commandbus.models import JsonObject, QueueMessage
from commandbus.postgres.connections import statement_conn
from commandbus.postgres.queries import Queries

Q = Queries()


def dumps(value: object) -> str:
    """Compact JSON for a jsonb parameter (NaN is rejected, as PostgreSQL would)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class PostgresMessageQueue:
    """PGMQ-like queues: visibility timeouts, read counts, ``FOR UPDATE SKIP LOCKED``.

    Every method is one SQL statement (one round trip), whatever the number of messages.
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def enqueue(
        self,
        queue: str,
        messages: Sequence[JsonObject],
        delay: float = 0.0,
        *,
        conn: Any | None = None,
    ) -> list[int]:
        if not messages:
            return []
        params = {
            "queue": queue,
            "messages": [dumps(m) for m in messages],
            "delay": float(delay),
        }
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.enqueue, params)
            row = await cur.fetchone()
        assert row is not None
        return list(row[0])

    async def read(
        self,
        queue: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Any | None = None,
    ) -> list[QueueMessage]:
        if limit <= 0:
            return []
        params = {"queue": queue, "limit": limit, "vt": float(visibility_timeout)}
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.read, params)
            rows = await cur.fetchall()
        return [
            QueueMessage(
                msg_id=r["msg_id"],
                queue_name=r["queue_name"],
                message=r["message"],
                read_count=r["read_ct"],
                enqueued_at=r["enqueued_at"],
                visible_at=r["vt"],
            )
            for r in rows
        ]

    async def delete(self, queue: str, msg_ids: Sequence[int], *, conn: Any | None = None) -> int:
        if not msg_ids:
            return 0
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.delete, {"queue": queue, "msg_ids": list(msg_ids)})
            return int(cur.rowcount)

    async def set_visibility(
        self, queue: str, msg_id: int, seconds: float, *, conn: Any | None = None
    ) -> bool:
        params = {"queue": queue, "msg_id": msg_id, "seconds": float(seconds)}
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.set_visibility, params)
            return bool(cur.rowcount > 0)

    async def depth(self, queue: str, *, conn: Any | None = None) -> int:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.depth, {"queue": queue})
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])
