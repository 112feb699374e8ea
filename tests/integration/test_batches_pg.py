"""Batches on PostgreSQL under concurrency: workers on their own connection pools settle
commands of the same batches at once (completions, retries, business failures, the TSQ),
an operator retries and cancels TSQ items meanwhile, and a sender keeps adding to an open
batch. At the end every counter equals a recount of the command rows, and each batch has
sent exactly one completion notice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest

from commandbus import (
    BusinessRuleException,
    CommandBus,
    HandlerRegistry,
    PermanentCommandError,
    RetryPolicy,
    TransientCommandError,
    TroubleshootingQueue,
    Worker,
)
from commandbus.batches import BatchCommand, BatchMetadata, BatchStatus
from commandbus.errors import InvalidOperationError
from commandbus.postgres import PostgresBackend

pytestmark = pytest.mark.integration

DOMAIN = "billing"
NOTICES = "billing__batches"
BATCHES = 5
PER_BATCH = 40
#: What the command with data {"kind": k} does (k = index % 10).
COMPLETES, TRANSIENT_ONCE, RULE_FAILS, PARKED_THEN_RETRIED, PARKED_THEN_CANCELED = (
    0,
    6,
    7,
    8,
    9,
)


@pytest.fixture
async def backends(pg_dsn: str) -> AsyncIterator[list[PostgresBackend]]:
    opened = [await PostgresBackend.connect(pg_dsn, min_size=1, max_size=4) for _ in range(4)]
    try:
        yield opened
    finally:
        for backend in opened:
            await backend.close()


def handlers(parked_once: set[UUID], attempts: Counter[UUID]) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Charge")
    async def charge(command: Any, context: Any) -> dict[str, Any]:
        attempts[command.command_id] += 1
        kind = command.data["kind"]
        await asyncio.sleep(0)
        if kind == TRANSIENT_ONCE and attempts[command.command_id] == 1:
            raise TransientCommandError("FLAKY", "try again")
        if kind == RULE_FAILS:
            raise BusinessRuleException("LIMIT", "over the limit")
        if kind == PARKED_THEN_RETRIED and command.command_id not in parked_once:
            parked_once.add(command.command_id)
            raise PermanentCommandError("BROKEN", "needs a person")
        if kind == PARKED_THEN_CANCELED:
            raise PermanentCommandError("BROKEN", "needs a person")
        return {"charged": True}

    return registry


async def operator(tsq: TroubleshootingQueue, done: asyncio.Event) -> Counter[str]:
    """Resolve TSQ items as they arrive, concurrently with the workers."""
    actions: Counter[str] = Counter()
    while not done.is_set():
        for item in await tsq.list_troubleshooting(DOMAIN, limit=100):
            try:
                if item.data["kind"] == PARKED_THEN_RETRIED:
                    await tsq.operator_retry(DOMAIN, item.command_id, operator="ops")
                    actions["retry"] += 1
                else:
                    await tsq.operator_cancel(DOMAIN, item.command_id, "not needed", "ops")
                    actions["cancel"] += 1
            except InvalidOperationError:
                pass  # listed before a concurrent action of our own moved it
        await asyncio.sleep(0.02)
    return actions


async def recount(backend: PostgresBackend, batch_id: UUID) -> dict[str, int]:
    """The batch's counters recomputed from its command rows."""
    async with backend.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, count(*) FROM commandbus.command WHERE batch_id = %s GROUP BY 1",
            (batch_id,),
        )
        by_status = dict(await cur.fetchall())
    return {
        "total": sum(by_status.values()),
        "completed": by_status.get("COMPLETED", 0),
        "failed": by_status.get("FAILED", 0),
        "canceled": by_status.get("CANCELED", 0),
        "in_troubleshooting": by_status.get("IN_TROUBLESHOOTING_QUEUE", 0),
    }


def counters(batch: BatchMetadata) -> dict[str, int]:
    return {
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "canceled": batch.canceled,
        "in_troubleshooting": batch.in_troubleshooting,
    }


