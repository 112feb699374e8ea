"""Run StatementReport processes end to end and show what happened.

    python -m examples.statement_report.run                  # PostgreSQL (see below)
    python -m examples.statement_report.run --memory         # in memory, no database
    python -m examples.statement_report.run -n 50 --business-rate 0.1 --transient-rate 0.2

PostgreSQL: ``COMMANDBUS_DATABASE_URL`` / ``DATABASE_URL`` if set, else an embedded server
in ``.commandbus/pgdata``; the schema is applied first (idempotent). The runner starts
``-n`` processes, runs a worker and a reply router until every process has finished or
waits for an operator (a command in the troubleshooting queue), then prints the outcome
per status and the audit trail of one process of each outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)
from examples.statement_report.process import StatementReportProcess

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend
from commandbus.process import ProcessReplyRouter, ProcessStatus

SETTLED = [
    ProcessStatus.COMPLETED,
    ProcessStatus.COMPENSATED,
    ProcessStatus.FAILED,
    ProcessStatus.CANCELED,
    ProcessStatus.WAITING_FOR_TSQ,
]


async def open_backend(memory: bool) -> Backend:
    if memory:
        from commandbus.memory import InMemoryBackend

        return InMemoryBackend()
    from commandbus.embedded import database_url
    from commandbus.postgres import PostgresBackend, apply_schema

    url = database_url()
    await apply_schema(url)
    backend: Backend = await PostgresBackend.connect(url, min_size=2, max_size=10)
    return backend


async def run(args: argparse.Namespace) -> int:
    backend = await open_backend(args.memory)
    rates = FailureRates(args.transient_rate, args.permanent_rate, args.business_rate)
    config = ServiceConfig(rates={t: rates for t in args.fail_on}, seed=args.seed)
    registry = HandlerRegistry()
    register_statement_handlers(registry, config)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=3, backoff_schedule=[0.1]))
    manager = StatementReportProcess(bus)
    worker = Worker(backend, "reporting", registry, retry_policy=bus.retry_policy)
    router = ProcessReplyRouter(backend, managers=[manager])
    tasks = [
        asyncio.create_task(worker.run(concurrency=20, poll_interval=0.1)),
        asyncio.create_task(router.run(concurrency=2, poll_interval=0.1)),
    ]
    started = time.perf_counter()
    try:
        pids = await manager.start_many(
            [
                {
                    "from_date": "2024-01-01",
                    "to_date": "2024-12-31",
                    "account_list": [f"ACC-{i:03d}", f"ACC-{i + 1:03d}"],
                    "output_type": ("pdf", "html", "csv")[i % 3],
                }
                for i in range(args.processes)
            ]
        )
        wanted = set(pids)
        while True:
            settled = {p.process_id for p in await manager.find_by_status(SETTLED)} & wanted
            if len(settled) == len(wanted):
                break
            if time.perf_counter() - started > args.timeout:
                print(f"timed out: {len(settled)} of {len(wanted)} settled")
                break
            await asyncio.sleep(0.1)
    finally:
        await worker.stop(5)
        await router.stop(5)
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started

    processes = [await manager.get(pid) for pid in pids]
    outcome = Counter(p.status.value for p in processes if p is not None)
    print(f"{args.processes} StatementReport processes in {elapsed:.2f}s")
    for status, count in sorted(outcome.items()):
        print(f"  {status:<16} {count}")
    shown: set[str] = set()
    for p in processes:
        if p is None or p.status.value in shown:
            continue
        shown.add(p.status.value)
        print(f"\n{p.status.value}: process {p.process_id}")
        if p.error_code:
            print(f"  error: {p.error_code}: {p.error_message}")
        for entry in await manager.get_audit_trail(p.process_id):
            reply = entry.reply_outcome.value if entry.reply_outcome else "(no reply)"
            print(
                f"  {entry.kind.value:<12} {entry.step_name:<28} {entry.command_type:<26} {reply}"
            )
        if p.status is ProcessStatus.COMPLETED:
            print(f"  report: {p.state.rendered_file_path}")
    await backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run StatementReport processes end to end.")
    parser.add_argument("-n", "--processes", type=int, default=20)
    parser.add_argument("--memory", action="store_true", help="use the in-memory backend")
    parser.add_argument("--transient-rate", type=float, default=0.1)
    parser.add_argument("--permanent-rate", type=float, default=0.0)
    parser.add_argument("--business-rate", type=float, default=0.05)
    parser.add_argument(
        "--fail-on",
        nargs="*",
        default=["StatementQuery", "StatementDataAggregation", "StatementRender"],
        help="command types that fail at the given rates",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    args: Any = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
