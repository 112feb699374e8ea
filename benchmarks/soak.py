"""Soak: a million commands at a steady offered rate; does anything decay or grow?

Run from the repository root::

    python -m benchmarks.soak                                  # 1,000,000 at 4,000/s
    python -m benchmarks.soak --commands 100000 --window 20000 # quick

The target of issue 13: a soak of 1,000,000 commands at a steady offered rate keeps its
throughput from the first to the last 100,000 (no decay from bloat or vacuum), and the
memory of the workers stays flat. In a fresh database (created on the server of
``DATABASE_URL`` and dropped at the end):

- ``--procs`` worker processes (the no-op handler and ``Worker`` of
  ``benchmarks.throughput``) run from the start; every command has a reply queue;
- a sender sends ``--rate`` commands a second on a fixed schedule: every ``--interval``
  seconds one ``send_batch`` of what is due by then (a late tick sends what it missed,
  and is counted);
- a reply consumer drains the reply queue as an application would, recording each
  reply's command id (in a table of the benchmark) in the transaction that deletes it;
- at every ``--window`` completions: the worker processes' RSS (``VmRSS``), their CPU
  and that of the database's backends, the sizes of the queue, command and audit
  tables and the dead tuples of the queue and command tables;
- at the end, from the database: per window the completions per second and the offered
  rate achieved (database clock), send-to-completion latency p50/p99; then the check
  that every command completed exactly once (one attempt, one COMPLETED event, one
  SUCCESS reply, nothing left in the queue table) and the verdict.

The default rate is well under what two worker processes sustain end to end on the
2-core development machine (see ``docs/performance.md``), so that the run measures
decay rather than saturation: a system that is saturated has a backlog that grows from
the first window and no steady state to compare.

Exit status: 0 when the targets are met; 1 when one is missed; 2 when the run was wrong
(a command not completed exactly once, a worker died, the run did not finish in time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import queue
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks import soak_figures as figures
from benchmarks.throughput import (
    WorkerReport,
    console,
    drop_database,
    fresh_database,
    open_backend,
    server_facts,
    server_url,
    vacuum,
    worker_process,
)
from commandbus import CommandBus, SendRequest
from commandbus.ids import uuid7

DOMAIN = "soak"
REPLIES = f"{DOMAIN}__replies"
REPLY_BATCH = 1_000

# The reply consumer's record: no index, nothing read until the check at the end.
REPLY_TABLE = "CREATE TABLE soak_reply (command_id uuid NOT NULL, outcome text NOT NULL)"
RECORD_REPLIES = (
    "INSERT INTO soak_reply (command_id, outcome)"
    " SELECT * FROM unnest(%(ids)s::uuid[], %(outcomes)s::text[])"
)


# -- the sender ----------------------------------------------------------------------------


@dataclass
class SenderProgress:
    sent: int = 0
    late_ticks: int = 0  # ticks merged into a later one: their time passed by an interval
    worst_lateness: float = 0.0  # seconds


async def send_steadily(
    bus: CommandBus,
    total: int,
    rate: float,
    interval: float,
    progress: SenderProgress,
    new_id: Callable[[], uuid.UUID],
) -> None:
    """Send ``total`` commands at ``rate``/s: at each tick what is due by its end.

    The schedule is fixed (tick k at ``start + k * interval``), so a slow send does not
    lower the rate: the next tick, late, sends what was missed with its own, and the
    lateness is counted instead of being absorbed silently."""
    started = time.monotonic()
    tick = 0
    while progress.sent < total:
        due = min(total, round(rate * interval * (tick + 1)))
        if due > progress.sent:
            await bus.send_batch(
                [
                    SendRequest(DOMAIN, "Noop", new_id(), {"n": n}, reply_to=REPLIES)
                    for n in range(progress.sent, due)
                ]
            )
            progress.sent = due
        elapsed = time.monotonic() - started
        # Ticks whose time has passed by a whole interval are merged into the next one.
        next_tick = max(tick + 1, int(elapsed / interval))
        progress.late_ticks += next_tick - tick - 1
        progress.worst_lateness = max(progress.worst_lateness, elapsed - (tick + 1) * interval)
        tick = next_tick
        await asyncio.sleep(max(0.0, started + tick * interval - time.monotonic()))


# -- the reply consumer --------------------------------------------------------------------


async def drain_replies(backend: Any, total: int, finished: asyncio.Event) -> int:
    """Delete replies as they come, recording each one's command id in the same
    transaction; returns when ``total`` were taken, or after ``finished`` once the
    queue is empty."""
    taken = 0
    while taken < total:
        async with backend.transaction() as conn:
            messages = await backend.queue.read(REPLIES, REPLY_BATCH, 60, conn=conn)
            if messages:
                await conn.execute(
                    RECORD_REPLIES,
                    {
                        "ids": [m.message["command_id"] for m in messages],
                        "outcomes": [m.message["outcome"] for m in messages],
                    },
                )
                await backend.queue.delete(REPLIES, [m.msg_id for m in messages], conn=conn)
        taken += len(messages)
        if not messages and finished.is_set():
            break
        if len(messages) < REPLY_BATCH:
            await asyncio.sleep(0.05)
    return taken


# -- vacuum, where the server's autovacuum is off -------------------------------------------


@dataclass
class VacuumProgress:
    runs: int = 0
    seconds: float = 0.0


async def vacuum_steadily(
    url: str, every: float, progress: VacuumProgress, finished: asyncio.Event
) -> None:
    """VACUUM the queue, command and audit tables every ``every`` seconds until
    ``finished``: what autovacuum with the schema's per-table settings and an
    ``autovacuum_naptime`` of ``every`` does, on a server where it is off."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=every)
        if finished.is_set():
            return
        started = time.monotonic()
        await vacuum(url, analyze=False)
        progress.runs += 1
        progress.seconds += time.monotonic() - started


