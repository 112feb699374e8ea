"""Scenario tests of the StatementReport example: the process, step by step, no database.

The tests that use the ``scenario`` fixture run once per form of the process: written by
hand (``StatementReportProcess``), in the step DSL (``StatementReportSteps``) and as a
state machine (``StatementReportMachine``); they must behave alike."""

from __future__ import annotations

from typing import Any

import pytest
from examples.statement_report import (
    StatementReportProcess,
    StatementReportState,
    StatementReportStep,
)
from examples.statement_report.machine import StatementReportMachine
from examples.statement_report.steps import StatementReportSteps

from commandbus.process import ProcessHookError, ProcessStatus, TimeoutAction
from commandbus.testing.scenario import ProcessScenario, ScenarioAssertionError

Step = StatementReportStep

REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["ACC-1", "ACC-2"],
    "output_type": "pdf",
}


@pytest.fixture(
    params=[StatementReportProcess, StatementReportSteps, StatementReportMachine],
    ids=["by_hand", "dsl", "fsm"],
)
def scenario(request: pytest.FixtureRequest) -> ProcessScenario[StatementReportState]:
    return ProcessScenario(request.param)


async def test_happy_path(scenario: ProcessScenario[StatementReportState]) -> None:
    # Given a started statement report
    await scenario.start(REQUEST)
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    scenario.expect_command(
        "StatementQuery",
        step=Step.QUERY,
        data={"from_date": "2025-01-01", "account_list": ["ACC-1", "ACC-2"]},
    )

    # When every service answers
    await scenario.reply_success({"result_path": "s3://q.json"})
    scenario.expect_command("StatementDataAggregation", data={"data_path": "s3://q.json"})
    await scenario.reply_success({"result_path": "s3://agg.json"})
    scenario.expect_command(
        "StatementRender", data={"aggregated_data_path": "s3://agg.json", "output_type": "pdf"}
    )
    await scenario.reply_success({"result_path": "s3://report.pdf"})

    # Then the report is complete and nothing more is sent
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.COMPLETED)
    scenario.expect_state(
        query_result_path="s3://q.json",
        aggregated_data_path="s3://agg.json",
        rendered_file_path="s3://report.pdf",
        deleted_paths=None,
    )
    scenario.expect_sent("StatementQuery", "StatementDataAggregation", "StatementRender")
    assert scenario.process.completed_at == scenario.clock.now()
    assert [e.reply_outcome for e in scenario.audit_trail] == ["SUCCESS"] * 3
    assert scenario.awaited_command is None


async def test_business_failure_compensates_in_reverse_order(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q.json"})
    await scenario.reply_success({"result_path": "s3://agg.json"})
    scenario.expect_command("StatementRender")

    # When rendering is refused for a business reason
    await scenario.reply_failed("TEMPLATE_MISSING", "no template for pdf")

    # Then the aggregated data is deleted first, then the query result
    scenario.expect_status(ProcessStatus.COMPENSATING)
    scenario.expect_command("DeleteAggregatedData", data={"path": "s3://agg.json"})
    await scenario.reply_success({"deleted": "s3://agg.json"})
    scenario.expect_command("DeleteQueryResult", data={"path": "s3://q.json"}, compensation=True)
    await scenario.reply_success({"deleted": "s3://q.json"})

    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.FAILED, error_code="TEMPLATE_MISSING")
    scenario.expect_compensations(Step.DELETE_AGGREGATED_DATA, Step.DELETE_QUERY_RESULT)
    scenario.expect_state(deleted_paths=["s3://agg.json", "s3://q.json"])
    assert scenario.process.error_message == "no template for pdf"


async def test_business_failure_of_the_first_step_needs_no_compensation(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_failed("UNKNOWN_ACCOUNT", "ACC-2 does not exist")
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.FAILED, error_code="UNKNOWN_ACCOUNT")
    scenario.expect_compensations()


