"""Where the time of one command goes: rows, index entries, WAL, server and Python time.

Run from the repository root::

    python -m benchmarks.breakdown                  # DATABASE_URL or embedded server
    python -m benchmarks.breakdown --commands 20000 --profile

In a fresh database (dropped at the end):

1. **statements**: the three statements of a command's life (``insert_commands``,
   ``claim_commands``, ``settle`` with a SUCCESS reply) run batch after batch of
   ``--batch`` commands under ``EXPLAIN ANALYZE``, each in a transaction of its own:
   they really execute and commit, so the lifecycle goes on as a worker's would. Per
   command, medians over the batches after a warm-up: server execution time, the WAL
   records and bytes of the transaction (``pg_walinspect``, created in the scratch
   database); and from ``pg_stat_user_tables`` the rows each statement inserted, updated
   (HOT or not) and deleted, hence the index entries it added (a row inserted or
   updated without HOT adds one entry to every index of its table);
2. **Python**: CPU time per command of ``send_batch``, of one-at-a-time ``send()`` and
   of a ``Worker`` (one process, in this process: concurrency 200, batch 50, no-op
   handler, replies), from ``time.process_time``; with ``--profile``, the worker's
   cProfile by package and its hottest functions.

pg_stat_statements is not needed (a server without it in ``shared_preload_libraries``
cannot have it). Every figure is per command.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from benchmarks.throughput import drop_database, fresh_database, server_url
from commandbus import CommandBus, HandlerRegistry, SendRequest, Worker
from commandbus.handler import HandlerContext
from commandbus.models import (
    AuditEventType,
    Command,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SettleAction,
    Settlement,
)
from commandbus.models import CommandStatus as S
from commandbus.postgres import PostgresBackend
from commandbus.postgres.commands import PostgresCommandStore
from commandbus.postgres.queries import Queries

DOMAIN = "breakdown"
REPLIES = "breakdown__replies"
TABLES = ("queue_message", "command", "audit", "queue_archive")
Q = Queries()

console = Console(highlight=False, width=max(Console().width, 150))


# -- capturing the parameters a store method sends -----------------------------------------


class _Recorder:
    """Stands in for a connection: keeps what the store executes, returns fake rows."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.calls: list[tuple[bytes, dict[str, Any]]] = []

    async def execute(self, query: bytes, params: dict[str, Any] | None = None) -> _Recorder:
        self.calls.append((query, params or {}))
        return self

    async def fetchone(self) -> tuple[Any, ...]:
        return (list(range(self.rows)), 0) if self.calls[-1][0] == Q.insert_commands else (0, 0)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[None]:
        yield


async def statement_of(call: Any, rows: int) -> tuple[bytes, dict[str, Any]]:
    recorder = _Recorder(rows)
    await call(recorder)
    [(query, params)] = recorder.calls
    return query, params


# -- 1. statements -------------------------------------------------------------------------


async def table_counters(conn: psycopg.AsyncConnection[Any]) -> dict[str, tuple[int, ...]]:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    # A partition's rows count for its table (the audit trail is partitioned by week).
    cur = await conn.execute(
        "SELECT coalesce(p.relname, s.relname), sum(s.n_tup_ins)::bigint,"
        " sum(s.n_tup_upd)::bigint, sum(s.n_tup_hot_upd)::bigint, sum(s.n_tup_del)::bigint"
        " FROM pg_stat_user_tables s"
        " LEFT JOIN pg_inherits i ON i.inhrelid = s.relid"
        " LEFT JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE s.schemaname = 'commandbus' GROUP BY 1"
    )
    return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


