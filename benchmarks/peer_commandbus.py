"""The commandbus side of ``python -m benchmarks.peers``: one measurement per call.

The same method as the PgQueuer side (``benchmarks/peer_pgqueuer.py``): N no-op commands
sent first, then ``--procs`` worker processes (each its own pool and ``Worker``) run
until the queue is empty; rates are on the database clock; tables are truncated,
vacuumed and checkpointed before every run. Every command is sent with a ``reply_to``,
so each one still writes its command row, its audit events and a reply. The result is
one JSON object on the last line of stdout::

    python -m benchmarks.peer_commandbus reset   --dsn DSN
    python -m benchmarks.peer_commandbus send    --dsn DSN -n 20000
    python -m benchmarks.peer_commandbus loop    --dsn DSN -n 5000
    python -m benchmarks.peer_commandbus process --dsn DSN -n 20000 --procs 2 --batch 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.peer_cpu import BackendCpu, own_cpu
from commandbus import CommandBus, HandlerRegistry, SendRequest, Worker
from commandbus.handler import HandlerContext
from commandbus.models import Command
from commandbus.postgres import PostgresBackend

DOMAIN = "peer"
REPLIES = "peer__replies"
TABLES = ("queue_message", "command", "audit", "queue_archive")


def reset(dsn: str, keep_history: bool = False) -> None:
    """Empty the tables (``keep_history``: remove only this benchmark's rows, keeping the
    history ``benchmarks.history`` stored under another domain), vacuum, checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if keep_history:
            conn.execute("DELETE FROM commandbus.queue_message")
            conn.execute("DELETE FROM commandbus.audit WHERE domain = %s", (DOMAIN,))
            conn.execute("DELETE FROM commandbus.command WHERE domain = %s", (DOMAIN,))
        else:
            conn.execute(
                "TRUNCATE commandbus.queue_message, commandbus.command, commandbus.audit,"
                " commandbus.queue_archive"
            )
        for table in TABLES:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("commandbus", table)))
        conn.execute("CHECKPOINT")


def database_now(monitor: psycopg.Connection[Any]) -> Any:
    row = monitor.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def _data(n: int) -> dict[str, Any]:
    return {"i": n, "payload": "x" * 16}  # the size of the PgQueuer side's payload


def send(dsn: str, n: int, one_at_a_time: bool) -> dict[str, Any]:
    """``send_batch`` of ``n`` commands in one call, or ``n`` calls of ``send``."""

    async def timed() -> dict[str, Any]:
        backend = await PostgresBackend.connect(dsn, min_size=2, max_size=4)
        try:
            bus = CommandBus(backend)
            requests = [
                SendRequest(DOMAIN, "Noop", uuid.uuid4(), _data(i), reply_to=REPLIES)
                for i in range(0 if one_at_a_time else n)
            ]
            with psycopg.connect(dsn, autocommit=True) as monitor:
                started = database_now(monitor)
                if one_at_a_time:
                    for i in range(n):
                        await bus.send(DOMAIN, "Noop", data=_data(i), reply_to=REPLIES)
                else:
                    await bus.send_batch(requests)
                seconds = (database_now(monitor) - started).total_seconds()
                row = monitor.execute(
                    "SELECT count(*) FROM commandbus.command WHERE domain = %s", (DOMAIN,)
                ).fetchone()
        finally:
            await backend.close()
        stored = row[0] if row else 0
        return {"n": n, "seconds": seconds, "per_second": n / seconds, "stored": stored}

    return asyncio.run(timed())


