"""One worker or router OS process of the chaos run (the driver starts and kills these).

    python -m chaos.agent worker --dsn URL --name worker-0 --status-file PATH --seed 7
    python -m chaos.agent router --dsn URL --name router-0 --status-file PATH

``worker``: a ``Worker`` for domain ``chaos`` (the transactional ``Touch`` handler) and
one for ``reporting`` (the StatementReport step handlers), sharing one backend.
``router``: a ``ProcessReplyRouter`` for the StatementReport processes, and the
subscription and ``ProcessEventRouter`` of the event-driven ``ChaosSteps`` processes
(``chaos/events_workload.py``); workers also run the ``chaos_events`` domain.

The agent does nothing to survive a PostgreSQL restart beyond what the library does: if
``Worker.run`` or ``ProcessReplyRouter.run`` returns or raises while not asked to stop,
the agent logs it and exits with status 3 (the driver reports that as a finding). Only
the initial connection is retried here, because an agent restarted after a kill may come
up while the server is restarting, and that is not what is under test.

Every half second the agent replaces its status file (JSON: pid, counters, whether LISTEN
is up, a wall-clock heartbeat), from which the driver tells a hung agent (stale heartbeat,
or no progress while its queue has visible work) from a busy one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.events_workload import EVENT_DOMAIN, ChaosSteps
from chaos.workload import (
    COMMAND_DOMAIN,
    PROCESS_DOMAIN,
    RETRY_POLICY,
    build_registry,
    statement_manager,
)
from commandbus import Worker
from commandbus.events import Subscription
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter
from commandbus.process_manager import ProcessEngine, ProcessEventRouter

EXIT_UNEXPECTED = 3

# Short leases: a killed worker's claimed messages come back after this many seconds.
# Handlers take milliseconds, so a live worker never outlives its lease.
VISIBILITY_TIMEOUT = 5.0
WORKER_CONCURRENCY = 40
ROUTER_CONCURRENCY = 2
POLL_INTERVAL = 0.1


async def connect(dsn: str, max_size: int, deadline: float) -> PostgresBackend:
    """Open the backend, retrying until ``deadline`` (monotonic) while the server is down."""
    while True:
        try:
            return await PostgresBackend.connect(dsn, min_size=2, max_size=max_size, timeout=10)
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            logging.getLogger("chaos.agent").warning("connect failed (%s); retrying", exc)
            await asyncio.sleep(0.5)


def write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)  # atomic: the driver never reads half a file


async def run_agent(args: argparse.Namespace) -> int:
    log = logging.getLogger("chaos.agent")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    # Pool: one connection per transactional handler in flight, plus claims and settles.
    size = WORKER_CONCURRENCY + 20 if args.role == "worker" else ROUTER_CONCURRENCY + 6
    backend = await connect(args.dsn, size, time.monotonic() + 60)
    consumers: list[Worker | ProcessReplyRouter] = []
    # Consumers of the event-driven processes (no stats of their own).
    event_consumers: list[Subscription | ProcessEventRouter] = []
    tasks: list[asyncio.Task[None]] = []
    if args.role == "worker":
        registry = build_registry(args.seed)
        for domain in (COMMAND_DOMAIN, PROCESS_DOMAIN, EVENT_DOMAIN):
            worker = Worker(
                backend,
                domain,
                registry,
                visibility_timeout=VISIBILITY_TIMEOUT,
                retry_policy=RETRY_POLICY,
                batch_size=20,
            )
            consumers.append(worker)
            run = worker.run(concurrency=WORKER_CONCURRENCY // 2, poll_interval=POLL_INTERVAL)
            tasks.append(asyncio.create_task(run, name=f"worker-{domain}"))
    else:
        router = ProcessReplyRouter(
            backend,
            managers=[statement_manager(backend)],
            batch_size=100,
            visibility_timeout=VISIBILITY_TIMEOUT,
        )
        consumers.append(router)
        run = router.run(concurrency=ROUTER_CONCURRENCY, poll_interval=POLL_INTERVAL)
        tasks.append(asyncio.create_task(run, name="router"))
        engine = ProcessEngine(backend, ChaosSteps())
        subscription = engine.subscription(retry_delay=0.1)
        events = ProcessEventRouter(engine, visibility_timeout=VISIBILITY_TIMEOUT)
        event_consumers += [subscription, events]
        runs = {
            "subscription": subscription.run(poll_interval=POLL_INTERVAL),
            "event-router": events.run(poll_interval=POLL_INTERVAL),
        }
        tasks += [asyncio.create_task(r, name=name) for name, r in runs.items()]

    def status(ready: bool) -> dict[str, Any]:
        stats: dict[str, int] = {}
        for consumer in consumers:
            for key, value in asdict(consumer.stats).items():
                stats[key] = stats.get(key, 0) + int(value)
        return {
            "name": args.name,
            "role": args.role,
            "pid": os.getpid(),
            "ready": ready,
            "heartbeat": time.time(),
            "listening": backend.listening,
            "stats": stats,
        }

    exit_code = 0
    stop_waiter = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            write_status(args.status_file, status(ready=True))
            done, _ = await asyncio.wait(
                [stop_waiter, *tasks], timeout=0.5, return_when=asyncio.FIRST_COMPLETED
            )
            ended = [t for t in done if t is not stop_waiter]
            if ended and not stop.is_set():
                # The library's run() loops are meant to run until stop(): this is a bug.
                for task in ended:
                    error = task.exception() if not task.cancelled() else None
                    log.error(
                        "UNEXPECTED: %s ended while running: %r",
                        task.get_name(),
                        error,
                        exc_info=error,
                    )
                exit_code = EXIT_UNEXPECTED
                break
    finally:
        for consumer in [*consumers, *event_consumers]:
            with contextlib.suppress(Exception):
                await consumer.stop(5)
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_waiter.cancel()
        write_status(args.status_file, status(ready=False))
        await backend.close()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A chaos-run worker or router process.")
    parser.add_argument("role", choices=["worker", "router"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--status-file", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {args.name} pid={os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run_agent(args))


if __name__ == "__main__":
    raise SystemExit(main())
