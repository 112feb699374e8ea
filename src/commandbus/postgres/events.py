"""``PostgresEventStorage`` and ``PostgresSubscriptionStorage``: the event store ports on
the ``commandbus.event`` / ``subscription`` tables (``sql/007_events.sql``).

Each method is one statement (one round trip). Reading all streams follows commit order
and never passes a transaction that is still open (see ``read_all`` in
``sql/event_queries.sql``): the cost is that an event becomes visible to subscriptions
only once every transaction that started before it has ended, so a transaction left open
holds subscriptions back (not event appends, nor readers of one stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.errors import DuplicateEventError, StorageError, WrongExpectedVersionError
from commandbus.events.models import (
    AppendResult,
    Checkpoint,
    ParkedEvent,
    RecordedEvent,
    SubscriptionInfo,
    stream_category,
)
from commandbus.events.ports import (
    EncodedEvent,
    EventFilter,
    FoldedEvent,
    StreamAppend,
    Taken,
    look_ahead,
)
from commandbus.models import JsonObject
from commandbus.postgres.connections import (
    fast_cursor,
    statement_conn,
    transaction_conn,
    violates_unique,
)
from commandbus.postgres.queries import Queries

__all__ = ["PostgresEventStorage", "PostgresSubscriptionStorage"]

Q = Queries("event_queries.sql")


def _event(row: Sequence[Any], at: int = 0) -> RecordedEvent:
    """The event in ``row`` from column ``at`` on (the event columns' order of the queries)."""
    return RecordedEvent(
        stream=row[at],
        version=int(row[at + 1]),
        position=int(row[at + 2]),
        transaction_id=int(row[at + 3]),
        event_id=row[at + 4],
        event_type=row[at + 5],
        data=row[at + 6],
        metadata=row[at + 7],
        correlation_id=row[at + 8],
        causation_id=row[at + 9],
        recorded_at=row[at + 10],
    )


def _filter_params(where: EventFilter) -> dict[str, Any]:
    return {
        "categories": None if where.categories is None else list(where.categories),
        "event_types": None if where.event_types is None else list(where.event_types),
    }


class PostgresEventStorage:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def append(
        self,
        stream: str,
        events: Sequence[EncodedEvent],
        expected_version: int | None,
        *,
        conn: Any | None = None,
    ) -> AppendResult:
        event_ids = [e.event_id for e in events]
        params: dict[str, Any] = {
            "stream": stream,
            "category": stream_category(stream),
            "expected": expected_version,
            "event_ids": event_ids,
            "event_types": [e.event_type for e in events],
            "data": [e.data for e in events],
            "metadata": [e.metadata for e in events],
            "correlation_ids": [e.correlation_id for e in events],
            "causation_ids": [e.causation_id for e in events],
        }
        # A savepoint inside the caller's transaction: a refused append undoes only itself.
        try:
            async with transaction_conn(self._pool, conn) as c:
                cur = await c.execute(Q.append, params)
                row = await cur.fetchone()
                if row is None or not row[1]:
                    # Raised inside the transaction: a new stream's head row is undone.
                    actual = 0
                    if row is None:
                        cur = await c.execute(Q.stream_version, {"stream": stream})
                        found = await cur.fetchone()
                        actual = int(found[0]) if found is not None else 0
                    assert expected_version is not None
                    raise WrongExpectedVersionError(stream, expected_version, actual)
        except StorageError as exc:
            if not violates_unique(exc, "event_event_id_key"):
                raise
            raise DuplicateEventError(await self._stored_ids(event_ids, conn)) from None
        return AppendResult(stream=stream, version=int(row[0]), positions=list(row[2]))

    async def _stored_ids(self, event_ids: list[Any], conn: Any | None) -> list[Any]:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.existing_event_ids, {"event_ids": event_ids})
            found = {r[0] for r in await cur.fetchall()}
        # Under REPEATABLE READ the caller may not see a concurrent duplicate: name them all.
        return [e for e in event_ids if e in found] or event_ids

    async def read_stream(
        self, stream: str, from_version: int, limit: int, *, conn: Any | None = None
    ) -> list[RecordedEvent]:
        params = {"stream": stream, "from_version": from_version, "limit": limit}
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.read_stream, params)
            return [_event(r) for r in await cur.fetchall()]

    async def read_all(
        self, after: Checkpoint, limit: int, where: EventFilter, *, conn: Any | None = None
    ) -> list[RecordedEvent]:
        params = {
            "after_tx": after.transaction_id,
            "after_position": after.position,
            "limit": limit,
            **_filter_params(where),
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.read_all, params)
            return [_event(r) for r in await cur.fetchall()]

    async def count_after(
        self, after: Checkpoint, where: EventFilter, *, conn: Any | None = None
    ) -> int:
        params = {
            "after_tx": after.transaction_id,
            "after_position": after.position,
            **_filter_params(where),
        }
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.count_after, params)
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def stream_version(self, stream: str, *, conn: Any | None = None) -> int:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.stream_version, {"stream": stream})
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def get_snapshot(
        self, stream: str, *, conn: Any | None = None
    ) -> tuple[int, JsonObject] | None:
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.get_snapshot, {"stream": stream})
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), row[1])

    async def load_streams(
        self, streams: Sequence[str], limit: int, *, conn: Any | None = None
    ) -> dict[str, tuple[tuple[int, JsonObject] | None, list[FoldedEvent]]]:
        found: dict[str, tuple[tuple[int, JsonObject] | None, list[FoldedEvent]]] = {
            s: (None, []) for s in streams
        }
        if not streams:
            return found
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.load_streams, {"streams": list(streams), "limit": limit})
            rows = await cur.fetchall()
        for kind, stream, version, event_id, event_type, data in rows:
            _, events = found[stream]
            if kind == 0:
                found[stream] = ((int(version), data), events)
            else:
                events.append(FoldedEvent(int(version), event_id, event_type, data))
        return found

    async def stored_event_ids(
        self, event_ids: Sequence[Any], *, conn: Any | None = None
    ) -> set[Any]:
        if not event_ids:
            return set()
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.existing_event_ids, {"event_ids": list(event_ids)})
            return {r[0] for r in await cur.fetchall()}

    async def append_many(self, appends: Sequence[StreamAppend], *, conn: Any) -> None:
        if not appends:
            return
        events = [(a.stream, seq, e) for a in appends for seq, e in enumerate(a.events, 1)]
        params = {
            "streams": [a.stream for a in appends],
            "categories": [stream_category(a.stream) for a in appends],
            "expected": [a.expected_version for a in appends],
            "counts": [len(a.events) for a in appends],
            "event_streams": [s for s, _, _ in events],
            "seqs": [seq for _, seq, _ in events],
            "event_ids": [e.event_id for _, _, e in events],
            "event_types": [e.event_type for _, _, e in events],
            "data": [e.data for _, _, e in events],
            "metadata": [e.metadata for _, _, e in events],
            "correlation_ids": [e.correlation_id for _, _, e in events],
            "causation_ids": [e.causation_id for _, _, e in events],
        }
        try:
            async with statement_conn(self._pool, conn) as c:
                cur = await c.execute(Q.append_many, params)
                row = await cur.fetchone()
        except StorageError as exc:
            if violates_unique(exc, "event_event_id_key"):
                ids = [e.event_id for _, _, e in events]
                # The caller's transaction is aborted: look with another connection.
                stored = await self.stored_event_ids(ids)
                raise DuplicateEventError([e for e in ids if e in stored] or ids) from None
            raise
        assert row is not None
        if int(row[0]) != len(appends):
            # Which one moved is not said; the caller rolls back and loads again.
            first = appends[0]
            raise WrongExpectedVersionError(first.stream, first.expected_version, -1)

    async def put_snapshot(
        self, stream: str, version: int, state: str, *, conn: Any | None = None
    ) -> None:
        params = {"stream": stream, "version": version, "state": state}
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.put_snapshot, params)


