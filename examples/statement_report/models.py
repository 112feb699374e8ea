"""Typed state, steps and messages of the StatementReport process (from the design doc)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any


class OutputType(StrEnum):
    """Output format of a statement report."""

    PDF = "pdf"
    HTML = "html"
    CSV = "csv"


class StatementReportStep(StrEnum):
    """Steps of the statement report process, and the compensations of two of them."""

    QUERY = "statement_query"
    AGGREGATE = "statement_data_aggregation"
    RENDER = "statement_render"
    # Compensations: remove what a completed step left behind.
    DELETE_QUERY_RESULT = "delete_query_result"
    DELETE_AGGREGATED_DATA = "delete_aggregated_data"


@dataclass(frozen=True)
class StatementQueryRequest:
    from_date: date
    to_date: date
    account_list: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_date": self.from_date.isoformat(),
            "to_date": self.to_date.isoformat(),
            "account_list": self.account_list,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementQueryRequest:
        return cls(
            from_date=date.fromisoformat(data["from_date"]),
            to_date=date.fromisoformat(data["to_date"]),
            account_list=list(data["account_list"]),
        )


@dataclass(frozen=True)
class StatementQueryResponse:
    result_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"result_path": self.result_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementQueryResponse:
        return cls(result_path=data["result_path"])


@dataclass(frozen=True)
class StatementDataAggregationRequest:
    data_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"data_path": self.data_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementDataAggregationRequest:
        return cls(data_path=data["data_path"])


@dataclass(frozen=True)
class StatementDataAggregationResponse:
    result_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"result_path": self.result_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementDataAggregationResponse:
        return cls(result_path=data["result_path"])


@dataclass(frozen=True)
class StatementRenderRequest:
    aggregated_data_path: str
    output_type: OutputType

    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregated_data_path": self.aggregated_data_path,
            "output_type": self.output_type.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementRenderRequest:
        return cls(
            aggregated_data_path=data["aggregated_data_path"],
            output_type=OutputType(data["output_type"]),
        )


@dataclass(frozen=True)
class StatementRenderResponse:
    result_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"result_path": self.result_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementRenderResponse:
        return cls(result_path=data["result_path"])


@dataclass(frozen=True)
class DeletePathRequest:
    """Data of the clean-up (compensation) commands."""

    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeletePathRequest:
        return cls(path=data["path"])


@dataclass  # not frozen: the process updates its state in place
class StatementReportState:
    from_date: date
    to_date: date
    account_list: list[str]
    output_type: OutputType

    query_result_path: str | None = None
    aggregated_data_path: str | None = None
    rendered_file_path: str | None = None
    deleted_paths: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_date": self.from_date.isoformat(),
            "to_date": self.to_date.isoformat(),
            "account_list": self.account_list,
            "output_type": self.output_type.value,
            "query_result_path": self.query_result_path,
            "aggregated_data_path": self.aggregated_data_path,
            "rendered_file_path": self.rendered_file_path,
            "deleted_paths": self.deleted_paths,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatementReportState:
        return cls(
            from_date=date.fromisoformat(data["from_date"]),
            to_date=date.fromisoformat(data["to_date"]),
            account_list=list(data["account_list"]),
            output_type=OutputType(data["output_type"]),
            query_result_path=data.get("query_result_path"),
            aggregated_data_path=data.get("aggregated_data_path"),
            rendered_file_path=data.get("rendered_file_path"),
            deleted_paths=data.get("deleted_paths"),
        )