async def index_counts(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Indexes per table that every inserted row gets an entry in (partial ones left out:
    the only one, the TSQ index, has no entry for a command on the normal path)."""
    cur = await conn.execute(
        "SELECT c.relname, count(*) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'commandbus' AND i.indpred IS NULL GROUP BY 1"
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def explained(
    conn: psycopg.AsyncConnection[Any], query: bytes, params: dict[str, Any]
) -> dict[str, Any]:
    """Run ``query`` in a transaction of its own under EXPLAIN ANALYZE; what it wrote."""
    before = await table_counters(conn)
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT pg_current_wal_insert_lsn(), xid(pg_current_xact_id())::text"
        )
        start = await cur.fetchone()
        assert start is not None
        cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params)
        row = await cur.fetchone()
        assert row is not None
    # The records of this transaction (its commit included); page prunes done on the way
    # carry no transaction id and are not counted.
    cur = await conn.execute(
        "SELECT count(*), coalesce(sum(record_length), 0), coalesce(sum(fpi_length), 0)"
        " FROM pg_get_wal_records_info(%s, pg_current_wal_flush_lsn()) WHERE xid = %s::xid",
        start,
    )
    wal = await cur.fetchone()
    assert wal is not None
    after = await table_counters(conn)
    plan = row[0][0]
    rows = {
        table: tuple(a - b for a, b in zip(after[table], before[table], strict=True))
        for table in after
    }
    return {
        "ms": plan["Execution Time"] + plan.get("Planning Time", 0.0),
        "wal_records": wal[0],
        "wal_bytes": wal[1],
        "fpi_bytes": wal[2],
        "dirtied": plan["Plan"].get("Shared Dirtied Blocks", 0),
        "rows": rows,
    }


async def statements(url: str, batches: int, batch: int, warmup: int) -> dict[str, list[Any]]:
    """Per statement, one measurement (see ``explained``) per batch after the warm-up."""
    measured: dict[str, list[Any]] = defaultdict(list)
    backend = await PostgresBackend.connect(url, min_size=1, max_size=2)
    store = backend.commands
    assert isinstance(store, PostgresCommandStore)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            indexes = await index_counts(conn)
            for number in range(warmup + batches):
                requests = [
                    SendRequest(
                        DOMAIN,
                        "Noop",
                        uuid.uuid4(),
                        {"i": i, "payload": "x" * 16},
                        correlation_id=uuid.uuid4(),
                        reply_to=REPLIES,
                    )
                    for i in range(batch)
                ]
                insert = await statement_of(lambda c, r=requests: store.insert(r, 3, conn=c), batch)
                costs = {"send": await explained(conn, *insert)}
                claim_params = {
                    "queue": f"{DOMAIN}__commands",
                    "domain": DOMAIN,
                    "limit": batch,
                    "vt": 120.0,
                }
                costs["claim"] = await explained(conn, Q.claim_commands, claim_params)
                cur = await conn.execute(
                    "SELECT command_id, msg_id, attempts, correlation_id FROM commandbus.command"
                    " WHERE status = 'IN_PROGRESS'"
                )
                settlements = [
                    Settlement(
                        domain=DOMAIN,
                        command_id=command_id,
                        msg_id=msg_id,
                        action=SettleAction.DELETE,
                        status=S.COMPLETED,
                        attempts=attempts,
                        audit=((AuditEventType.COMPLETED, {"attempt": attempts}),),
                        reply=QueuedReply(
                            REPLIES,
                            Reply(command_id, correlation_id, ReplyOutcome.SUCCESS, None),
                        ),
                    )
                    for command_id, msg_id, attempts, correlation_id in await cur.fetchall()
                ]
                assert len(settlements) == batch, len(settlements)
                settle = await statement_of(lambda c, s=settlements: store.settle(s, conn=c), 1)
                costs["settle + reply"] = await explained(conn, *settle)
                await conn.execute(
                    "DELETE FROM commandbus.queue_message WHERE queue_name = %s", (REPLIES,)
                )
                if number >= warmup:
                    for name, cost in costs.items():
                        measured[name].append(cost)
            measured["_indexes"] = [indexes]
    finally:
        await backend.close()
    return measured


def report_statements(measured: dict[str, list[Any]], batch: int) -> None:
    indexes: dict[str, int] = measured.pop("_indexes")[0]
    batches = len(next(iter(measured.values())))
    table = Table(
        title=f"per command: statements in batches of {batch}, median of {batches} batches",
        title_justify="left",
    )
    table.add_column("statement")
    for header in ("server µs", "WAL records", "WAL bytes (FPI)", "index entries"):
        table.add_column(header, justify="right")
    for relname in TABLES[:3]:
        table.add_column(f"{relname} ins/upd(HOT)/del", justify="right")
    totals: dict[str, float] = defaultdict(float)
    for name, runs in measured.items():
        per = {
            key: statistics.median(r[key] for r in runs) / batch
            for key in ("ms", "wal_records", "wal_bytes", "fpi_bytes")
        }
        cells: list[str] = []
        entries = 0.0
        for relname in TABLES:
            ins, upd, hot, dele = (
                statistics.median(r["rows"][relname][k] for r in runs) / batch for k in range(4)
            )
            entries += (ins + upd - hot) * indexes.get(relname, 0)
            if relname in TABLES[:3]:
                cells.append(f"{ins:g}/{upd:g}({hot:.2f})/{dele:g}")
        for key, value in per.items():
            totals[key] += value
        totals["entries"] += entries
        table.add_row(
            name,
            f"{per['ms'] * 1000:.0f}",
            f"{per['wal_records']:.1f}",
            f"{per['wal_bytes']:.0f} ({per['fpi_bytes']:.0f})",
            f"{entries:.2f}",
            *cells,
        )
    table.add_row(
        "[bold]lifecycle[/]",
        f"{totals['ms'] * 1000:.0f}",
        f"{totals['wal_records']:.1f}",
        f"{totals['wal_bytes']:.0f} ({totals['fpi_bytes']:.0f})",
        f"{totals['entries']:.2f}",
        "",
        "",
        "",
    )
    console.print(table)
    console.print(
        "[dim]server µs: execution + planning time of the statement (not the commit, "
        "not the round trip). WAL: the records of the statement's transaction, its commit "
        "included (FPI: full-page images in them). index entries: rows inserted or "
        "updated without HOT, times the indexes of their table (partial ones left out); "
        "every deleted or updated row also leaves a dead tuple and its index entries for "
        "vacuum. Indexes: "
        + ", ".join(f"{t} {n}" for t, n in sorted(indexes.items()) if t in TABLES)
        + "[/]"
    )


# -- 2. Python -----------------------------------------------------------------------------


def _noop_registry() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Noop")
    async def noop(command: Command, ctx: HandlerContext) -> None:
        return None

    return registry


async def python_costs(url: str, commands: int, sends: int, profile: bool) -> dict[str, Any]:
    backend = await PostgresBackend.connect(url, min_size=2, max_size=4)
    try:
        bus = CommandBus(backend)
        requests = [
            SendRequest(
                DOMAIN, "Noop", uuid.uuid4(), {"i": i, "payload": "x" * 16}, reply_to=REPLIES
            )
            for i in range(commands)
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        await bus.send_batch(requests)
        send_batch = (
            (time.process_time() - cpu) / commands,
            (time.perf_counter() - wall) / commands,
        )
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(sends):
            await bus.send(DOMAIN, "Noop", data={"i": i, "payload": "x" * 16}, reply_to=REPLIES)
        one_send = ((time.process_time() - cpu) / sends, (time.perf_counter() - wall) / sends)
        total = commands + sends
        worker = Worker(backend, DOMAIN, _noop_registry(), visibility_timeout=120, batch_size=50)
        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        runner = asyncio.create_task(worker.run(concurrency=200, poll_interval=0.05))
        while worker.stats.completed < total:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.005)
        if profiler:
            profiler.disable()
        worker_cost = ((time.process_time() - cpu) / total, (time.perf_counter() - wall) / total)
        await worker.stop(timeout=30)
        await runner
    finally:
        await backend.close()
    return {
        "send_batch": send_batch,
        "send()": one_send,
        "worker": worker_cost,
        "profile": profiler,
        "profiled_commands": total,
    }


def package_of(filename: str) -> str:
    for marker, name in (
        ("/psycopg_pool/", "psycopg_pool"),
        ("/psycopg/", "psycopg"),
        ("/commandbus/", "commandbus"),
        ("/asyncio/", "asyncio"),
        ("/json/", "json"),
        ("/uuid.py", "uuid"),
        ("/enum.py", "enum"),
    ):
        if marker in filename:
            return name
    return "built-ins" if filename == "~" else "other"


def report_python(costs: dict[str, Any], top: int) -> None:
    table = Table(title="Python, per command (this process)", title_justify="left")
    for header in ("path", "CPU µs", "wall µs"):
        table.add_column(header, justify="left" if header == "path" else "right")
    for name in ("send_batch", "send()", "worker"):
        cpu, wall = costs[name]
        table.add_row(name, f"{cpu * 1e6:.0f}", f"{wall * 1e6:.0f}")
    console.print(table)
    profiler: cProfile.Profile | None = costs["profile"]
    if profiler is None:
        return
    stats = pstats.Stats(profiler)
    n = costs["profiled_commands"]
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        waiting = "'poll' of 'select.epoll'" in name  # idle: the server has the turn
        by_package["waiting (epoll)" if waiting else package_of(filename)] += tottime
    total = sum(by_package.values())
    table = Table(
        title="worker under cProfile: own time by package, per command", title_justify="left"
    )
    table.add_column("package")
    table.add_column("µs", justify="right")
    table.add_column("share", justify="right")
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{seconds / n * 1e6:.1f}", f"{seconds / total:.0%}")
    console.print(table)
    console.rule(f"worker: the {top} functions with the most own time")
    stats.stream = sys.stdout  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.breakdown", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="server to use (default: DATABASE_URL or embedded)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=40, help="measured statement batches")
    parser.add_argument("--warmup", type=int, default=20, help="statement batches not measured")
    parser.add_argument("--commands", type=int, default=20_000, help="Python: send_batch size")
    parser.add_argument("--sends", type=int, default=2_000, help="Python: one-at-a-time sends")
    parser.add_argument("--profile", action="store_true", help="cProfile the worker")
    parser.add_argument("--top", type=int, default=25)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = server_url(args.database_url)
    name, url = fresh_database(server)
    try:
        from commandbus.postgres.schema import apply_schema

        asyncio.run(apply_schema(url))
        measured = asyncio.run(statements(url, args.batches, args.batch, args.warmup))
        report_statements(measured, args.batch)
        costs = asyncio.run(python_costs(url, args.commands, args.sends, args.profile))
        report_python(costs, args.top)
    finally:
        drop_database(server, name)
    console.print(f"[dim]{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
