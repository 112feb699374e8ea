"""What tracing and metrics cost: processes end to end with both on, against both off.

Run from the repository root::

    python -m benchmarks.observability                    # 3 rounds of 2,000 processes
    python -m benchmarks.observability --rounds 5 --processes 3000
    python -m benchmarks.observability --only none        # A/A: how far noise moves a ratio
    python -m benchmarks.observability --only tracing --provider noop   # the library, no SDK

Each round runs the process benchmark's workload twice — StatementReport processes
started with ``start_many`` while ``--procs`` OS processes each run a ``Worker`` and a
``ProcessReplyRouter`` (every command claimed, handled, settled, replied, and every reply
decided) — once with telemetry off and once with ``combine(PrometheusMetrics(),
OpenTelemetryTracing(provider))`` on the bus, the workers and the routers, where the
provider is a real OpenTelemetry SDK ``TracerProvider`` with a ``BatchSpanProcessor``
whose exporter drops the spans (the SDK's cost, not a collector's). The order alternates
between rounds and each run gets a fresh database. The machine is noisy: the figure is
the median of the rounds' ratios ``on / off``. Target: >= 0.85. Each round also prints
the CPU time the worker and router processes spent per process (their own threads and
the SDK's), which other load on a shared machine disturbs less than the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from benchmarks.processes import INPUT, drop_database, fresh_database, server_url

TARGET_RATIO = 0.85


#: What "on" turns on: both (the figure that counts), one of them to see its share, or
#: nothing: an A/A run whose ratio should be 1 and whose spread is the machine's noise.
PARTS = {
    "both": ("metrics", "tracing"),
    "metrics": ("metrics",),
    "tracing": ("tracing",),
    "none": (),
}

#: The tracer provider behind the library's tracing: the real SDK (the figure that
#: counts) or the API's no-op provider (every hook, header and attribute function of the
#: library runs, the SDK does nothing: the library's own share).
PROVIDERS = ("sdk", "noop")


def _telemetry(
    on: bool,
    sample_ratio: float = 1.0,
    parts: str = "both",
    provider_kind: str = "sdk",
    skip_spans: Sequence[str] = (),
) -> Any:
    """The telemetry of a runner: none, or metrics and traces through the real SDK (every
    trace recorded, or ``sample_ratio`` of them: the SDK's parent-based ratio sampler), or
    through the API's no-op provider."""
    chosen = PARTS[parts]
    if not on or not chosen:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import NoOpTracerProvider

    from commandbus.metrics import PrometheusMetrics
    from commandbus.telemetry import combine
    from commandbus.tracing import OpenTelemetryTracing

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider: Any = NoOpTracerProvider()
    if provider_kind == "sdk":
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return combine(
        PrometheusMetrics() if "metrics" in chosen else None,
        OpenTelemetryTracing(provider, skip_spans=skip_spans) if "tracing" in chosen else None,
    )


def _telemetry_for(on: bool, args: argparse.Namespace) -> Any:
    return _telemetry(on, args.sample_ratio, args.only, args.provider, args.skip_spans)


def _runner(
    dsn: str, on: bool, args: argparse.Namespace, stop: MpEvent, ready: Any, cpu: Any
) -> None:
    asyncio.run(_run(dsn, on, args, stop, ready, cpu))


async def _run(
    dsn: str, on: bool, args: argparse.Namespace, stop: MpEvent, ready: Any, cpu: Any
) -> None:
    from examples.statement_report import StatementReportProcess
    from examples.statement_report.handlers import register_statement_handlers

    from commandbus import CommandBus, HandlerRegistry, Worker
    from commandbus.postgres import PostgresBackend
    from commandbus.process import ProcessReplyRouter

    telemetry = _telemetry_for(on, args)
    backend = await PostgresBackend.connect(dsn, min_size=2, max_size=12)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    manager = StatementReportProcess(CommandBus(backend, telemetry=telemetry))
    worker = Worker(backend, "reporting", registry, batch_size=50, telemetry=telemetry)
    router = ProcessReplyRouter(backend, managers=[manager], batch_size=100)
    tasks = [
        asyncio.create_task(worker.run(concurrency=200, poll_interval=0.05)),
        asyncio.create_task(router.run(concurrency=2, poll_interval=0.05)),
    ]
    with ready.get_lock():
        ready.value += 1
    started = time.process_time()  # this process's CPU (all its threads: the SDK's too)
    while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing event, not an asyncio one
        await asyncio.sleep(0.05)
    with cpu.get_lock():
        cpu.value += time.process_time() - started
    await worker.stop(5)
    await router.stop(5)
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.close()


async def _drive(dsn: str, on: bool, args: argparse.Namespace) -> float:
    from examples.statement_report import StatementReportProcess

    from commandbus import CommandBus
    from commandbus.postgres import PostgresBackend

    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=4)
    manager = StatementReportProcess(CommandBus(backend, telemetry=_telemetry_for(on, args)))
    processes: int = args.processes
    timeout: float = args.timeout
    started = time.perf_counter()
    remaining = processes
    while remaining > 0:
        n = min(250, remaining)
        await manager.start_many([dict(INPUT) for _ in range(n)])
        remaining -= n
    async with backend.pool.connection() as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM commandbus.process WHERE status = 'COMPLETED'"
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) >= processes:
                break
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"timed out with {row[0] if row else 0} of {processes}")
            await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await backend.close()
    return processes / elapsed


