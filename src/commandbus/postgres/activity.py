"""The activity queries of the PostgreSQL adapter (``sql/activity_queries.sql``): what
``PostgresCommandStore.activity`` and ``PostgresProcessRepository.activity`` return, each
one bounded statement (see ``commandbus.activity``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commandbus.activity import (
    CommandActivity,
    Durations,
    MinuteActivity,
    ProcessActivity,
    check_window,
)
from commandbus.postgres.connections import statement_conn
from commandbus.postgres.queries import Queries

__all__ = ["command_activity", "process_activity"]

Q = Queries("activity_queries.sql")


def _durations(n: Any, p50: Any, p95: Any, longest: Any) -> Durations | None:
    if not n or p50 is None:
        return None
    return Durations(int(n), float(p50), float(p95), float(longest))


async def command_activity(
    pool: AsyncConnectionPool[Any], since: datetime, minutes: int, limit: int, conn: Any | None
) -> CommandActivity:
    check_window(since, limit, minutes)
    params = {"since": since, "minutes": minutes, "limit": limit}
    async with statement_conn(pool, conn) as c:
        cur = await c.execute(Q.command_activity, params)
        rows = await cur.fetchall()
    by_domain: dict[str, dict[int, MinuteActivity]] = {}
    read = kept = 0
    oldest: datetime | None = None
    for domain, minute, completed, failed, p50, p95, longest, n_read, n_kept, first in rows:
        if domain is None:
            read, kept, oldest = int(n_read), int(n_kept), first
            continue
        by_domain.setdefault(domain, {})[minute] = MinuteActivity(
            since + timedelta(minutes=minute),
            int(completed),
            int(failed),
            _durations(completed, p50, p95, longest),
        )
    truncated = read > limit
    covered = oldest if truncated and oldest is not None else since
    return CommandActivity(since, minutes, by_domain, kept, truncated, covered)


async def process_activity(
    pool: AsyncConnectionPool[Any], since: datetime, limit: int, conn: Any | None
) -> ProcessActivity:
    check_window(since, limit)
    params = {"since": since, "limit": limit}
    async with statement_conn(pool, conn) as c:
        cur = await c.execute(Q.process_activity, params)
        rows = await cur.fetchall()
    processes: dict[tuple[str, str], Durations] = {}
    steps: dict[tuple[str, str, str], Durations] = {}
    kept = read = 0
    more = False
    oldest: datetime | None = None
    for kind, domain, process_type, step, n, p50, p95, longest, n_read, past, first in rows:
        if kind == "read":
            kept, read, more, oldest = int(n), int(n_read), bool(past), first
            continue
        found = _durations(n, p50, p95, longest)
        if found is None:
            continue
        if kind == "step":
            steps[(domain, process_type, step)] = found
        else:
            processes[(domain, process_type)] = found
    truncated = read > limit and more
    covered = oldest if truncated and oldest is not None else since
    return ProcessActivity(since, processes, steps, kept, truncated, covered)
