"""Process managers: multi-step command flows with typed state, audit, compensation,
timeouts and recovery, driven by command replies (see docs/process-manager.md).

The PostgreSQL repository lives with the other adapters
(``commandbus.postgres.process_repository.PostgresProcessRepository``, also available as
``PostgresBackend(pool).processes``); this package never imports an adapter.
"""

from commandbus.process.base import BaseProcessManager
from commandbus.process.errors import (
    ProcessAlreadyExistsError,
    ProcessHookError,
    ProcessVersionConflictError,
    StateLoadError,
)
from commandbus.process.kernel import Decision, decide, decide_start
from commandbus.process.models import (
    AuditEntryKind,
    CompensationPlan,
    ProcessAuditEntry,
    ProcessCommand,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessResponse,
    ProcessSnapshot,
    ProcessState,
    ProcessStatus,
    StepDefinition,
    TimeoutAction,
)
from commandbus.process.repository import ProcessRepository, ProcessWrites
from commandbus.process.router import ProcessReplyRouter, RouterStats

__all__ = [
    "AuditEntryKind",
    "BaseProcessManager",
    "CompensationPlan",
    "Decision",
    "ProcessAlreadyExistsError",
    "ProcessAuditEntry",
    "ProcessCommand",
    "ProcessHookError",
    "ProcessMessageDisposition",
    "ProcessMessageRecord",
    "ProcessMetadata",
    "ProcessReplyRouter",
    "ProcessRepository",
    "ProcessResponse",
    "ProcessSnapshot",
    "ProcessState",
    "ProcessStatus",
    "ProcessVersionConflictError",
    "ProcessWrites",
    "RouterStats",
    "StateLoadError",
    "StepDefinition",
    "TimeoutAction",
    "decide",
    "decide_start",
]