async def test_counters_stay_exact_under_concurrent_workers_and_operators(
    backends: list[PostgresBackend],
) -> None:
    main, *worker_backends = backends
    bus = CommandBus(main)
    policy = RetryPolicy(max_attempts=3, backoff_schedule=(0.05,), jitter=0)
    batch_ids = []
    for b in range(BATCHES):
        created = await bus.create_batch(
            DOMAIN,
            [BatchCommand("Charge", {"kind": i % 10}) for i in range(PER_BATCH)],
            name=f"run-{b}",
            reply_to=NOTICES,
        )
        batch_ids.append(created.batch_id)
    # An open batch grows while the workers already settle its first members.
    growing = await bus.create_batch(
        DOMAIN, [BatchCommand("Charge", {"kind": 0})], reply_to=NOTICES, keep_open=True
    )
    batch_ids.append(growing.batch_id)

    parked_once: set[UUID] = set()
    attempts: Counter[UUID] = Counter()
    registry = handlers(parked_once, attempts)
    workers = [
        Worker(backend, DOMAIN, registry, retry_policy=policy, batch_size=8)
        for backend in worker_backends
    ]
    tasks = [asyncio.create_task(w.run(concurrency=8, poll_interval=0.02)) for w in workers]
    done = asyncio.Event()
    operating = asyncio.create_task(operator(TroubleshootingQueue(main), done))
    try:
        for i in range(1, PER_BATCH):
            await bus.send(DOMAIN, "Charge", data={"kind": i % 10}, batch_id=growing.batch_id)
            await asyncio.sleep(0)
        await bus.close_batch(DOMAIN, growing.batch_id)
        async with asyncio.timeout(90):
            while True:
                batches = [await bus.get_batch(DOMAIN, bid) for bid in batch_ids]
                if all(b is not None and b.status.is_finished for b in batches):
                    break
                await asyncio.sleep(0.05)
    finally:
        done.set()
        actions = await operating
        for w in workers:
            await w.stop(timeout=10)
        await asyncio.gather(*tasks)

    per_kind = Counter(i % 10 for i in range(PER_BATCH))
    expected = {
        "total": PER_BATCH,
        "completed": PER_BATCH - per_kind[RULE_FAILS] - per_kind[PARKED_THEN_CANCELED],
        "failed": per_kind[RULE_FAILS],
        "canceled": per_kind[PARKED_THEN_CANCELED],
        "in_troubleshooting": 0,
    }
    for batch_id in batch_ids:
        batch = await bus.get_batch(DOMAIN, batch_id)
        assert batch is not None
        assert counters(batch) == await recount(main, batch_id) == expected
        assert batch.status is BatchStatus.COMPLETED_WITH_FAILURES
        assert batch.completed_at is not None
    # Every kind of change happened, and concurrently (each worker settled some).
    assert actions["retry"] == len(batch_ids) * per_kind[PARKED_THEN_RETRIED]
    assert actions["cancel"] == len(batch_ids) * per_kind[PARKED_THEN_CANCELED]
    assert all(w.stats.completed > 0 for w in workers)
    assert sum(w.stats.retried for w in workers) == len(batch_ids) * per_kind[TRANSIENT_ONCE]

    # Exactly one notice per batch, with the final counts.
    notices = await bus.read_batch_notices(NOTICES, limit=100)
    assert sorted(str(n.notice.batch_id) for n in notices) == sorted(str(b) for b in batch_ids)
    for received in notices:
        assert received.notice.status is BatchStatus.COMPLETED_WITH_FAILURES
        assert received.notice.completed == expected["completed"]
        assert await bus.ack_reply(NOTICES, received.msg_id)
    assert await bus.read_batch_notices(NOTICES, limit=100) == []


async def test_a_process_batch_counts_processes_run_by_routers_and_workers(
    backends: list[PostgresBackend],
) -> None:
    from examples.statement_report import StatementReportProcess
    from examples.statement_report.handlers import (
        FailureRates,
        ServiceConfig,
        register_statement_handlers,
    )

    from commandbus.batches import ProcessBatch
    from commandbus.process import ProcessReplyRouter

    main, *others = backends
    bus = CommandBus(main, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=[0]))
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    # No transient failures: a command parked in the TSQ would wait for an operator.
    rates = {"StatementDataAggregation": FailureRates(business=0.25)}
    register_statement_handlers(registry, ServiceConfig(rates=rates, seed=3))
    workers = [Worker(b, "reporting", registry, retry_policy=bus.retry_policy) for b in others]
    routers = [ProcessReplyRouter(b, managers=[manager], batch_size=10) for b in others[:2]]
    tasks = [asyncio.create_task(w.run(concurrency=8, poll_interval=0.02)) for w in workers]
    tasks += [asyncio.create_task(r.run(concurrency=2, poll_interval=0.02)) for r in routers]
    batch = ProcessBatch(name="quarter", reply_to="reporting__batches")
    data = {
        "from_date": "2024-01-01",
        "to_date": "2024-03-31",
        "account_list": ["ACC-001"],
        "output_type": "html",
    }
    try:
        pids = await manager.start_many([dict(data) for _ in range(40)], batch=batch)
        async with asyncio.timeout(90):
            while True:
                found = await bus.get_batch("reporting", batch.batch_id)
                if found is not None and found.status.is_finished:
                    break
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            await w.stop(5)
        for r in routers:
            await r.stop(5)
        await asyncio.gather(*tasks)

    statuses = Counter()
    for pid in pids:
        process = await manager.get(pid)
        assert process is not None and process.batch_id == batch.batch_id
        statuses[process.status.value] += 1
    assert found.total == 40
    assert (found.completed, found.failed, found.canceled) == (
        statuses["COMPLETED"],
        statuses["FAILED"] + statuses["COMPENSATED"],
        statuses["CANCELED"],
    )
    assert found.completed > 0 and found.failed > 0  # both outcomes happened
    assert found.status is BatchStatus.COMPLETED_WITH_FAILURES
    [notice] = await bus.read_batch_notices("reporting__batches")
    assert (notice.notice.batch_id, notice.notice.total) == (batch.batch_id, 40)
