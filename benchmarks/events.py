"""Event store, subscription and event-driven process throughput on PostgreSQL.

Run from the repository root::

    python -m benchmarks.events              # the default sizes
    python -m benchmarks.events --events 200000 --processes 5000

In a fresh database (on the server of ``DATABASE_URL``, or the embedded one; dropped at
the end), one after the other:

1. **append**: ``--events`` events in batches of ``--batch`` to 100 streams (4 writers),
   beside the floor — the same rows inserted by one plain ``INSERT … SELECT unnest`` per
   batch into a table of the same shape, no versions, no checks: the ratio says what the
   store's guarantees cost;
2. **subscription**: a no-op handler over all those events, end to end (checkpoint
   included), batches of 500;
3. **processes**: ``--processes`` three-step processes, each started by an event, from
   the first start event appended to the last completion, after ``--warmup`` processes
   run untimed (the consumers' connections opened and their statements prepared);
   ``--procs`` OS processes each run a worker, a router and a consumer of the
   subscription;
4. **load**: loading a process whose stream has 10 … 10,000 events, with snapshots every
   50 events and without: with them the time stays flat.

Targets (2-core machine): append ≥ 20,000 events/s, subscription ≥ 10,000 events/s,
processes ≥ 1,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.processes import drop_database, fresh_database, server_url

TARGET_APPEND = 20_000.0
TARGET_SUBSCRIPTION = 10_000.0
TARGET_PROCESSES = 1_000.0

FLOOR_TABLE = """
CREATE TABLE floor_event (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_name text NOT NULL, event_id uuid NOT NULL UNIQUE, event_type text NOT NULL,
    data jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())
