"""The PgQueuer side of ``python -m benchmarks.peers`` (run by PgQueuer's own interpreter).

This file imports only PgQueuer, asyncpg and psycopg: it runs in the virtualenv that
``benchmarks.peers`` builds for PgQueuer 1.6.0 (PgQueuer is not a dependency of the
project). It follows the method of the driver behind the PgQueuer figures of the
throughput issue (``shared/peerbench/bench_pgq.py``): N no-op jobs enqueued first, then
``--procs`` worker processes, each with its own asyncpg connection and ``QueueManager``,
run in ``drain`` mode with ``--batch`` until the queue is empty; the processing rate is
N / (last ``successful`` log row - the moment the workers were told to start), on the
database clock; tables are truncated, vacuumed and checkpointed before every run.

One measurement per call; the result is one JSON object on the last line of stdout::

    python benchmarks/peer_pgqueuer.py reset   --dsn DSN
    python benchmarks/peer_pgqueuer.py send    --dsn DSN -n 20000 --chunk 1000
    python benchmarks/peer_pgqueuer.py loop    --dsn DSN -n 5000
    python benchmarks/peer_pgqueuer.py process --dsn DSN -n 20000 --procs 2 --batch 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import sys
import time
from typing import Any

import psycopg

from peer_cpu import BackendCpu, own_cpu  # beside this file, which runs as a script

PAYLOAD = b'{"i":1,"payload":"xxxxxxxxxxxxxxxx"}'


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        conn.execute("VACUUM ANALYZE pgqueuer")
        conn.execute("VACUUM ANALYZE pgqueuer_log")
        conn.execute("CHECKPOINT")


def database_now(monitor: psycopg.Connection[Any]) -> Any:
    row = monitor.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


async def _queries(dsn: str) -> Any:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    return Queries(AsyncpgDriver(await asyncpg.connect(dsn=dsn)))


def send(dsn: str, n: int, chunk: int, one_at_a_time: bool) -> dict[str, Any]:
    """Enqueue ``n`` jobs; seconds on the database clock, read just before and after."""

    async def timed() -> dict[str, Any]:
        queries = await _queries(dsn)  # connected before the clock starts, as in bench_pgq
        with psycopg.connect(dsn, autocommit=True) as monitor:
            started = database_now(monitor)
            if one_at_a_time:
                for _ in range(n):
                    await queries.enqueue("noop", PAYLOAD, 0)
            else:
                done = 0
                while done < n:
                    k = min(chunk, n - done)
                    await queries.enqueue(["noop"] * k, [PAYLOAD] * k, [0] * k)
                    done += k
            seconds = (database_now(monitor) - started).total_seconds()
            row = monitor.execute("SELECT count(*) FROM pgqueuer").fetchone()
        queued = row[0] if row else 0
        return {"n": n, "seconds": seconds, "per_second": n / seconds, "stored": queued}

    return asyncio.run(timed())


def _child(dsn: str, batch: int, ready: Any, go: Any, handled: Any, client_cpu: Any) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)

    async def main() -> None:
        from pgqueuer import QueueManager, types
        from pgqueuer.models import Job

        manager = QueueManager(await _queries(dsn))
        calls = 0

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal calls
            calls += 1

        ready.release()
        await asyncio.to_thread(go.wait)
        cpu_started = own_cpu()
        await manager.run(batch_size=batch, mode=types.QueueExecutionMode.drain)
        with handled.get_lock():
            handled.value += calls
        with client_cpu.get_lock():
            client_cpu.value += own_cpu() - cpu_started

    asyncio.run(main())


def process(dsn: str, n: int, procs: int, batch: int, timeout: float) -> dict[str, Any]:
    """Run ``procs`` draining worker processes over the ``n`` queued jobs."""
    ctx = mp.get_context("spawn")
    ready, go, handled = ctx.Semaphore(0), ctx.Event(), ctx.Value("q", 0)
    client_cpu = ctx.Value("d", 0.0)
    workers = [
        ctx.Process(target=_child, args=(dsn, batch, ready, go, handled, client_cpu))
        for _ in range(procs)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        if not ready.acquire(timeout=60):
            raise RuntimeError("a PgQueuer worker did not start within 60 s")
    with psycopg.connect(dsn, autocommit=True) as monitor:
        server_cpu = BackendCpu(dsn)
        server_cpu.start()
        started = database_now(monitor)
        wall_started = time.perf_counter()
        go.set()
        timed_out = False
        while True:
            time.sleep(0.5)
            row = monitor.execute("SELECT count(*) FROM pgqueuer").fetchone()
            if row is not None and row[0] == 0:
                break
            if time.perf_counter() - wall_started > timeout or not any(
                w.is_alive() for w in workers
            ):
                timed_out = True
                break
        server_cpu.stop()
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        last = monitor.execute(
            "SELECT max(created) FROM pgqueuer_log WHERE status = 'successful'"
        ).fetchone()
        statuses = dict(
            monitor.execute("SELECT status::text, count(*) FROM pgqueuer_log GROUP BY 1").fetchall()
        )
        distinct = monitor.execute(
            "SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'"
        ).fetchone()
        left = monitor.execute("SELECT count(*) FROM pgqueuer").fetchone()
    seconds = (last[0] - started).total_seconds() if last and last[0] else float("nan")
    completed = statuses.get("successful", 0)
    return {
        "n": n,
        "seconds": seconds,
        "per_second": completed / seconds if seconds > 0 else 0.0,
        "timed_out": timed_out,
        "client_cpu_s": client_cpu.value,
        "server_cpu_s": server_cpu.seconds(),
        "handled": handled.value,
        "completed": completed,
        "distinct_completed": distinct[0] if distinct else 0,
        "left": left[0] if left else -1,
        "log_statuses": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peer_pgqueuer.py")
    parser.add_argument("action", choices=["reset", "send", "loop", "process"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per enqueue statement")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.action == "reset":
        reset(args.dsn)
        result: dict[str, Any] = {}
    elif args.action in ("send", "loop"):
        result = send(args.dsn, args.n, args.chunk, one_at_a_time=args.action == "loop")
    else:
        result = process(args.dsn, args.n, args.procs, args.batch, args.timeout)
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
