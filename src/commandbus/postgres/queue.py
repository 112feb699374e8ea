"""``PostgresMessageQueue``: named queues in the ``commandbus.queue_message`` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.models import JsonObject, QueueMessage, QueueStats
from commandbus.postgres.connections import fast_cursor, statement_conn
from commandbus.postgres.queries import Queries
from commandbus.validation import json_text

Q = Queries()


def dumps(value: object) -> str:
    """Compact JSON for a jsonb parameter (NaN is rejected, as PostgreSQL would)."""
    return json_text(value)


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
        params = {
            "queue": queue,
            "limit": limit,
            "vt": float(visibility_timeout),
            "relaxed": conn is None,  # its own transaction: see the read query
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.read, params)
            rows = await cur.fetchall()
        # Columns: msg_id, queue_name, message, read_ct, enqueued_at, vt.
        return [
            QueueMessage(
                msg_id=r[0],
                queue_name=r[1],
                message=r[2],
                read_count=r[3],
                enqueued_at=r[4],
                visible_at=r[5],
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

    async def release(self, queue: str, msg_ids: Sequence[int], *, conn: Any | None = None) -> int:
        if not msg_ids:
            return 0
        params = {"queue": queue, "msg_ids": list(msg_ids)}
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.release, params)
            return int(cur.rowcount)

    async def depth(self, queue: str, *, conn: Any | None = None) -> int:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.depth, {"queue": queue})
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def stats(self, queue: str, *, conn: Any | None = None) -> QueueStats:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.queue_stats, {"queue": queue})
            row = await cur.fetchone()
        assert row is not None
        return QueueStats(
            queue=queue,
            depth=int(row[0]),
            in_flight=int(row[1]),
            delayed=int(row[2]),
            oldest_enqueued_at=row[3],
        )