class PostgresSubscriptionStorage:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def ensure(self, name: str, where: EventFilter, *, conn: Any | None = None) -> None:
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.ensure_subscription, {"name": name, **_filter_params(where)})

    async def take(self, name: str, limit: int, where: EventFilter, *, conn: Any) -> Taken | None:
        params = {
            "name": name,
            "limit": limit,
            "look_ahead": look_ahead(limit, where),
            **_filter_params(where),
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.take_subscription, params)
            rows = await cur.fetchall()
        if not rows:
            return None
        first = rows[0]
        checkpoint = Checkpoint(int(first[0]), int(first[1]))
        events = [_event(r, 4) for r in rows if r[4] is not None]
        window_end = None if first[2] is None else Checkpoint(int(first[2]), int(first[3]))
        return Taken.of_window(checkpoint, events, window_end, limit)

    async def advance(
        self,
        name: str,
        handled: Sequence[RecordedEvent],
        where: EventFilter,
        *,
        conn: Any,
        to: Checkpoint | None = None,
    ) -> None:
        if to is None:
            to = handled[-1].checkpoint
        params = {
            "name": name,
            "tx": to.transaction_id,
            "position": to.position,
            "positions": [e.position for e in handled],
            **_filter_params(where),
        }
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.advance_subscription, params)

    async def record_failure(
        self, name: str, event: RecordedEvent, error: str, park_after: int | None
    ) -> bool:
        params = {
            "name": name,
            "tx": event.transaction_id,
            "position": event.position,
            "error": error,
            "park_after": park_after,
        }
        async with statement_conn(self._pool, None) as c:
            cur = await c.execute(Q.record_failure, params)
            row = await cur.fetchone()
        return bool(row is not None and row[0])

    async def get(self, name: str) -> SubscriptionInfo | None:
        found = await self._subscriptions(name)
        return found[0] if found else None

    async def list_all(self) -> list[SubscriptionInfo]:
        return await self._subscriptions(None)

    async def _subscriptions(self, name: str | None) -> list[SubscriptionInfo]:
        async with statement_conn(self._pool, None) as c:
            cur = await c.execute(Q.subscriptions, {"name": name})
            rows = await cur.fetchall()
        return [
            SubscriptionInfo(
                name=r[0],
                checkpoint=Checkpoint(int(r[1]), int(r[2])),
                categories=r[3],
                event_types=r[4],
                handled=int(r[5]),
                parked=int(r[6]),
                lag=int(r[7]),
                failing_position=r[8],
                failures=int(r[9]),
                last_error=r[10],
                updated_at=r[11],
            )
            for r in rows
        ]

    async def reset(self, name: str, to: Checkpoint) -> bool:
        params = {"name": name, "tx": to.transaction_id, "position": to.position}
        async with statement_conn(self._pool, None) as c:
            cur = await c.execute(Q.reset_subscription, params)
            return bool(cur.rowcount > 0)

    async def end(self) -> Checkpoint:
        async with statement_conn(self._pool, None) as c:
            cur = await c.execute(Q.end_checkpoint)
            row = await cur.fetchone()
        return Checkpoint() if row is None else Checkpoint(int(row[0]), int(row[1]))

    async def parked(self, name: str, limit: int) -> list[ParkedEvent]:
        async with statement_conn(self._pool, None) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.parked_events, {"name": name, "limit": limit})
            rows = await cur.fetchall()
        return [
            ParkedEvent(
                subscription=name, event=_event(r), attempts=r[11], error=r[12], parked_at=r[13]
            )
            for r in rows
        ]
