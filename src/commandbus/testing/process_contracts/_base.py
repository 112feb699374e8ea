"""Fixtures and helpers shared by the ``ProcessRepository`` contracts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus.ports import Backend
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessStatus,
)
from commandbus.process.repository import ProcessRepository

DOMAIN = "reporting"
OTHER = "billing"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class _Rollback(Exception):
    pass


@dataclass
class _TypedState:
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _TypedState:
        return cls(data["count"])


def make_process(
    *,
    domain: str = DOMAIN,
    process_id: UUID | None = None,
    status: ProcessStatus = ProcessStatus.WAITING_FOR_REPLY,
    state: Any = None,
    created_at: datetime = T0,
    deadline_at: datetime | None = None,
) -> ProcessMetadata[Any, Any]:
    return ProcessMetadata(
        domain=domain,
        process_id=process_id or uuid4(),
        process_type="Report",
        status=status,
        current_step="query",
        state={"n": 1, "tags": ["a"]} if state is None else state,
        created_at=created_at,
        updated_at=created_at,
        awaiting_command_id=uuid4(),
        command_seq=1,
        deadline_at=deadline_at,
    )


def make_entry(
    step: str = "query",
    *,
    sent_at: datetime = T0,
    kind: AuditEntryKind = AuditEntryKind.STEP,
    command_id: UUID | None = None,
) -> ProcessAuditEntry:
    return ProcessAuditEntry(
        step_name=step,
        command_id=command_id or uuid4(),
        command_type="Query",
        command_data={"q": step},
        sent_at=sent_at,
        kind=kind,
    )


class RepositoryContractBase:
    """The hooks: subclasses provide the ``backend`` fixture (and ``repo`` if the repository
    is not ``backend.processes``)."""

    @pytest.fixture
    async def backend(self) -> Backend:
        raise NotImplementedError("subclass and provide a `backend` fixture")

    @pytest.fixture
    async def repo(self, backend: Backend) -> ProcessRepository:
        repo: ProcessRepository = backend.processes
        return repo

    async def let_others_run(self) -> None:
        """Give other tasks (transactions on other connections) time to block."""
        for _ in range(50):
            await asyncio.sleep(0)
