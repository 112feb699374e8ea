"""StatementReport on PostgreSQL with workers and routers running continuously."""

from __future__ import annotations

import asyncio
from typing import Any

from examples.statement_report import StatementReportProcess, StatementReportState
from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)
from psycopg_pool import AsyncConnectionPool

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.policies import RetryPolicy
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus

INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-03-31",
    "account_list": ["ACC-001"],
    "output_type": "html",
}
TERMINAL_OR_PARKED = {
    ProcessStatus.COMPLETED,
    ProcessStatus.FAILED,
    ProcessStatus.WAITING_FOR_TSQ,
}


async def wait_until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_many_processes_with_failures_two_routers_two_workers(
    pg_pool: AsyncConnectionPool[Any],
) -> None:
    backend = PostgresBackend(pg_pool)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=[0]))
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    config = ServiceConfig(
        rates={
            "StatementQuery": FailureRates(transient=0.2),
            "StatementDataAggregation": FailureRates(business=0.1, permanent=0.05),
            "StatementRender": FailureRates(transient=0.1, business=0.1),
        },
        seed=7,
    )
    register_statement_handlers(registry, config)
    workers = [
        Worker(backend, "reporting", registry, retry_policy=bus.retry_policy) for _ in range(2)
    ]
    routers = [ProcessReplyRouter(backend, managers=[manager], batch_size=20) for _ in range(2)]
    tasks = [asyncio.create_task(w.run(concurrency=10, poll_interval=0.05)) for w in workers]
    tasks += [asyncio.create_task(r.run(concurrency=2, poll_interval=0.05)) for r in routers]
    try:
        pids = await manager.start_many([dict(INPUT) for _ in range(60)])

        async def all_settled() -> bool:
            found = await manager.find_by_status(list(TERMINAL_OR_PARKED))
            return len(found) == len(pids)

        await wait_until(all_settled)
    finally:
        for w in workers:
            await w.stop(5)
        for r in routers:
            await r.stop(5)
        await asyncio.gather(*tasks)

    statuses: dict[ProcessStatus, int] = {}
    for pid in pids:
        p = await manager.get(pid)
        assert p is not None and isinstance(p.state, StatementReportState)
        statuses[p.status] = statuses.get(p.status, 0) + 1
        trail = await manager.get_audit_trail(pid)
        ids = [e.command_id for e in trail]
        assert len(ids) == len(set(ids)) == p.command_seq
        forward = [e.step_name for e in trail if e.kind.value == "STEP"]
        # Never two commands for one step: no double advance.
        assert len(forward) == len(set(forward))
        if p.status is ProcessStatus.COMPLETED:
            assert forward == ["statement_query", "statement_data_aggregation", "statement_render"]
            assert p.state.rendered_file_path is not None
        if p.status is ProcessStatus.FAILED:
            assert p.error_code == "REPORT_REFUSED"
    assert statuses.get(ProcessStatus.COMPLETED, 0) > 0
    assert sum(statuses.values()) == 60
