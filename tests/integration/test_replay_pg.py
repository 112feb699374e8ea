"""Replay on PostgreSQL: histories written by the real worker and router, read back from
the database, folded through the current manager code."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from examples.statement_report import StatementReportProcess, StatementReportState
from examples.statement_report import StatementReportStep as Step
from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.models import Reply, ReplyOutcome
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.process.models import ProcessMetadata
from commandbus.process.replay import check_replay, replay_all


class RenderWritesAnotherField(StatementReportProcess):
    def update_state(self, state: StatementReportState, step: Step, reply: Reply) -> None:
        # FAILED replies reach update_state too; a render result is a SUCCESS reply's.
        if step is Step.RENDER and reply.outcome is ReplyOutcome.SUCCESS:
            state.aggregated_data_path = (reply.data or {}).get("result_path")
            return
        super().update_state(state, step, reply)


def request(index: int) -> dict[str, Any]:
    return {
        "from_date": "2024-01-01",
        "to_date": "2024-03-31",
        "account_list": [f"ACC-{index:03d}"],
        "output_type": ["pdf", "html", "csv"][index % 3],
    }


async def run_processes(backend: PostgresBackend, count: int) -> tuple[Any, dict[UUID, Any]]:
    """Start ``count`` StatementReports and run them with a real worker and router until
    nothing moves; TSQ items are canceled by an operator."""
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=[0]))
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(
        registry,
        ServiceConfig(
            rates={
                "StatementDataAggregation": FailureRates(permanent=0.15),
                "StatementRender": FailureRates(business=0.25, transient=0.2),
            },
            seed=3,
        ),
    )
    worker = Worker(backend, "reporting", registry, retry_policy=bus.retry_policy)
    router = ProcessReplyRouter(backend, managers=[manager])
    tsq = TroubleshootingQueue(backend)
    initial = {}
    for index in range(count):
        data = request(index)
        initial[await manager.start(data)] = data
    for _ in range(100):
        moved = await worker.drain() + await router.drain()
        for item in await tsq.list_troubleshooting("reporting"):
            await tsq.operator_cancel("reporting", item.command_id, "gave up")
            moved += 1
        if moved == 0:
            break
    return manager, initial


async def test_histories_stored_in_postgres_replay(pg_backend: PostgresBackend) -> None:
    manager, initial = await run_processes(pg_backend, 24)
    processes: list[ProcessMetadata[Any, Any]] = await pg_backend.processes.find_by_status(
        "reporting", list(ProcessStatus)
    )
    statuses = {p.status for p in processes}
    assert ProcessStatus.COMPLETED in statuses
    assert statuses & {ProcessStatus.FAILED, ProcessStatus.COMPENSATED}

    # One more process, canceled by its user after the first step.
    pid = await manager.start(request(99))
    initial[pid] = request(99)
    await manager.handle_reply(
        Reply(
            command_id=(await manager.get_audit_trail(pid))[0].command_id,
            correlation_id=pid,
            outcome=ReplyOutcome.SUCCESS,
            data={"result_path": "s3://q/99"},
        )
    )
    await manager.cancel(pid, "not needed")

    results = await replay_all(pg_backend, [manager], initial_data=initial)
    assert len(results) == 25
    assert [str(r.first) for r in results if not r.ok] == []

    changed = RenderWritesAnotherField(manager.command_bus)
    mismatches = await check_replay(pg_backend, [changed], initial_data=initial)
    rendered = [p for p in processes if p.status is ProcessStatus.COMPLETED]
    assert {m.process_id for m in mismatches} == {p.process_id for p in rendered}
    assert {(m.step, m.field) for m in mismatches} == {(Step.RENDER, "state.aggregated_data_path")}


async def test_replay_reads_the_start_input_stored_with_each_process(
    pg_backend: PostgresBackend,
) -> None:
    manager, initial = await run_processes(pg_backend, 12)
    stored = await pg_backend.processes.find_by_status("reporting", list(ProcessStatus))
    assert {p.process_id: p.initial_data for p in stored} == initial

    # No initial_data= given: replay starts each process from its row.
    results = await replay_all(pg_backend, [manager])
    assert len(results) == 12
    assert [str(r.first) for r in results if not r.ok] == []
    changed = RenderWritesAnotherField(manager.command_bus)
    mismatches = await check_replay(pg_backend, [changed])
    completed = {p.process_id for p in stored if p.status is ProcessStatus.COMPLETED}
    assert completed
    assert {m.process_id for m in mismatches} == completed
    assert {(m.step, m.field) for m in mismatches} == {(Step.RENDER, "state.aggregated_data_path")}
