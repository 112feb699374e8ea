"""``StatementReportProcess``: the seed's example process manager.

Flow: StatementQuery -> StatementDataAggregation -> StatementRender. If a step fails for a
business reason, or an operator cancels a step in the troubleshooting queue, the files the
completed steps produced are deleted in reverse order (``DeleteQueryResult``,
``DeleteAggregatedData``); rendering has nothing to undo.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from examples.statement_report.models import (
    DeletePathRequest,
    OutputType,
    StatementDataAggregationRequest,
    StatementDataAggregationResponse,
    StatementQueryRequest,
    StatementQueryResponse,
    StatementRenderRequest,
    StatementRenderResponse,
    StatementReportState,
    StatementReportStep,
)

from commandbus.models import Reply
from commandbus.process import (
    BaseProcessManager,
    ProcessCommand,
    ProcessResponse,
    StepDefinition,
)

Step = StatementReportStep


def initial_state(initial_data: dict[str, Any]) -> StatementReportState:
    """The state of a new report (shared with the DSL and state machine forms)."""
    state = StatementReportState(
        from_date=date.fromisoformat(initial_data["from_date"]),
        to_date=date.fromisoformat(initial_data["to_date"]),
        account_list=list(initial_data["account_list"]),
        output_type=OutputType(initial_data["output_type"]),
    )
    if state.to_date < state.from_date:
        raise ValueError("to_date must not be before from_date")
    if not state.account_list:
        raise ValueError("account_list must name at least one account")
    return state


class StatementReportProcess(BaseProcessManager[StatementReportState, StatementReportStep]):
    """Generates a statement report for a list of accounts and a date range."""

    steps: ClassVar = (
        StepDefinition(Step.QUERY, "StatementQuery", compensation_step=Step.DELETE_QUERY_RESULT),
        StepDefinition(
            Step.AGGREGATE,
            "StatementDataAggregation",
            compensation_step=Step.DELETE_AGGREGATED_DATA,
        ),
        StepDefinition(Step.RENDER, "StatementRender"),
    )

    @property
    def process_type(self) -> str:
        return "StatementReport"

    @property
    def domain(self) -> str:
        return "reporting"

    def create_initial_state(self, initial_data: dict[str, Any]) -> StatementReportState:
        return initial_state(initial_data)

    def get_first_step(self, state: StatementReportState) -> StatementReportStep:
        return Step.QUERY

    async def build_command(
        self, step: StatementReportStep, state: StatementReportState
    ) -> ProcessCommand[Any]:
        match step:
            case Step.QUERY:
                return ProcessCommand(
                    "StatementQuery",
                    StatementQueryRequest(state.from_date, state.to_date, state.account_list),
                )
            case Step.AGGREGATE:
                assert state.query_result_path is not None
                return ProcessCommand(
                    "StatementDataAggregation",
                    StatementDataAggregationRequest(data_path=state.query_result_path),
                )
            case Step.RENDER:
                assert state.aggregated_data_path is not None
                return ProcessCommand(
                    "StatementRender",
                    StatementRenderRequest(state.aggregated_data_path, state.output_type),
                )
            case Step.DELETE_QUERY_RESULT:
                assert state.query_result_path is not None
                return ProcessCommand(
                    "DeleteQueryResult", DeletePathRequest(state.query_result_path)
                )
            case Step.DELETE_AGGREGATED_DATA:
                assert state.aggregated_data_path is not None
                return ProcessCommand(
                    "DeleteAggregatedData", DeletePathRequest(state.aggregated_data_path)
                )
        raise ValueError(f"unknown step {step!r}")

    def update_state(
        self, state: StatementReportState, step: StatementReportStep, reply: Reply
    ) -> None:
        match step:
            case Step.QUERY:
                query = ProcessResponse.from_reply(reply, StatementQueryResponse)
                if query.result:
                    state.query_result_path = query.result.result_path
            case Step.AGGREGATE:
                aggregation = ProcessResponse.from_reply(reply, StatementDataAggregationResponse)
                if aggregation.result:
                    state.aggregated_data_path = aggregation.result.result_path
            case Step.RENDER:
                render = ProcessResponse.from_reply(reply, StatementRenderResponse)
                if render.result:
                    state.rendered_file_path = render.result.result_path
            case Step.DELETE_QUERY_RESULT | Step.DELETE_AGGREGATED_DATA:
                deleted = state.deleted_paths or []
                path = (reply.data or {}).get("deleted")
                if isinstance(path, str):
                    state.deleted_paths = [*deleted, path]

    def get_next_step(
        self,
        current_step: StatementReportStep,
        reply: Reply,
        state: StatementReportState,
    ) -> StatementReportStep | None:
        match current_step:
            case Step.QUERY:
                return Step.AGGREGATE
            case Step.AGGREGATE:
                return Step.RENDER
            case _:
                return None
