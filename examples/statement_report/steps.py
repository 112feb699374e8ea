"""``StatementReportSteps``: the StatementReport process in the step DSL.

The same process as ``StatementReportProcess`` (written by hand in ``process.py``): the
same process type, steps, commands, compensations and state, so both give the same
history for the same replies (``tests/unit/test_declared_statement_report.py``).
"""

from __future__ import annotations

from typing import Any

from examples.statement_report.models import (
    DeletePathRequest,
    StatementDataAggregationRequest,
    StatementQueryRequest,
    StatementRenderRequest,
    StatementReportState,
    StatementReportStep,
)
from examples.statement_report.process import initial_state

from commandbus.models import Reply
from commandbus.process import StepProcessManager, save, step, undo

Step = StatementReportStep


def record_deleted(state: StatementReportState, reply: Reply) -> None:
    """A clean-up command replied: remember the path it deleted."""
    path = (reply.data or {}).get("deleted")
    if isinstance(path, str):
        state.deleted_paths = [*(state.deleted_paths or []), path]


class StatementReportSteps(StepProcessManager[StatementReportState, StatementReportStep]):
    """Query the accounts, aggregate the data, render the report; on a failure or a
    cancel, delete what the completed steps left behind (newest first)."""

    process_type = "StatementReport"
    domain = "reporting"

    flow = (
        step(
            Step.QUERY,
            "StatementQuery",
            data=lambda s: StatementQueryRequest(s.from_date, s.to_date, s.account_list),
            on_reply=save(query_result_path="result_path"),
            compensation=undo(
                Step.DELETE_QUERY_RESULT,
                "DeleteQueryResult",
                data=lambda s: DeletePathRequest(s.query_result_path),
                on_reply=record_deleted,
            ),
        ),
        step(
            Step.AGGREGATE,
            "StatementDataAggregation",
            data=lambda s: StatementDataAggregationRequest(s.query_result_path),
            on_reply=save(aggregated_data_path="result_path"),
            compensation=undo(
                Step.DELETE_AGGREGATED_DATA,
                "DeleteAggregatedData",
                data=lambda s: DeletePathRequest(s.aggregated_data_path),
                on_reply=record_deleted,
            ),
        ),
        step(
            Step.RENDER,
            "StatementRender",
            data=lambda s: StatementRenderRequest(s.aggregated_data_path, s.output_type),
            on_reply=save(rendered_file_path="result_path"),
        ),
    )

    def create_initial_state(self, initial_data: dict[str, Any]) -> StatementReportState:
        return initial_state(initial_data)
