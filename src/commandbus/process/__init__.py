"""Process managers: multi-step command flows with typed state, audit, compensation,
timeouts and recovery, driven by command replies (see docs/process-manager.md).

The PostgreSQL repository lives with the other adapters
(``commandbus.postgres.process_repository.PostgresProcessRepository``, also available as
``PostgresBackend(pool).processes``). The seed's ``from commandbus.process import
PostgresProcessRepository`` works too: the name comes from the adapter registry
(``commandbus.backends.adapter_export``, filled by ``commandbus.wiring``), so this package
still never imports an adapter.

The names are loaded on first use, so that importing one module of the package (say
``commandbus.process.models``, which the ports use) does not import all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commandbus.process.base import BaseProcessManager, ProcessManager
    from commandbus.process.declared import DeclaredProcessManager
    from commandbus.process.declared_steps import save, undo
    from commandbus.process.dsl import StepProcessManager, finish, step, when
    from commandbus.process.errors import (
        ProcessAlreadyExistsError,
        ProcessDefinitionError,
        ProcessHookError,
        ProcessVersionConflictError,
        StateLoadError,
    )
    from commandbus.process.fsm import StateMachineProcessManager, final, state, transition
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

#: public name -> the module that defines it
_SOURCES = {
    "AuditEntryKind": "commandbus.process.models",
    "BaseProcessManager": "commandbus.process.base",
    "CompensationPlan": "commandbus.process.models",
    "DeclaredProcessManager": "commandbus.process.declared",
    "Decision": "commandbus.process.kernel",
    "ProcessAlreadyExistsError": "commandbus.process.errors",
    "ProcessDefinitionError": "commandbus.process.errors",
    "ProcessManager": "commandbus.process.base",
    "ProcessAuditEntry": "commandbus.process.models",
    "ProcessCommand": "commandbus.process.models",
    "ProcessHookError": "commandbus.process.errors",
    "ProcessMessageDisposition": "commandbus.process.models",
    "ProcessMessageRecord": "commandbus.process.models",
    "ProcessMetadata": "commandbus.process.models",
    "ProcessReplyRouter": "commandbus.process.router",
    "ProcessRepository": "commandbus.process.repository",
    "ProcessResponse": "commandbus.process.models",
    "ProcessSnapshot": "commandbus.process.models",
    "ProcessState": "commandbus.process.models",
    "ProcessStatus": "commandbus.process.models",
    "ProcessVersionConflictError": "commandbus.process.errors",
    "ProcessWrites": "commandbus.process.repository",
    "RouterStats": "commandbus.process.router",
    "StateLoadError": "commandbus.process.errors",
    "StateMachineProcessManager": "commandbus.process.fsm",
    "StepDefinition": "commandbus.process.models",
    "StepProcessManager": "commandbus.process.dsl",
    "TimeoutAction": "commandbus.process.models",
    "decide": "commandbus.process.kernel",
    "decide_start": "commandbus.process.kernel",
    "final": "commandbus.process.fsm",
    "finish": "commandbus.process.dsl",
    "save": "commandbus.process.declared_steps",
    "state": "commandbus.process.fsm",
    "step": "commandbus.process.dsl",
    "transition": "commandbus.process.fsm",
    "undo": "commandbus.process.declared_steps",
    "when": "commandbus.process.dsl",
}


#: public names that adapters offer (see ``commandbus.backends.adapter_export``)
_ADAPTER_EXPORTS = frozenset({"PostgresProcessRepository"})


def __getattr__(name: str) -> Any:
    if name in _ADAPTER_EXPORTS:
        from commandbus.backends import adapter_export

        exported = adapter_export(name)
        if exported is None:
            raise ImportError(f"{name} is not registered (import commandbus first)")
        globals()[name] = exported
        return exported
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'commandbus.process' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES, *_ADAPTER_EXPORTS])


__all__ = [
    "AuditEntryKind",
    "BaseProcessManager",
    "CompensationPlan",
    "Decision",
    "DeclaredProcessManager",
    "PostgresProcessRepository",
    "ProcessAlreadyExistsError",
    "ProcessAuditEntry",
    "ProcessCommand",
    "ProcessDefinitionError",
    "ProcessHookError",
    "ProcessManager",
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
    "StateMachineProcessManager",
    "StepDefinition",
    "StepProcessManager",
    "TimeoutAction",
    "decide",
    "decide_start",
    "final",
    "finish",
    "save",
    "state",
    "step",
    "transition",
    "undo",
    "when",
]