"""
FLOOR_INSERT = b"""
INSERT INTO floor_event (stream_name, event_id, event_type, data)
SELECT %(stream)s, u.id, u.type, u.data::jsonb
FROM unnest(%(ids)b::uuid[], %(types)b::text[], %(data)b::text[]) AS u(id, type, data)
"""


@dataclass
class Steps:
    steps: int = 3


async def append_phase(dsn: str, events: int, batch: int) -> tuple[float, float]:
    """(store events/s, floor events/s)."""
    from uuid import uuid4

    from psycopg_pool import AsyncConnectionPool

    from commandbus.events import EventStore, NewEvent

    async with AsyncConnectionPool(dsn, min_size=4, max_size=4, open=False) as pool:
        store = EventStore(pool)
        batches = events // batch

        async def store_writer(offset: int) -> None:
            for b in range(offset, batches, 4):
                chunk = [NewEvent("Happened", {"n": b * batch + i}) for i in range(batch)]
                await store.append(f"bench-{b % 100}", chunk)

        started = time.perf_counter()
        await asyncio.gather(*(store_writer(w) for w in range(4)))
        store_rate = batches * batch / (time.perf_counter() - started)

        async with pool.connection() as conn:
            await conn.execute(FLOOR_TABLE)

        async def floor_writer(offset: int) -> None:
            for b in range(offset, batches, 4):
                params = {
                    "stream": f"bench-{b % 100}",
                    "ids": [uuid4() for _ in range(batch)],
                    "types": ["Happened"] * batch,
                    "data": [f'{{"n":{b * batch + i}}}' for i in range(batch)],
                }
                async with pool.connection() as conn:
                    await conn.execute(FLOOR_INSERT, params)

        started = time.perf_counter()
        await asyncio.gather(*(floor_writer(w) for w in range(4)))
        floor_rate = batches * batch / (time.perf_counter() - started)
    return store_rate, floor_rate


async def subscription_phase(dsn: str, expected: int) -> float:
    from commandbus.events import EventContext, RecordedEvent, Subscription
    from commandbus.postgres import PostgresBackend

    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    seen = 0

    async def handle(event: RecordedEvent, context: EventContext) -> None:
        nonlocal seen
        seen += 1

    subscription = Subscription(backend, "bench", handle, batch_size=500)
    started = time.perf_counter()
    await subscription.drain()
    elapsed = time.perf_counter() - started
    await backend.close()
    assert seen == expected, (seen, expected)
    return seen / elapsed


def three_step_manager() -> Any:
    from commandbus.process import ProcessStatus
    from commandbus.process_manager import (
        Decision,
        EventSourcedProcessManager,
        ProcessEvent,
        ProcessLocator,
        Task,
    )

    class ThreeSteps(EventSourcedProcessManager[dict[str, Any]]):
        process_type = "three_steps"
        domain = "bench"
        starts_on = ("OrderPlaced",)
        locator = ProcessLocator.by_field("order")
        snapshot_every = 1000

        def initial_state(self) -> dict[str, Any]:
            return {"done": 0}

        def evolve(self, state: dict[str, Any], event: ProcessEvent) -> dict[str, Any]:
            if event.event_type == "TaskCompleted":
                return {"done": state["done"] + 1}
            return state

        def decide(self, state: dict[str, Any], event: ProcessEvent) -> Decision:
            if event.event_type == "OrderPlaced":
                return Decision(commands=[Task("step-1", "Step", {"n": 1})])
            if event.event_type == "TaskCompleted":
                if state["done"] == 3:
                    return Decision(finish=ProcessStatus.COMPLETED)
                n = state["done"] + 1
                return Decision(commands=[Task(f"step-{n}", "Step", {"n": n})])
            return Decision()

    return ThreeSteps()


def _runner(dsn: str, stop: Any, ready: Any) -> None:
    asyncio.run(_run_consumers(dsn, stop, ready))


async def _run_consumers(dsn: str, stop: Any, ready: Any) -> None:
    """One OS process: a worker, a router and a consumer of the subscription."""
    from commandbus import HandlerRegistry, Worker
    from commandbus.models import Command
    from commandbus.postgres import PostgresBackend
    from commandbus.process_manager import ProcessEngine, ProcessEventRouter

    backend = await PostgresBackend.connect(dsn, min_size=2, max_size=12)
    engine = ProcessEngine(backend, three_step_manager())
    registry = HandlerRegistry()

    async def step(command: Command, context: Any) -> dict[str, Any]:
        return {}

    registry.register("bench", "Step", step)
    worker = Worker(backend, "bench", registry, batch_size=50)
    router = ProcessEventRouter(engine)  # its default batch, as ProcessReplyRouter's: 100
    subscription = engine.subscription(batch_size=200)
    tasks = [
        asyncio.create_task(subscription.run(poll_interval=0.05)),
        asyncio.create_task(worker.run(concurrency=100, poll_interval=0.05)),
        asyncio.create_task(router.run(poll_interval=0.05, concurrency=2)),
    ]
    with ready.get_lock():
        ready.value += 1
    while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing event
        await asyncio.sleep(0.05)
    for consumer in (subscription, worker, router):
        await consumer.stop(5)
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.close()


async def _completed(backend: Any) -> int:
    async with backend.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM commandbus.process WHERE status = 'COMPLETED'"
        )
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def _start_and_wait(store: Any, backend: Any, first: int, count: int) -> None:
    """Append ``count`` start events (orders ``first`` on) and wait until every process
    started so far has completed."""
    from commandbus.events import NewEvent

    for start in range(first, first + count, 500):
        n = min(first + count, start + 500) - start
        events = [NewEvent("OrderPlaced", {"order": str(start + i)}) for i in range(n)]
        await store.append(f"orders-{start}", events)
    while await _completed(backend) < first + count:  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.05)


async def processes_phase(dsn: str, processes: int, procs: int, warmup: int = 300) -> float:
    """Processes/s from the first start event to the last completion: ``procs`` OS
    processes each run a worker, a router and a consumer of the subscription. ``warmup``
    processes run first, untimed (connections opened, statements prepared)."""
    import multiprocessing as mp

    from commandbus.events import EventStore
    from commandbus.postgres import PostgresBackend

    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    store = EventStore(backend)
    context = mp.get_context("spawn")
    stop, ready = context.Event(), context.Value("i", 0)
    runners = [context.Process(target=_runner, args=(dsn, stop, ready)) for _ in range(procs)]
    for runner in runners:
        runner.start()
    while ready.value < procs:  # noqa: ASYNC110 - a multiprocessing value
        await asyncio.sleep(0.05)
    await _start_and_wait(store, backend, 0, warmup)
    started = time.perf_counter()
    await _start_and_wait(store, backend, warmup, processes)
    elapsed = time.perf_counter() - started
    stop.set()
    for runner in runners:
        runner.join(30)
    await backend.close()
    return processes / elapsed


@dataclass
class LoadTimes:
    sizes: list[int] = field(default_factory=list)
    with_snapshots: list[float] = field(default_factory=list)
    without: list[float] = field(default_factory=list)


async def load_phase(dsn: str, sizes: list[int]) -> LoadTimes:
    """Milliseconds to load a process whose stream has ``size`` events."""
    from uuid import uuid4

    from commandbus.events import EventStore, NewEvent
    from commandbus.postgres import PostgresBackend
    from commandbus.process_manager import ProcessEngine
    from commandbus.process_manager.events import PROCESS_STARTED

    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    store = EventStore(backend)
    manager = three_step_manager()
    engine = ProcessEngine(backend, manager)
    result = LoadTimes()
    for size in sizes:
        pid = uuid4()
        stream = engine.stream_of(pid)
        await store.append(stream, NewEvent(PROCESS_STARTED, {"key": "k"}))
        for offset in range(1, size, 1000):
            count = min(1000, size - offset)
            await store.append(stream, [NewEvent("Noted", {"i": offset + i}) for i in range(count)])
        instance = await engine.load(pid)
        body = {"state": manager.state_to_dict(instance.state), "book": instance.book.data}
        timings = {}
        for label, snapshot in (("without", False), ("with", True)):
            if snapshot:
                # What the engine keeps: a snapshot at most snapshot_every events back.
                await store.save_snapshot(stream, max(1, size - 49), body)
            started = time.perf_counter()
            for _ in range(5):
                await engine.load(pid)
            timings[label] = (time.perf_counter() - started) / 5 * 1000
        result.sizes.append(size)
        result.with_snapshots.append(timings["with"])
        result.without.append(timings["without"])
    await backend.close()
    return result


def mark(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


async def run(args: argparse.Namespace) -> int:
    from commandbus.postgres import apply_schema

    url = server_url(args.database_url)
    name, dsn = fresh_database(url)
    try:
        await apply_schema(dsn)
        store_rate, floor_rate = await append_phase(dsn, args.events, args.batch)
        floor = f"floor: plain INSERT {floor_rate:,.0f}/s, ratio {store_rate / floor_rate:.2f}"
        target = f"target {TARGET_APPEND:,.0f}: {mark(store_rate >= TARGET_APPEND)}"
        print(f"append        {store_rate:>10,.0f} events/s  ({floor})  {target}")
        rate = await subscription_phase(dsn, args.events // args.batch * args.batch)
        target = f"target {TARGET_SUBSCRIPTION:,.0f}: {mark(rate >= TARGET_SUBSCRIPTION)}"
        print(f"subscription  {rate:>10,.0f} events/s  (no-op handler, end to end)  {target}")
        rate = await processes_phase(dsn, args.processes, args.procs, args.warmup)
        target = f"target {TARGET_PROCESSES:,.0f}: {mark(rate >= TARGET_PROCESSES)}"
        steps = f"event-started, 3 steps: {3 * rate:,.0f} steps/s"
        print(f"processes     {rate:>10,.0f} /s        ({steps})  {target}")
        loads = await load_phase(dsn, [10, 100, 1_000, 10_000])
        print("load a process (ms)   events: " + "  ".join(f"{s:>7,}" for s in loads.sizes))
        print(
            "  with snapshots (50)         " + "  ".join(f"{t:>7.2f}" for t in loads.with_snapshots)
        )
        print("  without                     " + "  ".join(f"{t:>7.2f}" for t in loads.without))
    finally:
        drop_database(url, name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--processes", type=int, default=3_000)
    parser.add_argument("--procs", type=int, default=2, help="OS processes running consumers")
    parser.add_argument("--warmup", type=int, default=300, help="processes run before timing")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