def _child(
    dsn: str,
    concurrency: int,
    batch: int,
    ready: Any,
    go: Any,
    stop: Any,
    handled: Any,
    client_cpu: Any,
) -> None:
    async def main() -> None:
        calls = 0
        registry = HandlerRegistry()

        @registry.handler(DOMAIN, "Noop")
        async def noop(command: Command, ctx: HandlerContext) -> None:
            nonlocal calls
            calls += 1

        backend = await PostgresBackend.connect(dsn, min_size=2, max_size=4)
        try:
            worker = Worker(backend, DOMAIN, registry, visibility_timeout=120, batch_size=batch)
            ready.release()
            await asyncio.to_thread(go.wait)
            cpu_started = own_cpu()
            runner = asyncio.create_task(
                worker.run(concurrency=concurrency, poll_interval=0.05, use_notify=True)
            )
            await asyncio.to_thread(stop.wait)
            await worker.stop(timeout=30)
            await runner
        finally:
            await backend.close()
        with handled.get_lock():
            handled.value += calls
        with client_cpu.get_lock():
            client_cpu.value += own_cpu() - cpu_started

    asyncio.run(main())


def process(
    dsn: str, n: int, procs: int, concurrency: int, batch: int, timeout: float
) -> dict[str, Any]:
    """Run ``procs`` worker processes until the ``n`` sent commands are settled."""
    ctx = mp.get_context("spawn")
    ready, go, stop, handled = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    client_cpu = ctx.Value("d", 0.0)
    workers = [
        ctx.Process(
            target=_child, args=(dsn, concurrency, batch, ready, go, stop, handled, client_cpu)
        )
        for _ in range(procs)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        if not ready.acquire(timeout=60):
            raise RuntimeError("a commandbus worker did not start within 60 s")
    with psycopg.connect(dsn, autocommit=True) as monitor:
        server_cpu = BackendCpu(dsn)
        server_cpu.start()
        started = database_now(monitor)
        wall_started = time.perf_counter()
        go.set()
        timed_out = False
        while True:
            time.sleep(0.5)
            row = monitor.execute(
                "SELECT count(*) FROM commandbus.queue_message WHERE queue_name = %s",
                (f"{DOMAIN}__commands",),
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            if time.perf_counter() - wall_started > timeout or not all(
                w.is_alive() for w in workers
            ):
                timed_out = True
                break
        server_cpu.stop()
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        last = monitor.execute(
            "SELECT max(ts), count(*), count(DISTINCT command_id) FROM commandbus.audit"
            " WHERE event_type = 'COMPLETED' AND domain = %s",
            (DOMAIN,),
        ).fetchone()
        assert last is not None
        statuses = dict(
            monitor.execute(
                "SELECT status || ' attempts=' || attempts, count(*) FROM commandbus.command"
                " WHERE domain = %s GROUP BY 1",
                (DOMAIN,),
            ).fetchall()
        )
        replies = monitor.execute(
            "SELECT count(*) FROM commandbus.queue_message WHERE queue_name = %s", (REPLIES,)
        ).fetchone()
        left = monitor.execute(
            "SELECT count(*) FROM commandbus.queue_message WHERE queue_name = %s",
            (f"{DOMAIN}__commands",),
        ).fetchone()
    seconds = (last[0] - started).total_seconds() if last[0] else float("nan")
    return {
        "n": n,
        "seconds": seconds,
        "per_second": last[1] / seconds if seconds > 0 else 0.0,
        "timed_out": timed_out,
        "client_cpu_s": client_cpu.value,
        "server_cpu_s": server_cpu.seconds(),
        "handled": handled.value,
        "completed": last[1],
        "distinct_completed": last[2],
        "left": left[0] if left else -1,
        "replies": replies[0] if replies else 0,
        "command_statuses": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_commandbus")
    parser.add_argument("action", choices=["reset", "send", "loop", "process"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200, help="per worker process")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep-history", action="store_true", help="reset: keep other domains")
    args = parser.parse_args(argv)
    if args.action == "reset":
        reset(args.dsn, args.keep_history)
        result: dict[str, Any] = {}
    elif args.action in ("send", "loop"):
        result = send(args.dsn, args.n, one_at_a_time=args.action == "loop")
    else:
        result = process(args.dsn, args.n, args.procs, args.concurrency, args.batch, args.timeout)
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
