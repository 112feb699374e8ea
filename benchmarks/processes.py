"""Process manager throughput on PostgreSQL: StatementReport processes end to end.

Run from the repository root::

    python -m benchmarks.processes                         # 5,000 processes
    python -m benchmarks.processes --preload-audit 1000000 # with 1M old audit rows first

In a fresh database (created on the server of ``DATABASE_URL`` and dropped at the end):
``--procs`` OS processes each run a ``Worker`` (domain ``reporting``, the example's trivial
handlers) and a ``ProcessReplyRouter``; the main process starts ``--processes``
StatementReport processes with ``start_many`` (chunks of ``--chunk``, one transaction
each) while they run, and waits until every process is COMPLETED. Reported: processes/s
and steps/s (3 commands + 3 replies applied per process), from the first start to the
last completion, and a check that every process has exactly three answered audit entries.

``--preload-audit N`` first inserts N/4 completed processes with 4 audit entries each
(plain SQL) and analyses the tables: the per-process audit lookups must not slow down.

Also reported: the CPU time per process of the worker+router processes and of the
database's backends (a server on this machine; see ``benchmarks.peer_cpu``), which is
where the time of a process goes. ``--statements`` adds PostgreSQL's own account, per
statement (``pg_stat_statements``: the server must have it in
``shared_preload_libraries``; the extension is created in the scratch database): calls,
rows and execution time per process, the costliest first. Execution time is wall time in
the executor, so on a machine whose CPUs are all busy it includes time a backend waited
for a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.peer_cpu import BackendCpu, own_cpu

TARGET_PROCESSES = 500.0
TARGET_STEPS = 1_500.0

INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-12-31",
    "account_list": ["ACC-001", "ACC-002"],
    "output_type": "pdf",
}

PRELOAD_PROCESSES_SQL = """
INSERT INTO commandbus.process (domain, process_id, process_type, status, current_step,
    state, created_at, updated_at, completed_at, command_seq)
SELECT 'reporting', md5('p' || g)::uuid, 'StatementReport', 'COMPLETED', 'statement_render',
       '{}'::jsonb, now() - interval '30 days', now() - interval '30 days',
       now() - interval '30 days', 4
FROM generate_series(1, %(processes)s) AS g
"""
PRELOAD_AUDIT_SQL = """
INSERT INTO commandbus.process_audit (domain, process_id, step_name, kind, command_id,
    command_type, command_data, sent_at, reply_outcome, reply_data, received_at)
SELECT 'reporting', md5('p' || g)::uuid, 'step_' || s, 'STEP', md5('c' || g || '-' || s)::uuid,
       'StatementQuery', '{"from_date": "2024-01-01"}'::jsonb,
       now() - interval '30 days' + s * interval '1 second', 'SUCCESS',
       '{"result_path": "s3://old"}'::jsonb, now() - interval '30 days'
FROM generate_series(1, %(processes)s) AS g, generate_series(1, 4) AS s
"""


def server_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("COMMANDBUS_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from commandbus.testing.pg import resolve_server_dsn

    return resolve_server_dsn()


def fresh_database(url: str) -> tuple[str, str]:
    name = f"cb_pm_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params: dict[str, Any] = dict(conninfo_to_dict(url))
    params["dbname"] = name
    return name, make_conninfo("", **params)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- the runner processes -----------------------------------------------------------------


def _runner(dsn: str, stop: MpEvent, ready: Any, cpu: Any, args: argparse.Namespace) -> None:
    asyncio.run(_run(dsn, stop, ready, cpu, args))


async def _run(dsn: str, stop: MpEvent, ready: Any, cpu: Any, args: argparse.Namespace) -> None:
    from examples.statement_report import StatementReportProcess
    from examples.statement_report.handlers import register_statement_handlers

    from commandbus import CommandBus, HandlerRegistry, Worker
    from commandbus.postgres import PostgresBackend
    from commandbus.process import ProcessReplyRouter

    size = args.worker_concurrency // args.batch + args.router_concurrency + 4
    backend = await PostgresBackend.connect(dsn, min_size=2, max_size=size)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    manager = StatementReportProcess(CommandBus(backend))
    worker = Worker(backend, "reporting", registry, batch_size=args.batch)
    router = ProcessReplyRouter(backend, managers=[manager], batch_size=args.router_batch)
    tasks = [
        asyncio.create_task(worker.run(concurrency=args.worker_concurrency, poll_interval=0.05)),
        asyncio.create_task(router.run(concurrency=args.router_concurrency, poll_interval=0.05)),
    ]
    with ready.get_lock():
        ready.value += 1
    cpu_started = own_cpu()
    while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing event, not an asyncio one
        await asyncio.sleep(0.05)
    with cpu.get_lock():
        cpu.value += own_cpu() - cpu_started
    await worker.stop(5)
    await router.stop(5)
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.close()


# -- main ------------------------------------------------------------------------------


async def _drive(dsn: str, args: argparse.Namespace) -> tuple[float, int]:
    from examples.statement_report import StatementReportProcess

    from commandbus import CommandBus
    from commandbus.postgres import PostgresBackend

    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=4)
    manager = StatementReportProcess(CommandBus(backend))
    run_started = datetime.now(UTC) - timedelta(seconds=1)
    started = time.perf_counter()

    async def starter() -> None:
        remaining = args.processes
        while remaining > 0:
            n = min(args.chunk, remaining)
            await manager.start_many([dict(INPUT) for _ in range(n)])
            remaining -= n

    start_task = asyncio.create_task(starter())
    async with backend.pool.connection() as conn:
        while True:
            # created_at bounds the count to this run (served by idx_process_created), so
            # polling costs the same with or without preloaded history.
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED') FROM commandbus.process "
                "WHERE created_at >= %(t0)s",
                {"t0": run_started},
            )
            row = await cur.fetchone()
            done = int(row[0]) if row else 0
            if done >= args.processes:
                break
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"timed out with {done} of {args.processes} completed")
            await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    await start_task
    async with backend.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM commandbus.process_audit a JOIN commandbus.process p "
            "USING (domain, process_id) WHERE p.created_at >= %(t0)s "
            "AND a.reply_outcome = 'SUCCESS'",
            {"t0": run_started},
        )
        row = await cur.fetchone()
        answered = int(row[0]) if row else 0
    await backend.close()
    return elapsed, answered


#: The statements of this database, costliest first (top-level ones: a function's own
#: statements are counted in the statement that called it).
STATEMENTS_SQL = """
SELECT calls, rows, total_exec_time, query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel
ORDER BY total_exec_time DESC
LIMIT %(limit)s
"""


def reset_statements(dsn: str) -> None:
    """Create pg_stat_statements in the scratch database and forget what it counted
    there so far; a clear error if the server does not load it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(
                "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database"
                " WHERE datname = current_database()), 0)"
            )
        except psycopg.Error as exc:
            raise SystemExit(
                "--statements needs a server with pg_stat_statements in "
                f"shared_preload_libraries: {exc}"
            ) from None