# -- the workers ---------------------------------------------------------------------------


@dataclass
class Workers:
    procs: Sequence[BaseProcess]
    counters: list[Synchronized]  # type: ignore[type-arg]
    go: Any
    stop: Any
    results: Any

    @property
    def completed(self) -> int:
        return sum(c.value for c in self.counters)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def reports(self) -> list[WorkerReport]:
        self.stop.set()
        try:
            found = [self.results.get(timeout=60) for _ in self.procs]
        except queue.Empty:
            raise RuntimeError("a worker process did not report its figures") from None
        reports = sorted(found, key=lambda r: r.index)
        for p in self.procs:
            p.join(timeout=30)
        return reports

    def kill(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


def start_workers(url: str, procs: int, concurrency: int, batch_size: int) -> Workers:
    """``procs`` worker processes of ``benchmarks.throughput``, started and ready."""
    ctx = mp.get_context("spawn")
    go, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(procs)]
    counters = [ctx.Value("q", 0) for _ in range(procs)]
    started = [
        ctx.Process(
            target=worker_process,
            args=(i, url, DOMAIN, concurrency, batch_size, readies[i], go, stop, counters[i]),
            kwargs={"results": results, "profile_dir": None},
            daemon=True,
        )
        for i in range(procs)
    ]
    for p in started:
        p.start()
    workers = Workers(started, counters, go, stop, results)
    for p, ready in zip(started, readies, strict=True):
        if not ready.wait(60):
            workers.kill()
            raise RuntimeError(f"worker process {p.pid} did not start (exit code {p.exitcode})")
    return workers


# -- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    started: dt.datetime  # database clock, just before the first send
    samples: list[figures.Sample]
    sender: SenderProgress
    replies: int
    reports: list[WorkerReport]
    vacuums: VacuumProgress


async def soak(url: str, args: argparse.Namespace, workers: Workers) -> Run:
    backend = await open_backend(url, max_size=4)
    sampler = await asyncio.to_thread(figures.Sampler, url, workers.pids)
    try:
        bus = CommandBus(backend)
        progress = SenderProgress()
        finished = asyncio.Event()
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        workers.go.set()
        new_id = uuid.uuid4 if args.random_ids else uuid7
        sender = asyncio.create_task(
            send_steadily(bus, args.commands, args.rate, args.interval, progress, new_id)
        )
        drainer = asyncio.create_task(drain_replies(backend, args.commands, finished))
        vacuums = VacuumProgress()
        vacuumer = None
        if args.vacuum_every:
            vacuumer = asyncio.create_task(
                vacuum_steadily(url, args.vacuum_every, vacuums, finished)
            )
        samples: list[figures.Sample] = []
        deadline = time.monotonic() + args.commands / args.rate * 3 + 120
        boundary = min(args.window, args.commands)
        while boundary <= args.commands:
            completed = workers.completed
            if completed >= boundary:
                samples.append(
                    await asyncio.to_thread(
                        sampler.take, completed, progress.sent, progress.late_ticks
                    )
                )
                console.print(
                    f"  {completed:,} completed, {progress.sent:,} sent, "
                    f"worker RSS {' / '.join(f'{k / 1024:.1f}' for k in samples[-1].rss_kib)} MiB"
                )
                if boundary == args.commands:
                    break
                boundary = min(boundary + args.window, args.commands)
                continue
            if sender.done() and sender.exception() is not None:
                raise RuntimeError("the sender failed") from sender.exception()
            if time.monotonic() > deadline or not all(p.is_alive() for p in workers.procs):
                raise RuntimeError(
                    f"only {completed:,} of {args.commands:,} commands completed "
                    f"({progress.sent:,} sent; worker processes alive: "
                    f"{sum(p.is_alive() for p in workers.procs)} of {len(workers.procs)})"
                )
            await asyncio.sleep(0.005)
        await sender
        finished.set()
        replies = await asyncio.wait_for(drainer, timeout=120)
        if vacuumer is not None:
            await vacuumer
        return Run(row[0], samples, progress, replies, [], vacuums)
    finally:
        await asyncio.to_thread(sampler.close)
        await backend.close()


