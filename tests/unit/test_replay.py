"""Replay: stored histories folded through the current manager code (pure kernel)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from examples.statement_report import (
    StatementReportProcess,
    StatementReportState,
    StatementReportStep,
)

from commandbus.models import Reply, ReplyOutcome
from commandbus.process import ProcessCommand, ProcessStatus, TimeoutAction
from commandbus.process.replay import check_replay, replay_all, replay_process
from commandbus.testing.scenario import ProcessScenario

Step = StatementReportStep
Scenario = ProcessScenario[StatementReportState]

REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["ACC-1"],
    "output_type": "csv",
}


class RenderWritesAnotherField(StatementReportProcess):
    """Incompatible: the render result lands in ``aggregated_data_path``."""

    def update_state(self, state: StatementReportState, step: Step, reply: Reply) -> None:
        # FAILED replies reach update_state too (as in the seed); a render result is a
        # SUCCESS reply's.
        if step is Step.RENDER and reply.outcome is ReplyOutcome.SUCCESS:
            state.aggregated_data_path = (reply.data or {}).get("result_path")
            return
        super().update_state(state, step, reply)


class AggregationTakesAFormat(StatementReportProcess):
    """Incompatible: the aggregation command gets a different shape."""

    async def build_command(self, step: Step, state: StatementReportState) -> ProcessCommand[Any]:
        if step is Step.AGGREGATE:
            assert state.query_result_path is not None
            return ProcessCommand(
                "StatementDataAggregation",
                {"data_path": state.query_result_path, "format": "parquet"},
            )
        return await super().build_command(step, state)


class NoCleanupOfAggregates(StatementReportProcess):
    """Incompatible: aggregated data is no longer deleted on compensation."""

    def get_compensation_step(self, step: Step) -> Step | None:
        return None if step is Step.AGGREGATE else super().get_compensation_step(step)


class TimedReport(StatementReportProcess):
    timeout = 60.0

    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return self.timeout if step is Step.QUERY else None

    def on_step_timeout(self, step: Step, state: Any, attempt: int) -> TimeoutAction:
        return TimeoutAction.RETRY if attempt < 2 else TimeoutAction.TSQ


class LongerTimeout(TimedReport):
    timeout = 90.0


async def completed(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.reply_success({"result_path": "s3://a"})
    await scenario.reply_success({"result_path": "s3://r.csv"})


async def failed_at_render(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.reply_success({"result_path": "s3://a"})
    await scenario.reply_failed("NO_TEMPLATE")
    await scenario.reply_success({"deleted": "s3://a"})
    await scenario.reply_success({"deleted": "s3://q"})


async def canceled_in_tsq(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.tsq_notice("BROKEN")
    await scenario.operator_cancel("gave up")
    await scenario.reply_success({"deleted": "s3://q"})


async def waiting_in_tsq(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.tsq_notice("BROKEN")


async def canceled_by_user(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.cancel("not needed any more")
    await scenario.reply_failed("GONE", "already deleted")  # a failed compensation


async def canceled_at_once(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.cancel("typo in the request")


async def compensating(scenario: Scenario) -> None:
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.reply_success({"result_path": "s3://a"})
    await scenario.cancel("stop")


STORIES = [
    completed,
    failed_at_render,
    canceled_in_tsq,
    waiting_in_tsq,
    canceled_by_user,
    canceled_at_once,
    compensating,
]


@pytest.mark.parametrize("story", STORIES, ids=lambda s: s.__name__)
async def test_unchanged_manager_replays_every_story(story: Any) -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await story(scenario)
    result = await scenario.replay()
    assert result.ok, [str(m) for m in result.mismatches]
    assert result.replayed is not None
    assert result.replayed.status is scenario.status
    assert [e.command_id for e in result.replayed_audit] == [
        e.command_id for e in scenario.audit_trail
    ]


async def test_operator_step_actions_replay() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(TimedReport)
    await scenario.start(REQUEST)
    await scenario.fire_timeout()  # RETRY
    await scenario.fire_timeout()  # now an operator decides
    scenario.expect_status(ProcessStatus.WAITING_FOR_OPERATOR, error_code="STEP_TIMEOUT")
    await scenario.retry_step(operator="alice")
    await scenario.fire_timeout()  # the third send times out too: the operator again
    scenario.expect_status(ProcessStatus.WAITING_FOR_OPERATOR, error_code="STEP_TIMEOUT")
    await scenario.complete_step({"result_path": "s3://by-hand"}, operator="bob")
    await scenario.reply_success({"result_path": "s3://a"})
    await scenario.reply_success({"result_path": "s3://r.csv"})
    process = await scenario.manager.get(scenario.process_id)
    assert process is not None and process.status is ProcessStatus.COMPLETED
    assert process.state.query_result_path == "s3://by-hand"
    result = await scenario.replay()
    assert result.ok, [str(m) for m in result.mismatches]
    assert "operator retry of statement_query" in [label for label, _ in result.history]


async def test_timeout_stories_replay() -> None:
    scenario: ProcessScenario[StatementReportState] = ProcessScenario(TimedReport)
    await scenario.start(REQUEST)
    first = scenario.expect_command("StatementQuery")
    await scenario.fire_timeout()  # RETRY
    await scenario.reply_success({"result_path": "s3://late"}, command=first)  # stale
    await scenario.fire_timeout()  # TSQ
    scenario.expect_status(ProcessStatus.WAITING_FOR_OPERATOR, error_code="STEP_TIMEOUT")
    await scenario.reply_success({"result_path": "s3://q"})  # the late reply continues
    result = await scenario.replay()
    assert result.ok, [str(m) for m in result.mismatches]
    assert [label for label, _ in result.history] == [
        "start",
        "timer statement_query",
        "timer statement_query",
        "reply SUCCESS to statement_query",
    ]

    changed = await scenario.replay(LongerTimeout(scenario.bus))
    assert changed.first is not None
    assert changed.first.field == "audit[1].timed_out_at"
    assert changed.first.step == Step.QUERY
    assert changed.first.replayed == changed.first.stored + timedelta(seconds=30)


async def test_a_hook_writing_another_field_is_found() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await completed(scenario)
    result = await scenario.replay(RenderWritesAnotherField(scenario.bus))
    assert not result.ok
    mismatch = result.first
    assert mismatch is not None
    assert mismatch.process_id == scenario.process_id
    assert mismatch.step == Step.RENDER
    assert mismatch.field == "state.aggregated_data_path"
    assert mismatch.stored == "s3://a"
    assert mismatch.replayed == "s3://r.csv"
    assert str(mismatch).startswith(f"StatementReport process {scenario.process_id} at step")


async def test_a_process_that_did_not_reach_the_changed_step_still_replays() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    result = await scenario.replay(RenderWritesAnotherField(scenario.bus))
    assert result.ok


async def test_changed_command_data_is_found_at_its_step() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await failed_at_render(scenario)
    result = await scenario.replay(AggregationTakesAFormat(scenario.bus))
    mismatch = result.first
    assert mismatch is not None
    assert mismatch.step == Step.AGGREGATE
    assert mismatch.field == "audit[2].command_data.format"
    assert (mismatch.stored, mismatch.replayed) == ("<missing>", "parquet")


async def test_changed_compensation_is_found() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await failed_at_render(scenario)
    result = await scenario.replay(NoCleanupOfAggregates(scenario.bus))
    mismatch = result.first
    assert mismatch is not None
    assert mismatch.field == "audit[4].step_name"
    assert (mismatch.stored, mismatch.replayed) == (
        Step.DELETE_AGGREGATED_DATA,
        Step.DELETE_QUERY_RESULT,
    )


async def test_without_the_start_input_a_process_is_reported_not_replayable() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await completed(scenario)
    # A row stored before the start input was kept (migration 003) has none.
    old_row = scenario.process.copy(initial_data=None)
    result = await replay_process(scenario.manager, old_row, scenario.audit_trail)
    assert result.first is not None
    assert result.first.field == "initial_data"
    assert "not stored" in result.first.detail
    # given explicitly, it replays
    given = await replay_process(
        scenario.manager, old_row, scenario.audit_trail, initial_data=REQUEST
    )
    assert given.ok


async def test_check_replay_over_a_backend() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    for story in STORIES:
        await story(scenario)
    assert (
        await check_replay(scenario.backend, [scenario.manager], initial_data=scenario.initial_data)
        == []
    )
    results = await replay_all(
        scenario.backend, [scenario.manager], initial_data=scenario.initial_data
    )
    assert len(results) == len(STORIES)

    changed = RenderWritesAnotherField(scenario.bus)
    mismatches = await check_replay(
        scenario.backend, {"StatementReport": changed}, initial_data=scenario.initial_data
    )
    # Only the process that completed its render step is affected.
    assert len(mismatches) == 1
    assert mismatches[0].field == "state.aggregated_data_path"

    with pytest.raises(ValueError, match="no manager for process type 'Nope'"):
        await check_replay(scenario.backend, [changed], "Nope")


async def test_the_start_input_is_read_from_the_process_row_when_stored() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    await completed(scenario)
    process = scenario.process
    assert process.initial_data == REQUEST  # stored by start()
    assert (await replay_process(scenario.manager, process, scenario.audit_trail)).ok
    changed = await replay_process(
        RenderWritesAnotherField(scenario.bus), process, scenario.audit_trail
    )
    assert changed.first is not None and changed.first.field == "state.aggregated_data_path"


async def test_check_replay_reads_the_stored_start_inputs() -> None:
    scenario: Scenario = ProcessScenario(StatementReportProcess)
    for story in STORIES:
        await story(scenario)
    # No initial_data= given: every process's start input comes from its row.
    results = await replay_all(scenario.backend, [scenario.manager])
    assert len(results) == len(STORIES)
    assert [str(r.first) for r in results if not r.ok] == []
    mismatches = await check_replay(scenario.backend, [RenderWritesAnotherField(scenario.bus)])
    assert [(m.step, m.field) for m in mismatches] == [(Step.RENDER, "state.aggregated_data_path")]


class DeadlinedReminder(StatementReportProcess):
    """An hour for the whole report; the aggregation is sent a day after the query."""

    process_timeout_seconds = 3600.0

    async def build_command(self, step: Step, state: StatementReportState) -> ProcessCommand[Any]:
        command = await super().build_command(step, state)
        if step is Step.AGGREGATE:
            return ProcessCommand(command.command_type, command.data, delay_seconds=86400)
        return command


async def test_process_deadline_and_delayed_steps_replay() -> None:
    scenario: Scenario = ProcessScenario(DeadlinedReminder)
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    aggregate = scenario.audit_trail[-1]
    assert aggregate.scheduled_for is not None
    assert (aggregate.scheduled_for - aggregate.sent_at) == timedelta(days=1)
    await scenario.advance(3600)  # the process deadline passes while the step waits
    scenario.expect_status(ProcessStatus.WAITING_FOR_OPERATOR, error_code="PROCESS_TIMEOUT")
    await scenario.complete_step({"result_path": "s3://a"}, operator="ops")
    await scenario.reply_success({"result_path": "s3://r.csv"})
    scenario.expect_status(ProcessStatus.COMPLETED)
    result = await scenario.replay()
    assert result.ok, [str(m) for m in result.mismatches]
    assert "process deadline" in [label for label, _ in result.history]

    # The same deadline with the aggregation sent at once: a divergence in its schedule.
    class AtOnce(DeadlinedReminder):
        async def build_command(self, step: Step, state: StatementReportState) -> Any:
            return await StatementReportProcess.build_command(self, step, state)

    at_once = await scenario.replay(AtOnce(scenario.bus))
    assert at_once.first is not None
    assert at_once.first.field == "audit[2].scheduled_for"