def print_statements(dsn: str, processes: int, limit: int = 12) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(STATEMENTS_SQL, {"limit": limit}).fetchall()
    print("  PostgreSQL per statement (pg_stat_statements), per process:")
    print(f"  {'us':>7} {'calls':>6} {'rows':>6}  statement")
    for calls, count, total_ms, query in rows:
        first = next((line.strip() for line in query.splitlines() if line.strip()), "")
        print(
            f"  {total_ms * 1e3 / processes:7.1f} {calls / processes:6.3f} "
            f"{count / processes:6.2f}  {first[:90]}"
        )


async def _preload(dsn: str, rows: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        async with conn.transaction():
            for query in (PRELOAD_PROCESSES_SQL, PRELOAD_AUDIT_SQL):
                await conn.execute(query.encode(), {"processes": rows // 4})
        await conn.execute("VACUUM ANALYZE commandbus.process")
        await conn.execute("VACUUM ANALYZE commandbus.process_audit")
        print(f"preloaded {rows:,} audit rows in {time.perf_counter() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--processes", type=int, default=5_000)
    parser.add_argument("--procs", type=int, default=2, help="OS processes (worker+router)")
    parser.add_argument("--worker-concurrency", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50, help="worker claim batch")
    parser.add_argument("--router-concurrency", type=int, default=2)
    parser.add_argument("--router-batch", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=250, help="processes per start_many")
    parser.add_argument("--preload-audit", type=int, default=0, help="old audit rows first")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="PostgreSQL's time per statement (needs pg_stat_statements preloaded)",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    from commandbus.postgres import apply_schema

    url = server_url(args.database_url)
    name, dsn = fresh_database(url)
    try:
        asyncio.run(apply_schema(dsn))
        if args.preload_audit:
            asyncio.run(_preload(dsn, args.preload_audit))
        if args.statements:
            reset_statements(dsn)
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        ready = ctx.Value("i", 0)
        cpu = ctx.Value("d", 0.0)
        procs = [
            ctx.Process(target=_runner, args=(dsn, stop, ready, cpu, args))
            for _ in range(args.procs)
        ]
        for p in procs:
            p.start()
        while ready.value < args.procs:
            time.sleep(0.05)
        server_cpu = BackendCpu(dsn)
        server_cpu.start()
        try:
            elapsed, answered = asyncio.run(_drive(dsn, args))
        finally:
            server_cpu.stop()
            stop.set()
            for p in procs:
                p.join(30)
        steps = answered
        pps = args.processes / elapsed
        sps = steps / elapsed
        ok = steps == 3 * args.processes
        print(
            f"{args.processes:,} StatementReport processes, {args.procs} worker+router "
            f"processes, {os.cpu_count()} CPUs"
            + (f", {args.preload_audit:,} pre-existing audit rows" if args.preload_audit else "")
        )
        print(f"  elapsed        {elapsed:8.2f} s")
        print(f"  processes/s    {pps:8.0f}   (target >= {TARGET_PROCESSES:.0f})")
        print(f"  steps/s        {sps:8.0f}   (target >= {TARGET_STEPS:.0f})")
        print(f"  audit check    {'ok' if ok else 'MISMATCH'}: {steps:,} answered steps")
        per_process = 1e6 / args.processes
        server = server_cpu.seconds()
        print(
            f"  CPU/process    worker+router processes {cpu.value * per_process:.0f} us, "
            + (
                f"PostgreSQL backends {server * per_process:.0f} us"
                if server is not None
                else "PostgreSQL backends not measured (not a server on this machine)"
            )
        )
        if args.statements:
            print_statements(dsn, args.processes)
        return 0 if ok else 1
    finally:
        if not args.keep:
            drop_database(url, name)


if __name__ == "__main__":
    raise SystemExit(main())
