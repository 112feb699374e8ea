"""The seed's StatementReport process end to end on the in-memory backend."""

from __future__ import annotations

from datetime import date

import pytest
from examples.statement_report import (
    OutputType,
    StatementReportProcess,
    StatementReportState,
    StatementReportStep,
)
from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.memory import InMemoryBackend
from commandbus.process import ProcessHookError, ProcessReplyRouter, ProcessStatus
from commandbus.testing.clock import VirtualClock

INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-12-31",
    "account_list": ["ACC-001", "ACC-002"],
    "output_type": "pdf",
}


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(clock=VirtualClock())


async def drive(worker: Worker, router: ProcessReplyRouter) -> None:
    for _ in range(100):
        if await worker.process_once() == 0 and await router.process_once() == 0:
            return
    raise AssertionError("did not settle")


async def test_statement_report_completes_with_typed_state(backend: InMemoryBackend) -> None:
    bus = CommandBus(backend)
    manager = StatementReportProcess(bus, backend.processes, "reporting__process_replies")
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    worker = Worker(backend, "reporting", registry)
    router = ProcessReplyRouter(backend, backend.processes, {"StatementReport": manager})
    pid = await manager.start(INPUT)
    await drive(worker, router)
    process = await manager.get(pid)
    assert process is not None
    assert process.status is ProcessStatus.COMPLETED
    assert process.current_step is StatementReportStep.RENDER
    state = process.state
    assert isinstance(state, StatementReportState)
    assert (state.from_date, state.to_date) == (date(2024, 1, 1), date(2024, 12, 31))
    assert state.output_type is OutputType.PDF
    assert state.query_result_path is not None and state.query_result_path.endswith(
        "ACC-001-ACC-002.json"
    )
    assert state.aggregated_data_path == state.query_result_path.replace("/query/", "/aggregated/")
    assert state.rendered_file_path == state.aggregated_data_path.rsplit(".", 1)[0] + ".pdf"
    trail = await manager.get_audit_trail(pid)
    assert [e.command_type for e in trail] == [
        "StatementQuery",
        "StatementDataAggregation",
        "StatementRender",
    ]


async def test_statement_report_business_failure_deletes_files_in_reverse(
    backend: InMemoryBackend,
) -> None:
    bus = CommandBus(backend)
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    config = ServiceConfig(rates={"StatementRender": FailureRates(business=1.0)})
    register_statement_handlers(registry, config)
    worker = Worker(backend, "reporting", registry)
    router = ProcessReplyRouter(backend, managers=[manager])
    pid = await manager.start(INPUT)
    await drive(worker, router)
    process = await manager.get(pid)
    assert process is not None
    assert process.status is ProcessStatus.FAILED
    assert process.error_code == "REPORT_REFUSED"
    state = process.state
    assert state.deleted_paths == [state.aggregated_data_path, state.query_result_path]
    assert state.rendered_file_path is None


async def test_bad_start_input_is_refused(backend: InMemoryBackend) -> None:
    manager = StatementReportProcess(CommandBus(backend))
    with pytest.raises(ProcessHookError, match="to_date") as refused:
        await manager.start({**INPUT, "to_date": "2023-01-01"})
    assert isinstance(refused.value.cause, ValueError)
    with pytest.raises(ProcessHookError, match="create_initial_state raised KeyError") as missing:
        await manager.start({"from_date": "2024-01-01"})
    assert isinstance(missing.value.cause, KeyError)
    assert await manager.find_by_status(list(ProcessStatus)) == []
