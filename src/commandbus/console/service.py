"""What the console shows and does, through the library's operator API only.

Every read and every action goes through the same objects the CLI uses —
``TroubleshootingQueue``, ``CommandBus`` queries, the process managers' ``cancel``,
``replay_parked``, the ports' ``stats``/``count_by_status`` — never SQL of its own, so the
console has the same rules (row locks, validation, audit) as every other operator.
Every action is also logged on ``commandbus.console.audit`` with the operator's name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from commandbus.activity import CommandActivity, ProcessActivity
from commandbus.bus import CommandBus
from commandbus.console.pictures import Branches, Diagram, process_branches, process_diagram
from commandbus.errors import CommandBusError, InvalidOperationError, ValidationError
from commandbus.models import AuditEvent, CommandMetadata, JsonObject, QueueStats
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.ports import Backend
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessStatus,
)
from commandbus.process.parked import replay_parked
from commandbus.validation import (
    command_queue,
    process_reply_queue,
    validate_name,
    validate_uuid,
)

audit_log = logging.getLogger("commandbus.console.audit")

#: Processes an operator should look at.
NEEDS_ATTENTION = (
    ProcessStatus.WAITING_FOR_TSQ,
    ProcessStatus.WAITING_FOR_OPERATOR,
    ProcessStatus.FAILED,
)


@dataclass(frozen=True)
class DomainSummary:
    domain: str
    commands: QueueStats
    replies: QueueStats
    tsq_size: int
    processes: dict[str, int]


@dataclass(frozen=True)
class Activity:
    """The dashboard's last hour: commands per domain and minute, process and step
    durations (each read once for every domain)."""

    commands: CommandActivity
    processes: ProcessActivity


@dataclass(frozen=True)
class CommandView:
    meta: CommandMetadata
    audit: list[AuditEvent]
    payload: JsonObject | None


@dataclass(frozen=True)
class ProcessView:
    process: ProcessMetadata[Any, Any]
    audit: list[ProcessAuditEntry]
    parked: list[ProcessMessageRecord]
    can_cancel: bool
    #: It waits for an operator on a step (WAITING_FOR_OPERATOR) and the console has its
    #: manager: retry the step, or complete it by hand.
    can_act_on_step: bool
    #: Its definition's diagram with the path it took (None: an event-driven process).
    diagram: Diagram | None
    #: An event-driven process's branches side by side (none for the others).
    branches: Branches


class ConsoleService:
    """The console's operations on ``backend`` for ``domains`` (and ``managers``' own)."""

    def __init__(
        self,
        backend: Backend,
        domains: Iterable[str] = (),
        managers: Sequence[BaseProcessManager[Any, Any]] = (),
    ) -> None:
        self.backend = backend
        self.bus = CommandBus(backend)
        self.tsq = TroubleshootingQueue(backend)
        self.managers = {m.process_type: m for m in managers}
        found = {validate_name(d) for d in domains} | {m.domain for m in managers}
        if not found:
            raise ValidationError("the console needs at least one domain (or process manager)")
        self.domains = sorted(found)

    def domain(self, value: str | None) -> str:
        """``value`` if it is one of the console's domains, else the first one."""
        if value and value in self.domains:
            return value
        if value:
            raise ValidationError(f"unknown domain {value!r}; one of {self.domains}")
        return self.domains[0]

    # -- reads ---------------------------------------------------------------------------

    async def summary(self, domain: str) -> DomainSummary:
        processes = getattr(self.backend, "processes", None)
        counts = await processes.count_by_status(domain) if processes is not None else {}
        return DomainSummary(
            domain=domain,
            commands=await self.backend.queue.stats(command_queue(domain)),
            replies=await self.backend.queue.stats(process_reply_queue(domain)),
            tsq_size=await self.tsq.count_troubleshooting(domain),
            processes={s.value: n for s, n in sorted(counts.items())},
        )

    async def activity(self, minutes: int = 60) -> Activity:
        """The last ``minutes`` minutes, the current one last (whole minutes, so a chart's
        bars keep their place from one refresh to the next)."""
        now = self.backend.clock.now()
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
        commands = await self.backend.commands.activity(since, minutes=minutes)
        processes = await self.backend.processes.activity(since)
        return Activity(commands, processes)

    async def command(self, domain: str, command_id: UUID | str) -> CommandView | None:
        meta = await self.bus.get_command(domain, command_id)
        if meta is None:
            return None
        audit = await self.bus.get_audit_trail(meta.command_id, domain)
        payload = await self.backend.commands.archived_message(domain, meta.command_id)
        return CommandView(meta, audit, payload)

    async def search_commands(
        self,
        domain: str,
        *,
        command_id: str | None = None,
        command_type: str | None = None,
        status: str | None = None,
        correlation_id: str | None = None,
        limit: int = 100,
    ) -> list[CommandMetadata]:
        if command_id:
            found = await self.bus.get_command(domain, command_id)
            return [found] if found is not None else []
        return await self.bus.query_commands(
            status=status or None,
            domain=domain,
            command_type=command_type or None,
            correlation_id=correlation_id or None,
            limit=limit,
        )

    async def processes(
        self, domain: str, statuses: Sequence[ProcessStatus], process_type: str | None, limit: int
    ) -> list[ProcessMetadata[Any, Any]]:
        found = await self.backend.processes.find_by_status(domain, statuses, limit=limit)
        return [p for p in found if process_type is None or p.process_type == process_type]

    async def process(self, domain: str, process_id: UUID | str) -> ProcessView | None:
        pid = validate_uuid(process_id, "process_id")
        repo = self.backend.processes
        process = await repo.get_by_id(domain, pid)
        if process is None:
            return None
        audit = await repo.get_audit_trail(domain, pid)
        parked = await repo.list_messages(
            process_id=pid, disposition=ProcessMessageDisposition.PARKED, limit=100
        )
        manager = self.managers.get(process.process_type)
        can_cancel = manager is not None and not process.status.is_terminal
        waits = process.status is ProcessStatus.WAITING_FOR_OPERATOR
        can_act_on_step = manager is not None and waits
        branches = await process_branches(self.backend, process)
        diagram = None if branches.event_driven else await process_diagram(process, audit, manager)
        return ProcessView(process, audit, parked, can_cancel, can_act_on_step, diagram, branches)

    async def parked(self, domain: str, limit: int = 100) -> list[ProcessMessageRecord]:
        return await self.backend.processes.list_messages(
            domain=domain, disposition=ProcessMessageDisposition.PARKED, limit=limit
        )

    # -- actions (each audited with the operator's name) ----------------------------------

    async def retry(self, operator: str, domain: str, command_id: str) -> None:
        await self.tsq.operator_retry(domain, command_id, operator=operator)
        _audit(operator, "retry", domain, command_id)

    async def cancel(self, operator: str, domain: str, command_id: str, reason: str) -> None:
        await self.tsq.operator_cancel(domain, command_id, reason, operator=operator)
        _audit(operator, "cancel", domain, command_id, reason=reason)

    async def complete(
        self, operator: str, domain: str, command_id: str, result: JsonObject | None
    ) -> None:
        await self.tsq.operator_complete(domain, command_id, result, operator=operator)
        _audit(operator, "complete", domain, command_id)

    async def bulk_retry(
        self, operator: str, domain: str, command_type: str | None, limit: int
    ) -> tuple[int, int]:
        """Retry every TSQ item of the filter (up to ``limit``); returns (retried, skipped):
        an item another operator resolved meanwhile is skipped, not an error."""
        items = await self.tsq.list_troubleshooting(domain, command_type or None, limit)
        retried = skipped = 0
        for item in items:
            try:
                await self.retry(operator, domain, str(item.command_id))
                retried += 1
            except InvalidOperationError:
                skipped += 1
        return retried, skipped

    async def cancel_process(
        self, operator: str, domain: str, process_id: str, reason: str
    ) -> None:
        manager, process = await self._manager_of(domain, process_id)
        await manager.cancel(process.process_id, f"{reason} (canceled by {operator})")
        _audit(operator, "cancel process", domain, process_id, reason=reason)

    async def retry_step(
        self, operator: str, domain: str, process_id: str
    ) -> ProcessMetadata[Any, Any]:
        """Send the awaited step of a process that waits for an operator again (the
        manager's ``retry_step``; the operator's name is in the process's audit trail)."""
        manager, process = await self._manager_of(domain, process_id)
        done = await manager.retry_step(process.process_id, operator=operator)
        _audit(operator, "retry step", domain, process_id, step=process.current_step)
        return done

    async def complete_step(
        self, operator: str, domain: str, process_id: str, result: JsonObject | None
    ) -> ProcessMetadata[Any, Any]:
        """Complete the awaited step by hand with ``result`` (the manager's
        ``complete_step``: ``update_state`` sees it as the SUCCESS reply's data)."""
        manager, process = await self._manager_of(domain, process_id)
        done = await manager.complete_step(process.process_id, result or {}, operator=operator)
        _audit(operator, "complete step", domain, process_id, step=process.current_step)
        return done

    async def _manager_of(
        self, domain: str, process_id: str
    ) -> tuple[BaseProcessManager[Any, Any], ProcessMetadata[Any, Any]]:
        """The stored process and its manager (which runs its hooks), or a clear error."""
        process = await self.backend.processes.get_by_id(
            domain, validate_uuid(process_id, "process_id")
        )
        if process is None:
            raise InvalidOperationError(f"no process {process_id} in domain {domain!r}")
        manager = self.managers.get(process.process_type)
        if manager is None or manager.domain != domain:
            raise InvalidOperationError(
                f"the console has no manager for process type {process.process_type!r} in "
                f"domain {domain!r}: start it with --processes naming your managers"
            )
        return manager, process

    async def replay(self, operator: str, domain: str, record_id: int) -> bool:
        replayed = await replay_parked(self.backend, record_id)
        if replayed:
            _audit(operator, "replay parked message", domain, str(record_id))
        return replayed


def _audit(operator: str, action: str, domain: str, target: str, **details: Any) -> None:
    audit_log.info(
        "console: %s %s %s in %s%s",
        operator,
        action,
        target,
        domain,
        "".join(f"; {k}: {v}" for k, v in details.items()),
        extra={"operator": operator, "domain": domain},
    )


__all__ = [
    "NEEDS_ATTENTION",
    "Activity",
    "CommandBusError",
    "CommandView",
    "ConsoleService",
    "DomainSummary",
    "ProcessView",
]
