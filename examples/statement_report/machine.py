"""``StatementReportMachine``: the StatementReport process as a state machine.

The same process as ``StatementReportProcess`` (by hand) and ``StatementReportSteps``
(the step DSL): each state sends one command; a SUCCESS reply takes the transition out of
it; ``reported`` is final.
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
from examples.statement_report.steps import record_deleted

from commandbus.process import (
    StateMachineProcessManager,
    final,
    save,
    state,
    transition,
    undo,
)

Step = StatementReportStep


class StatementReportMachine(StateMachineProcessManager[StatementReportState, StatementReportStep]):
    """Querying -> aggregating -> rendering -> reported; compensations as in the others."""

    process_type = "StatementReport"
    domain = "reporting"

    states = (
        state(
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
        state(
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
        state(
            Step.RENDER,
            "StatementRender",
            data=lambda s: StatementRenderRequest(s.aggregated_data_path, s.output_type),
            on_reply=save(rendered_file_path="result_path"),
        ),
        final("reported"),
    )
    transitions = (
        transition(Step.QUERY, Step.AGGREGATE),
        transition(Step.AGGREGATE, Step.RENDER),
        transition(Step.RENDER, "reported"),
    )

    def create_initial_state(self, initial_data: dict[str, Any]) -> StatementReportState:
        return initial_state(initial_data)
