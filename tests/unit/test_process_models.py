"""Process models: status values, serialisation round trips (hypothesis), typed replies."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import uuid4

from examples.statement_report.models import (
    OutputType,
    StatementQueryRequest,
    StatementQueryResponse,
    StatementRenderRequest,
    StatementReportState,
)
from hypothesis import given
from hypothesis import strategies as st

from commandbus.models import Reply, ReplyOutcome
from commandbus.process import (
    CompensationPlan,
    ProcessCommand,
    ProcessResponse,
    ProcessStatus,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(names, json_values, max_size=5)
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1))
accounts = st.lists(st.text(min_size=1, max_size=10), max_size=5)


def test_status_values_are_the_design_documents() -> None:
    # The design's statuses, plus one it lacks: a timed-out step waiting for an operator.
    assert {s.name: s.value for s in ProcessStatus} == {
        "WAITING_FOR_OPERATOR": "WAITING_FOR_OPERATOR",
        "PENDING": "PENDING",
        "IN_PROGRESS": "IN_PROGRESS",
        "WAITING_FOR_REPLY": "WAITING",
        "WAITING_FOR_TSQ": "WAITING_FOR_TSQ",
        "COMPENSATING": "COMPENSATING",
        "COMPLETED": "COMPLETED",
        "COMPENSATED": "COMPENSATED",
        "FAILED": "FAILED",
        "CANCELED": "CANCELED",
    }
    assert isinstance(ProcessStatus.WAITING_FOR_REPLY, str)
    terminal = {s for s in ProcessStatus if s.is_terminal}
    assert terminal == {
        ProcessStatus.COMPLETED,
        ProcessStatus.COMPENSATED,
        ProcessStatus.FAILED,
        ProcessStatus.CANCELED,
    }


@given(
    target=st.sampled_from(list(ProcessStatus)),
    remaining=st.lists(names, max_size=5),
    failed=st.lists(names, max_size=5),
)
def test_compensation_plan_round_trips(
    target: ProcessStatus, remaining: list[str], failed: list[str]
) -> None:
    plan = CompensationPlan(target, tuple(remaining), tuple(failed))
    assert CompensationPlan.from_dict(plan.to_dict()) == plan


@given(command_type=names, data=json_objects)
def test_process_command_with_dict_data_round_trips(
    command_type: str, data: dict[str, Any]
) -> None:
    command = ProcessCommand(command_type, data)
    assert ProcessCommand.from_dict(command.to_dict(), dict) == command


@given(from_date=dates, to_date=dates, account_list=accounts)
def test_process_command_with_typed_data_round_trips(
    from_date: date, to_date: date, account_list: list[str]
) -> None:
    command = ProcessCommand(
        "StatementQuery", StatementQueryRequest(from_date, to_date, account_list), "other"
    )
    as_dict = command.to_dict()
    assert as_dict["data"]["from_date"] == from_date.isoformat()
    assert ProcessCommand.from_dict(as_dict, StatementQueryRequest) == command


@given(path=st.text(max_size=50), output=st.sampled_from(list(OutputType)))
def test_render_request_round_trips(path: str, output: OutputType) -> None:
    request = StatementRenderRequest(path, output)
    assert StatementRenderRequest.from_dict(request.to_dict()) == request


@given(
    from_date=dates,
    to_date=dates,
    account_list=accounts,
    output=st.sampled_from(list(OutputType)),
    paths=st.lists(st.none() | st.text(max_size=30), min_size=3, max_size=3),
)
def test_statement_state_round_trips(
    from_date: date,
    to_date: date,
    account_list: list[str],
    output: OutputType,
    paths: list[str | None],
) -> None:
    state = StatementReportState(from_date, to_date, account_list, output, *paths)
    assert StatementReportState.from_dict(state.to_dict()) == state


@given(result_path=st.text(max_size=40))
def test_process_response_parses_typed_result(result_path: str) -> None:
    reply = Reply(uuid4(), uuid4(), ReplyOutcome.SUCCESS, {"result_path": result_path})
    response = ProcessResponse.from_reply(reply, StatementQueryResponse)
    assert response.result == StatementQueryResponse(result_path)
    assert response.outcome is ReplyOutcome.SUCCESS
    assert (response.error_code, response.error_message) == (None, None)


def test_process_response_without_data_or_from_dict() -> None:
    failed = Reply(uuid4(), None, ReplyOutcome.FAILED, None, "E1", "refused")
    response = ProcessResponse.from_reply(failed, StatementQueryResponse)
    assert response.result is None
    assert (response.error_code, response.error_message) == ("E1", "refused")
    raw = ProcessResponse.from_reply(Reply(uuid4(), None, ReplyOutcome.SUCCESS, {"a": 1}), dict)
    assert raw.result == {"a": 1}