def report(url: str, args: argparse.Namespace, run: Run, vacuuming: dict[str, str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        found = figures.windows(conn, DOMAIN, args.window, run.started, args.interval)
        settle_errors = sum(r.settle_errors for r in run.reports)
        checked = figures.check(conn, DOMAIN, settle_errors)
    figures.print_windows(found, run.samples, args.window)
    console.print(
        f"sender: {run.sender.sent:,} commands, {run.sender.late_ticks} late ticks "
        f"(more than {args.interval * 1000:.0f} ms late, merged into the next), worst lateness "
        f"{run.sender.worst_lateness * 1000:.0f} ms; reply consumer: {run.replies:,} replies"
    )
    if args.vacuum_every:
        console.print(
            f"vacuum every {args.vacuum_every:g} s: {run.vacuums.runs} runs, "
            f"{run.vacuums.seconds:.1f} s in all"
        )
    problems = checked.problems(args.commands)
    result = None
    if problems:
        for problem in problems:
            console.print(f"[red]wrong run: {problem}[/]")
    else:
        console.print(
            f"[green]exactly once: {args.commands:,} commands COMPLETED after one attempt, "
            f"one COMPLETED event and one SUCCESS reply each, the queue table empty[/]"
        )
        result = figures.verdict(found, run.samples, args.rate)
        figures.print_verdict(result, args.rate)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "commands": args.commands,
                    "rate": args.rate,
                    "window": args.window,
                    "server": vacuuming,
                    "vacuum_every": args.vacuum_every,
                    "vacuums": asdict(run.vacuums),
                    "windows": [asdict(w) for w in found],
                    "samples": [asdict(s) for s in run.samples],
                    "check": asdict(checked),
                    "problems": problems,
                    "verdict": asdict(result) if result else None,
                    "met": result.met if result else False,
                },
                f,
                indent=2,
            )
    if problems:
        return 2
    assert result is not None
    return 0 if result.met else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="server to use (default: DATABASE_URL or embedded)")
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument(
        "--rate", type=float, default=4_000.0, help="offered rate, commands/s (default 4,000)"
    )
    parser.add_argument("--window", type=int, default=100_000, help="completions per window")
    parser.add_argument("--procs", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=200, help="per worker process")
    parser.add_argument("--batch-size", type=int, default=50, help="commands per claim")
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between the sender's batches"
    )
    parser.add_argument(
        "--random-ids",
        action="store_true",
        help="send random command ids (uuid4) instead of time-ordered ones (uuid7, what "
        "CommandBus.send generates)",
    )
    parser.add_argument(
        "--vacuum-every",
        type=float,
        metavar="SECONDS",
        help="VACUUM the queue, command and audit tables every SECONDS (for a server whose "
        "autovacuum is off; it stands in for autovacuum with that naptime)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the windows and verdict to FILE")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    if args.commands < 1 or args.window < 1 or args.procs < 1 or args.rate <= 0:
        parser.error("--commands, --window, --procs and --rate must be positive")
    if args.interval <= 0 or args.rate * args.interval < 1:
        parser.error("--interval must be positive and send at least one command a tick")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = server_url(args.database_url)
    name, url = fresh_database(server)
    console.print(
        f"Fresh database [cyan]{name}[/] on {conninfo_to_dict(server).get('host')}: "
        f"{args.commands:,} commands at {args.rate:,.0f}/s, {args.procs} worker process(es), "
        f"windows of {args.window:,}"
    )
    try:
        from commandbus.postgres.schema import apply_schema

        asyncio.run(apply_schema(url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(REPLY_TABLE)
            vacuuming = figures.vacuum_settings(conn)
        facts = asyncio.run(server_facts(url))
        if vacuuming.get("autovacuum") != "on" and not args.vacuum_every:
            console.print(
                "[yellow]autovacuum is off on this server: the dead tuples of the queue and "
                "command tables are never vacuumed during the run (see --vacuum-every)[/]"
            )
        workers = start_workers(url, args.procs, args.concurrency, args.batch_size)
        try:
            run = asyncio.run(soak(url, args, workers))
            run.reports = workers.reports()
        except RuntimeError as exc:
            console.print(f"[red]wrong run: {exc}[/]")
            return 2
        finally:
            workers.kill()
        console.print(
            f"[dim]PostgreSQL {facts.get('server_version')} (synchronous_commit="
            f"{facts.get('synchronous_commit')}, shared_buffers={facts.get('shared_buffers')}); "
            f"{os.cpu_count()} CPUs; {args.procs} worker process(es), concurrency "
            f"{args.concurrency}, batch {args.batch_size}; sends every {args.interval:g} s; "
            f"{'random (uuid4)' if args.random_ids else 'time-ordered (uuid7)'} command ids; "
            + ", ".join(f"{name}={value}" for name, value in vacuuming.items())
            + "[/]"
        )
        return report(url, args, run, vacuuming)
    finally:
        if args.keep_db:
            console.print(f"kept database {name}: {url}")
        else:
            drop_database(server, name)


if __name__ == "__main__":
    sys.exit(main())
