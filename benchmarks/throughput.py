"""Command throughput and wake-up latency on PostgreSQL.

Run from the repository root::

    python -m benchmarks.throughput                      # DATABASE_URL or embedded server
    python -m benchmarks.throughput --commands 20000 --workers 1,2 --concurrency 200

In a fresh database (created on the server of ``DATABASE_URL`` and dropped at the end):

1. **send**: ``CommandBus.send_batch`` of ``--commands`` commands (chunks of 5,000 per
   transaction, the bus default) -> sends/s;
2. **end to end**: worker *processes* (one round per value of ``--workers``) run a no-op
   handler; every command is claimed, handled, settled and replied SUCCESS to a reply
   queue -> commands/s from the moment the workers are told to start until the last
   settlement is committed (checked afterwards: queue empty, one reply per command);
3. with ``--single-sends N``: N sequential ``send`` calls -> sends/s;
4. **wake-up latency**: on an idle queue, single ``send`` calls spaced out, a worker that
   polls only every 10 s (so only NOTIFY wakes it) -> send call to handler start p50/p99.

``--profile DIR`` runs the worker processes under cProfile and prints their hottest
functions (profiled runs are slower; use them for where the time goes, not for figures).

Exit status: 0; 2 when a run was wrong (a reply missing, a message left over, a settle
error); with ``--strict``, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing as mp
import os
import platform
import pstats
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.table import Table

from commandbus import CommandBus, HandlerRegistry, SendRequest, Worker
from commandbus.handler import HandlerContext
from commandbus.models import Command

TARGET_SENDS = 20_000.0
TARGET_END_TO_END = 5_000.0
TARGET_P50_MS = 10.0

console = Console(highlight=False, width=max(Console().width, 120))


# -- database ------------------------------------------------------------------------------


def server_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("COMMANDBUS_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from commandbus.embedded import database_url

    return database_url()


def fresh_database(url: str) -> tuple[str, str]:
    """Create an empty database on the server of ``url``; returns (name, its URL)."""
    name = f"cb_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_conninfo(url, dbname=name)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def open_backend(url: str, max_size: int = 4) -> Any:
    from commandbus.postgres import PostgresBackend

    return await PostgresBackend.connect(url, min_size=min(2, max_size), max_size=max_size)


async def vacuum(url: str, analyze: bool = True) -> None:
    """Start each round from a clean table (the previous round left dead rows)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("queue_message", "command", "audit"):
            statement = "VACUUM ANALYZE" if analyze else "VACUUM"
            await conn.execute(
                sql.SQL(statement + " {}").format(sql.Identifier("commandbus", table))
            )


async def analyze(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("queue_message", "command"):
            await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("commandbus", table)))