def one_run(url: str, on: bool, args: argparse.Namespace) -> tuple[float, float]:
    """Processes/s of one run in a fresh database, and the CPU seconds the worker and
    router processes spent per process (less sensitive to other load on the machine
    than the throughput)."""
    from commandbus.postgres import apply_schema

    name, dsn = fresh_database(url)
    try:
        asyncio.run(apply_schema(dsn))
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        ready = ctx.Value("i", 0)
        cpu = ctx.Value("d", 0.0)
        procs = [
            ctx.Process(target=_runner, args=(dsn, on, args, stop, ready, cpu)) for _ in range(2)
        ]
        for p in procs:
            p.start()
        while ready.value < len(procs):
            time.sleep(0.05)
        try:
            throughput = asyncio.run(_drive(dsn, on, args))
        finally:
            stop.set()
            for p in procs:
                p.join(30)
        return throughput, cpu.value / args.processes
    finally:
        drop_database(url, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--processes", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=1.0,
        help="fraction of traces the SDK records (1: every one, the default)",
    )
    parser.add_argument("--only", choices=sorted(PARTS), default="both", help="what 'on' turns on")
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="sdk",
        help="tracer provider: the OpenTelemetry SDK (default) or the API's no-op one",
    )
    parser.add_argument(
        "--skip-spans",
        type=lambda text: [name for name in text.split(",") if name],
        default=[],
        help="span names, comma-separated, that the tracing does not record "
        "(OpenTelemetryTracing(skip_spans=...)), e.g. commandbus.process.decide",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    url = server_url(args.database_url)
    ratios, cpu_ratios = [], []
    for round_no in range(args.rounds):
        order = (False, True) if round_no % 2 == 0 else (True, False)
        runs = {on: one_run(url, on, args) for on in order}
        (off, off_cpu), (on, on_cpu) = runs[False], runs[True]
        ratio = on / off
        ratios.append(ratio)
        cpu_ratios.append(off_cpu / on_cpu)
        print(
            f"round {round_no + 1}: off {off:6.0f} processes/s, on {on:6.0f} processes/s, "
            f"ratio {ratio:.3f}; worker+router CPU per process off {off_cpu * 1e6:4.0f} us, "
            f"on {on_cpu * 1e6:4.0f} us"
        )
    median = statistics.median(ratios)
    print(
        f"{args.processes:,} StatementReport processes per run (3 commands and 3 replies "
        f"each), 2 worker+router processes, {os.cpu_count()} CPUs"
    )
    tracing = "tracing" in PARTS[args.only]
    if tracing and args.provider == "noop":
        print("tracer provider: the API's NoOpTracerProvider (no SDK)")
    elif tracing:
        print(f"traces recorded: {args.sample_ratio:.0%} (the SDK's parent-based ratio sampler)")
        if args.skip_spans:
            print(f"spans not recorded: {', '.join(args.skip_spans)}")
    what = " and ".join(PARTS[args.only]) or "nothing (A/A)"
    print(
        f"CPU of the worker and router processes, off / on: "
        f"{statistics.median(cpu_ratios):.3f} (median; what throughput would be if CPU "
        "bound by them alone)"
    )
    print(f"{what} on / off: {median:.3f} (median of {len(ratios)}; target >= {TARGET_RATIO:.2f})")
    return 0 if median >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