async def test_tsq_then_operator_cancel_compensates(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q.json"})
    aggregation = scenario.expect_command("StatementDataAggregation")

    # The aggregation service breaks: the command lands in the troubleshooting queue
    await scenario.tsq_notice("SERVICE_BROKEN", "aggregation service is down")
    scenario.expect_status(ProcessStatus.WAITING_FOR_TSQ, error_code="SERVICE_BROKEN")
    scenario.expect_no_command()
    awaited = scenario.awaited_command
    assert awaited is not None and awaited.command_id == aggregation.command_id

    # An operator cancels it: the completed query step is undone
    await scenario.operator_cancel("data source retired")
    scenario.expect_command("DeleteQueryResult", data={"path": "s3://q.json"})
    await scenario.reply_success({"deleted": "s3://q.json"})
    scenario.expect_status(ProcessStatus.COMPENSATED)
    scenario.expect_sent("StatementQuery", "StatementDataAggregation", "DeleteQueryResult")
    assert scenario.audit_trail[1].reply_outcome == "CANCELED"


async def test_tsq_then_operator_complete_continues(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.tsq_notice()
    scenario.expect_status(ProcessStatus.WAITING_FOR_TSQ)
    await scenario.operator_complete({"result_path": "s3://by-hand.json"})
    scenario.expect_command("StatementDataAggregation", data={"data_path": "s3://by-hand.json"})
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    assert scenario.process.error_code is None


async def test_duplicate_and_late_replies_are_ignored(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    query = scenario.expect_command("StatementQuery")
    await scenario.reply_success({"result_path": "s3://q.json"})
    before = scenario.process

    await scenario.reply_success({"result_path": "s3://other.json"}, command=query)
    scenario.expect_ignored("duplicate")
    scenario.expect_no_command()
    assert scenario.process.version == before.version
    scenario.expect_state(query_result_path="s3://q.json")


async def test_cancel_compensates_completed_steps(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q.json"})
    await scenario.reply_success({"result_path": "s3://agg.json"})
    render = scenario.expect_command("StatementRender")

    await scenario.cancel("customer withdrew the request")
    scenario.expect_command("DeleteAggregatedData")
    await scenario.reply_success({"deleted": "s3://agg.json"})
    scenario.expect_command("DeleteQueryResult")
    await scenario.reply_success({"deleted": "s3://q.json"})
    scenario.expect_status(ProcessStatus.CANCELED, error_code="CANCELED")

    # The abandoned render command replies late: ignored
    await scenario.reply_success({"result_path": "s3://late.pdf"}, command=render)
    scenario.expect_ignored("process is CANCELED")
    scenario.expect_state(rendered_file_path=None)


class TimedStatementReport(StatementReportProcess):
    """StatementReport whose query must answer within 60 s: retried once, then given up."""

    def get_step_timeout(self, step: StatementReportStep, state: Any) -> float | None:
        return 60.0 if step is Step.QUERY else None

    def on_step_timeout(self, step: StatementReportStep, state: Any, attempt: int) -> TimeoutAction:
        return TimeoutAction.RETRY if attempt < 2 else TimeoutAction.COMPENSATE


async def test_timeout_retries_then_gives_up() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(TimedStatementReport)
    await scenario.start(REQUEST)
    first = scenario.expect_command("StatementQuery")
    started = scenario.clock.now()
    assert scenario.process.deadline_at is not None

    # The query does not answer in time: sent again (a new command)
    await scenario.fire_timeout()
    second = scenario.expect_command("StatementQuery")
    assert second.command_id != first.command_id
    assert (scenario.clock.now() - started).total_seconds() == 60
    assert scenario.audit_trail[0].timed_out_at == scenario.clock.now()
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)

    # The first command's late reply is stale: ignored
    await scenario.reply_success({"result_path": "s3://late.json"}, command=first)
    scenario.expect_ignored("stale")
    scenario.expect_state(query_result_path=None)

    # The second times out too: nothing was completed, so the process fails at once
    await scenario.fire_timeout()
    scenario.expect_no_command()
    scenario.expect_status(ProcessStatus.FAILED, error_code="STEP_TIMEOUT")


async def test_a_timer_does_nothing_once_the_step_answered() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(TimedStatementReport)
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q.json"})
    await scenario.advance(3600)
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    scenario.expect_no_command()
    with pytest.raises(ScenarioAssertionError, match="no step timeout pending"):
        await scenario.fire_timeout()


async def test_failed_expectations_tell_the_story(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q.json"})
    with pytest.raises(ScenarioAssertionError) as caught:
        scenario.expect_command("StatementRender")
    text = str(caught.value)
    assert "expected a StatementRender command, got StatementDataAggregation" in text
    assert "status: WAITING" in text
    assert "#1 STEP statement_query: StatementQuery" in text
    assert '-> SUCCESS {"result_path":"s3://q.json"}' in text
    assert "#2 STEP statement_data_aggregation" in text and "awaiting reply" in text

    with pytest.raises(ScenarioAssertionError, match="expected status COMPLETED, got WAITING"):
        scenario.expect_status(ProcessStatus.COMPLETED)
    with pytest.raises(ScenarioAssertionError, match="query_result_path: expected 'x'"):
        scenario.expect_state(query_result_path="x")


async def test_start_is_refused_for_bad_input(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    with pytest.raises(ProcessHookError, match="to_date must not be before from_date") as e:
        await scenario.start({**REQUEST, "to_date": "2024-01-01"})
    assert isinstance(e.value.cause, ValueError)


async def test_several_processes_in_one_scenario(
    scenario: ProcessScenario[StatementReportState],
) -> None:
    first = await scenario.start(REQUEST)
    second = await scenario.start({**REQUEST, "account_list": ["ACC-9"]})
    scenario.expect_command("StatementQuery", data={"account_list": ["ACC-9"]})
    await scenario.reply_failed("UNKNOWN_ACCOUNT")
    scenario.expect_status(ProcessStatus.FAILED)

    await scenario.use(first)
    scenario.expect_status(ProcessStatus.WAITING_FOR_REPLY)
    scenario.expect_no_command()
    await scenario.reply_success({"result_path": "s3://q.json"})
    scenario.expect_command("StatementDataAggregation")
    assert scenario.process_id == first != second
    assert set(scenario.initial_data) == {first, second}