async def server_facts(url: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        facts: dict[str, str] = {}
        for setting in ("server_version", "synchronous_commit", "shared_buffers", "fsync"):
            cur = await conn.execute("SELECT current_setting(%(name)s)", {"name": setting})
            row = await cur.fetchone()
            facts[setting] = str(row[0]) if row else "?"
        return facts


# -- phase 1: sending ----------------------------------------------------------------------


async def send_phase(url: str, domain: str, count: int) -> float:
    """send_batch ``count`` commands with a reply queue; returns the seconds it took."""
    backend = await open_backend(url)
    try:
        bus = CommandBus(backend)
        requests = [
            SendRequest(domain, "Noop", uuid.uuid4(), {"n": n}, reply_to=f"{domain}__replies")
            for n in range(count)
        ]
        started = time.perf_counter()
        await bus.send_batch(requests)
        return time.perf_counter() - started
    finally:
        await backend.close()


async def single_send_phase(url: str, domain: str, count: int) -> float:
    """``count`` sequential ``send`` calls (each its own transaction); returns seconds."""
    backend = await open_backend(url)
    try:
        bus = CommandBus(backend)
        started = time.perf_counter()
        for n in range(count):
            await bus.send(domain, "Noop", data={"n": n}, reply_to=f"{domain}__replies")
        return time.perf_counter() - started
    finally:
        await backend.close()


# -- phase 2: processing in worker processes -----------------------------------------------


@dataclass
class WorkerReport:
    index: int
    claimed: int
    completed: int
    retried: int
    to_troubleshooting: int
    settle_errors: int
    seconds: float
    cpu_seconds: float = 0.0
    profile: str | None = None


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSample:
    """Cumulative CPU seconds: all CPUs busy, PostgreSQL processes (local server only)."""

    at: float
    busy: float
    postgres: float

    @classmethod
    def take(cls) -> CpuSample | None:
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            busy = (sum(fields[:8]) - idle) / ticks
            pg = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                name = stat[stat.find("(") + 1 : stat.rfind(")")]
                if name.startswith("postgres"):
                    rest = stat[stat.rfind(")") + 2 :].split()
                    pg += int(rest[11]) + int(rest[12])  # utime, stime
            return cls(time.perf_counter(), busy, pg / ticks)
        except (OSError, ValueError, IndexError):
            return None


def _noop_registry(domain: str) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(domain, "Noop")
    async def noop(command: Command, ctx: HandlerContext) -> None:
        return None

    return registry


def worker_process(
    index: int,
    url: str,
    domain: str,
    concurrency: int,
    batch_size: int,
    ready: MpEvent,
    go: MpEvent,
    stop: MpEvent,
    completed: Synchronized,  # type: ignore[type-arg]
    results: Any,
    profile_dir: str | None,
) -> None:
    """Entry point of one worker process (spawned)."""
    report = asyncio.run(
        _worker_main(
            index, url, domain, concurrency, batch_size, ready, go, stop, completed, profile_dir
        )
    )
    results.put(report)


async def _worker_main(
    index: int,
    url: str,
    domain: str,
    concurrency: int,
    batch_size: int,
    ready: MpEvent,
    go: MpEvent,
    stop: MpEvent,
    completed: Synchronized,  # type: ignore[type-arg]
    profile_dir: str | None,
) -> WorkerReport:
    backend = await open_backend(url, max_size=4)
    try:
        worker = Worker(
            backend, domain, _noop_registry(domain), visibility_timeout=120, batch_size=batch_size
        )
        ready.set()
        await asyncio.to_thread(go.wait)
        profiler = cProfile.Profile() if profile_dir else None
        if profiler:
            profiler.enable()
        cpu_before = _own_cpu()
        started = time.perf_counter()
        runner = asyncio.create_task(
            worker.run(concurrency=concurrency, poll_interval=0.05, use_notify=True)
        )
        while not stop.is_set() and not runner.done():
            completed.value = worker.stats.completed
            await asyncio.sleep(0.002)
        completed.value = worker.stats.completed
        seconds = time.perf_counter() - started
        cpu_seconds = _own_cpu() - cpu_before
        await worker.stop(timeout=30)
        await runner
        profile_path = None
        if profiler:
            profiler.disable()
            profile_path = os.path.join(profile_dir or ".", f"worker-{os.getpid()}.prof")
            profiler.dump_stats(profile_path)
        s = worker.stats
        return WorkerReport(
            index,
            s.claimed,
            s.completed,
            s.retried,
            s.to_troubleshooting,
            s.settle_errors,
            seconds,
            cpu_seconds,
            profile_path,
        )
    finally:
        await backend.close()


@dataclass
class RoundResult:
    workers: int
    commands: int
    send_seconds: float
    process_seconds: float
    reports: list[WorkerReport] = field(default_factory=list)
    replies: int = 0
    left_in_queue: int = 0
    machine_busy: float | None = None  # fraction of all CPUs busy while processing
    postgres_cpu: float | None = None  # CPU seconds used by PostgreSQL processes

    @property
    def worker_cpu(self) -> float:
        return sum(w.cpu_seconds for w in self.reports)

    @property
    def sends_per_second(self) -> float:
        return self.commands / self.send_seconds

    @property
    def per_second(self) -> float:
        return self.commands / self.process_seconds


async def queue_depths(url: str, domain: str) -> tuple[int, int]:
    from commandbus.postgres import PostgresBackend  # noqa: F401 - same adapter as workers

    backend = await open_backend(url, max_size=1)
    try:
        left = await backend.queue.depth(f"{domain}__commands")
        replies = await backend.queue.depth(f"{domain}__replies")
        return left, replies
    finally:
        await backend.close()


def process_round(
    url: str,
    workers: int,
    commands: int,
    concurrency: int,
    batch_size: int,
    profile_dir: str | None,
    analyze_after_send: bool = False,
    round_number: int = 1,
) -> RoundResult:
    domain = f"bench_r{round_number}_w{workers}"
    asyncio.run(vacuum(url))
    send_seconds = asyncio.run(send_phase(url, domain, commands))
    console.print(
        f"  sent {commands:,} commands in {send_seconds:.2f} s "
        f"({commands / send_seconds:,.0f}/s); starting {workers} worker process(es)"
    )
    if analyze_after_send:
        asyncio.run(analyze(url))
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    stop = ctx.Event()
    results = ctx.Queue()
    readies = [ctx.Event() for _ in range(workers)]
    counters = [ctx.Value("q", 0) for _ in range(workers)]
    procs = [
        ctx.Process(
            target=worker_process,
            args=(
                i,
                url,
                domain,
                concurrency,
                batch_size,
                readies[i],
                go,
                stop,
                counters[i],
                results,
                profile_dir,
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for i, ready in enumerate(readies):
        deadline = time.perf_counter() + 60
        while not ready.wait(0.1):
            if not procs[i].is_alive():
                raise RuntimeError(f"worker process {i} exited (code {procs[i].exitcode})")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"worker process {i} did not start within 60 s")
    cpu_start = CpuSample.take()
    started = time.perf_counter()
    go.set()
    deadline = started + max(120.0, commands / 200)
    while True:
        done = sum(c.value for c in counters)
        if done >= commands:
            break
        if time.perf_counter() > deadline:
            stop.set()
            raise RuntimeError(f"only {done} of {commands} commands completed in time")
        if any(not p.is_alive() for p in procs):
            raise RuntimeError("a worker process died")
        time.sleep(0.002)
    process_seconds = time.perf_counter() - started
    cpu_end = CpuSample.take()
    stop.set()
    reports = sorted((results.get(timeout=60) for _ in procs), key=lambda r: r.index)
    for p in procs:
        p.join(timeout=30)
    left, replies = asyncio.run(queue_depths(url, domain))
    result = RoundResult(workers, commands, send_seconds, process_seconds, reports, replies, left)
    if cpu_start is not None and cpu_end is not None:
        wall = cpu_end.at - cpu_start.at
        result.machine_busy = (cpu_end.busy - cpu_start.busy) / (wall * (os.cpu_count() or 1))
        result.postgres_cpu = cpu_end.postgres - cpu_start.postgres
    return result


# -- phase 3: wake-up latency --------------------------------------------------------------


@dataclass
class LatencyResult:
    samples: list[float]  # ms, send call start -> handler start
    send_calls: list[float]  # ms, duration of the send call itself
    after_commit: list[float]  # ms, send call returned (committed) -> handler start
    listening: bool

    def pct(self, q: float, values: Sequence[float] | None = None) -> float:
        data = sorted(values if values is not None else self.samples)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[k]


async def latency_phase(url: str, samples: int, spacing: float) -> LatencyResult:
    domain = "bench_latency"
    backend = await open_backend(url, max_size=4)
    started_at: dict[UUID, float] = {}
    all_started = asyncio.Event()
    registry = HandlerRegistry()

    @registry.handler(domain, "Ping")
    async def ping(command: Command, ctx: HandlerContext) -> None:
        started_at[command.command_id] = time.perf_counter()
        if len(started_at) >= samples:
            all_started.set()

    try:
        bus = CommandBus(backend)
        # poll_interval 10 s: within the measurement only a notification wakes the worker.
        worker = Worker(backend, domain, registry, batch_size=10)
        runner = asyncio.create_task(
            worker.run(concurrency=10, poll_interval=10.0, use_notify=True)
        )
        await asyncio.sleep(0.5)  # LISTEN in place, first (empty) claim done: idle
        sent_at: dict[UUID, float] = {}
        returned_at: dict[UUID, float] = {}
        send_calls: list[float] = []
        for _ in range(samples):
            cid = uuid.uuid4()
            t0 = time.perf_counter()
            await bus.send(domain, "Ping", cid, {})
            t1 = time.perf_counter()
            sent_at[cid] = t0
            returned_at[cid] = t1
            send_calls.append((t1 - t0) * 1000)
            await asyncio.sleep(spacing)
        await asyncio.wait_for(all_started.wait(), timeout=30)
        listening = bool(getattr(backend, "listening", True))
        await worker.stop(timeout=10)
        await runner
    finally:
        await backend.close()
    latencies = [(started_at[c] - sent_at[c]) * 1000 for c in sent_at]
    after_commit = [(started_at[c] - returned_at[c]) * 1000 for c in sent_at]
    return LatencyResult(latencies, send_calls, after_commit, listening)


# -- report --------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def report(
    rounds: list[RoundResult],
    latency: LatencyResult | None,
    facts: dict[str, str],
    args: argparse.Namespace,
) -> tuple[bool, bool]:
    """Print the figures; returns (every target met, every run correct)."""
    table = Table(title="commandbus throughput", title_justify="left")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    ok = True
    for r in rounds:
        good = r.sends_per_second >= TARGET_SENDS
        ok &= good
        table.add_row(
            f"send_batch, {r.commands:,} commands (before the {r.workers}-worker round)",
            f"{r.sends_per_second:,.0f} /s",
            f">= {TARGET_SENDS:,.0f} /s",
            mark(good),
        )
    for r in rounds:
        good = r.per_second >= TARGET_END_TO_END
        ok &= good
        per = ", ".join(f"{w.completed:,}" for w in r.reports)
        table.add_row(
            f"end to end, {r.workers} worker process(es) [{per}]",
            f"{r.per_second:,.0f} /s",
            f">= {TARGET_END_TO_END:,.0f} /s",
            mark(good),
        )
    if latency is not None:
        p50 = latency.pct(50)
        good = p50 < TARGET_P50_MS
        ok &= good
        table.add_row(
            f"wake-up send -> handler, p50 ({len(latency.samples)} sends, NOTIFY)",
            f"{p50:.2f} ms",
            f"< {TARGET_P50_MS:g} ms",
            mark(good),
        )
        table.add_row("wake-up p90", f"{latency.pct(90):.2f} ms", "", "")
        table.add_row("wake-up p99", f"{latency.pct(99):.2f} ms", "", "")
        table.add_row("wake-up max", f"{max(latency.samples):.2f} ms", "", "")
        table.add_row(
            "send() returned -> handler start, p50 / p99",
            f"{latency.pct(50, latency.after_commit):.2f} / "
            f"{latency.pct(99, latency.after_commit):.2f} ms",
            "",
            "",
        )
        table.add_row(
            "single send() call (BEGIN, INSERT, COMMIT), p50",
            f"{latency.pct(50, latency.send_calls):.2f} ms",
            "",
            "",
        )
    console.print(table)
    details = Table(title="rounds", title_justify="left")
    for header in (
        "workers",
        "process s",
        "machine busy",
        "of it ours",
        "worker µs/cmd",
        "postgres µs/cmd",
        "claimed",
        "completed",
        "settle errors",
        "replies",
        "left",
    ):
        details.add_column(header, justify="right")
    for r in rounds:
        details.add_row(
            str(r.workers),
            f"{r.process_seconds:.2f}",
            f"{r.machine_busy:.0%}" if r.machine_busy is not None else "?",
            _ours(r),
            f"{r.worker_cpu / r.commands * 1e6:.0f}",
            f"{r.postgres_cpu / r.commands * 1e6:.0f}" if r.postgres_cpu is not None else "?",
            str(sum(w.claimed for w in r.reports)),
            str(sum(w.completed for w in r.reports)),
            str(sum(w.settle_errors for w in r.reports)),
            f"{r.replies:,}",
            str(r.left_in_queue),
        )
    console.print(details)
    console.print(
        f"[dim]PostgreSQL {facts.get('server_version')} (synchronous_commit="
        f"{facts.get('synchronous_commit')}, fsync={facts.get('fsync')}, shared_buffers="
        f"{facts.get('shared_buffers')}); {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}; worker concurrency {args.concurrency}, "
        f"batch size {args.batch_size}; statistics "
        f"{'analyzed after the send' if args.analyze else 'as before the send'}[/]"
    )
    correct = True
    for r in rounds:
        settle_errors = sum(w.settle_errors for w in r.reports)
        if r.replies != r.commands or r.left_in_queue or settle_errors:
            console.print(
                f"[red]round with {r.workers} worker(s): {r.replies} replies for "
                f"{r.commands} commands, {r.left_in_queue} left in the queue, "
                f"{settle_errors} settle errors[/]"
            )
            correct = False
    console.print(
        "[dim]machine busy: all CPUs, any process; of it ours: the worker processes and "
        "PostgreSQL. µs/cmd: CPU time per command.[/]"
    )
    return ok, correct


def _ours(r: RoundResult) -> str:
    """Share of all CPUs used by the workers and PostgreSQL (the rest: other processes)."""
    if r.postgres_cpu is None:
        return "?"
    capacity = r.process_seconds * (os.cpu_count() or 1)
    return f"{(r.worker_cpu + r.postgres_cpu) / capacity:.0%}"


def print_profiles(rounds: list[RoundResult], top: int) -> None:
    for r in rounds:
        for w in r.reports:
            if not w.profile:
                continue
            console.rule(f"profile: {r.workers} worker(s), process {w.index} ({w.profile})")
            stats = pstats.Stats(w.profile, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(top)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="server to use (default: DATABASE_URL or embedded)")
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker process counts, one round each, e.g. '1', '2' or '1,2' (default)",
    )
    parser.add_argument("--concurrency", type=int, default=200, help="per worker process")
    parser.add_argument("--batch-size", type=int, default=50, help="commands per claim")
    parser.add_argument(
        "--single-sends",
        type=int,
        default=0,
        metavar="N",
        help="also time N sequential send() calls (one transaction each)",
    )
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--latency-spacing", type=float, default=0.02, help="seconds")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--profile", metavar="DIR", help="cProfile worker processes into DIR")
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE the tables after sending (planner statistics that know the new "
        "commands); without it the workers start on the statistics of before the send, "
        "like a fresh install or a new domain does",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (default: 0)"
    )
    args = parser.parse_args(argv)
    try:
        args.worker_counts = [int(x) for x in str(args.workers).split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers: expected numbers like '1,2', got {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: give one or more counts >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = server_url(args.database_url)
    name, url = fresh_database(server)
    console.print(f"Fresh database [cyan]{name}[/] on {conninfo_to_dict(server).get('host')}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    try:
        from commandbus.postgres.schema import apply_schema

        asyncio.run(apply_schema(url))
        facts = asyncio.run(server_facts(url))
        rounds = []
        for number, workers in enumerate(args.worker_counts, start=1):
            console.print(f"[bold]Round: {workers} worker process(es)[/]")
            rounds.append(
                process_round(
                    url,
                    workers,
                    args.commands,
                    args.concurrency,
                    args.batch_size,
                    args.profile,
                    analyze_after_send=args.analyze,
                    round_number=number,
                )
            )
            console.print(
                f"  processed in {rounds[-1].process_seconds:.2f} s "
                f"({rounds[-1].per_second:,.0f} commands/s end to end)"
            )
        if args.single_sends:
            asyncio.run(vacuum(url))
            seconds = asyncio.run(single_send_phase(url, "bench_single", args.single_sends))
            console.print(
                f"sent {args.single_sends:,} commands one at a time in {seconds:.2f} s "
                f"({args.single_sends / seconds:,.0f}/s)"
            )
        latency = None
        if not args.no_latency:
            console.print("[bold]Wake-up latency[/] on an idle queue …")
            asyncio.run(vacuum(url))
            latency = asyncio.run(latency_phase(url, args.latency_samples, args.latency_spacing))
            if not latency.listening:
                console.print("[red]LISTEN was not active: latency is the polling interval[/]")
        targets_met, correct = report(rounds, latency, facts, args)
        if args.profile:
            print_profiles(rounds, args.profile_top)
        if not correct:
            return 2
        return 1 if args.strict and not targets_met else 0
    finally:
        if args.keep_db:
            console.print(f"kept database {name}: {url}")
        else:
            drop_database(server, name)


if __name__ == "__main__":
    sys.exit(main())
