"""The decision under construction, and what the kernel reads of a process definition.

``Draft`` is a copy of the process plus the effects a decision accumulates (commands to
send, audit entries to add or update, timers, withdrawals); ``kernel`` and
``kernel_timers`` build one per message and turn it into a ``Decision``. ``ProcessHooks``
is the protocol of the hooks they call; the error codes are the ones the kernel writes.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from commandbus.models import Reply, ReplyOutcome
from commandbus.process.decisions import (
    Decision,
    OutgoingCommand,
    TimerRequest,
    command_id_for,
)
from commandbus.process.errors import ProcessHookError
from commandbus.process.models import (
    AuditEntryKind,
    CompensationPlan,
    ProcessAuditEntry,
    ProcessCommand,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessState,
    ProcessStatus,
    TimeoutAction,
    completed_steps,
)
from commandbus.validation import (
    MAX_DELAY_SECONDS,
    encode_payload,
    validate_command_type,
    validate_name,
    validate_seconds,
)

__all__ = [
    "COMPENSATION_FAILED",
    "OPERATOR_COMPLETED",
    "OPERATOR_RETRY",
    "PROCESS_TIMEOUT",
    "STEP_TIMEOUT",
    "WITHDRAWN",
    "Draft",
    "ProcessHooks",
    "consecutive_attempts",
]

S = TypeVar("S", bound=ProcessState)
T = TypeVar("T", bound=StrEnum)
R = TypeVar("R")

STEP_TIMEOUT = "STEP_TIMEOUT"
#: The error code of a process whose deadline (``get_process_timeout``) passed.
PROCESS_TIMEOUT = "PROCESS_TIMEOUT"
COMPENSATION_FAILED = "COMPENSATION_FAILED"
#: The error code on the audit entry of a command withdrawn before it started.
WITHDRAWN = "WITHDRAWN"
#: Error codes on the audit entry of a step an operator retried or completed.
OPERATOR_RETRY = "OPERATOR_RETRY"
OPERATOR_COMPLETED = "OPERATOR_COMPLETED"


class ProcessHooks(Protocol[S, T]):
    """What ``decide`` needs from a process manager (``BaseProcessManager`` provides it)."""

    @property
    def process_type(self) -> str: ...

    @property
    def domain(self) -> str: ...

    @property
    def max_payload_bytes(self) -> int:
        """The limit on a command's encoded data: the same as the manager's bus applies."""
        ...

    def parse_step(self, name: str) -> T: ...

    def copy_state(self, state: S) -> S: ...

    def get_first_step(self, state: S) -> T: ...

    def build_command(
        self, step: T, state: S
    ) -> ProcessCommand[Any] | Awaitable[ProcessCommand[Any]]: ...

    def update_state(self, state: S, step: T, reply: Reply) -> None: ...

    def get_next_step(self, current_step: T, reply: Reply, state: S) -> T | None: ...

    def get_compensation_step(self, step: T) -> T | None: ...

    def get_step_timeout(self, step: T, state: S) -> float | None: ...

    def on_step_timeout(self, step: T, state: S, attempt: int) -> TimeoutAction: ...


# -- deciding -----------------------------------------------------------------------------


def consecutive_attempts(audit: list[ProcessAuditEntry], step_name: str) -> int:
    count = 0
    for entry in reversed(audit):
        if entry.kind is not AuditEntryKind.STEP:
            continue
        if entry.step_name != step_name:
            break
        count += 1
    return max(count, 1)


class Draft(Generic[S, T]):
    """The decision under construction: a copy of the process plus the effects."""

    def __init__(
        self,
        hooks: ProcessHooks[S, T],
        snapshot: ProcessSnapshot[S, T],
        now: datetime,
        copy_state: bool = True,
    ) -> None:
        self.hooks = hooks
        self.snapshot = snapshot
        self.now = now
        source = snapshot.process
        state = (
            self.call("copy_state", hooks.copy_state, source.state) if copy_state else source.state
        )
        self.process: ProcessMetadata[S, T] = source.copy(state=state, updated_at=now)
        self.commands: list[OutgoingCommand] = []
        self.audit_inserts: list[ProcessAuditEntry] = []
        self.audit_updates: list[ProcessAuditEntry] = []
        self.timers: list[TimerRequest] = []
        self.withdrawals: list[UUID] = []

    @property
    def state(self) -> S:
        return self.process.state

    def call(self, name: str, fn: Callable[..., R], *args: Any) -> R:
        try:
            return fn(*args)
        except ProcessHookError:
            raise
        except Exception as exc:
            raise ProcessHookError(name, self.hooks.process_type, exc) from exc

    def parse(self, step_name: str) -> T:
        return self.call("parse_step", self.hooks.parse_step, step_name)

    def set_error(self, code: str | None, message: str | None) -> None:
        self.process.error_code = code
        self.process.error_message = message

    def record_reply(self, entry: ProcessAuditEntry, reply: Reply) -> None:
        updated = entry.copy()
        updated.reply_outcome = reply.outcome
        updated.reply_data = reply.data
        updated.received_at = self.now
        updated.error_code = reply.error_code
        updated.error_message = reply.error_message
        self.audit_updates.append(updated)

    def record_withdrawn(self, entry: ProcessAuditEntry, reason: str) -> None:
        """The awaited command was withdrawn before it started: answered CANCELED."""
        updated = entry.copy()
        updated.reply_outcome = ReplyOutcome.CANCELED
        updated.received_at = self.now
        updated.error_code = WITHDRAWN
        updated.error_message = f"withdrawn before it started: {reason}"
        self.audit_updates.append(updated)

    def trail(self) -> list[ProcessAuditEntry]:
        """The audit trail with this decision's updates applied."""
        updated = {e.command_id: e for e in self.audit_updates}
        return [updated.get(e.command_id, e) for e in self.snapshot.audit]

    def mark_timed_out(self, entry: ProcessAuditEntry) -> None:
        updated = entry.copy()
        updated.timed_out_at = self.now
        self.audit_updates.append(updated)

    async def act_on_timeout(
        self, action: TimeoutAction, entry: ProcessAuditEntry, code: str, message: str
    ) -> None:
        """What a step timeout or the process deadline decided for the awaited ``entry``:
        ``RETRY`` sends its step again, ``TSQ`` waits for an operator, ``COMPENSATE`` and
        ``FAIL`` give up (with error ``code``). A command given up or re-sent is withdrawn."""
        if action is not TimeoutAction.TSQ:
            self.withdrawals.append(entry.command_id)  # must not run if not started
        if action is TimeoutAction.RETRY:
            await self.send(self.parse(entry.step_name), AuditEntryKind.STEP)
            self.process.status = ProcessStatus.WAITING_FOR_REPLY
            return
        self.set_error(code, message)
        if action is TimeoutAction.TSQ:
            self.process.status = ProcessStatus.WAITING_FOR_OPERATOR
            self.process.deadline_at = None
        elif action is TimeoutAction.COMPENSATE:
            await self.compensate(ProcessStatus.FAILED)
        else:
            self.finish(ProcessStatus.FAILED)

    async def send(self, step: T, kind: AuditEntryKind) -> None:
        hooks = self.hooks
        process = self.process
        built = self.call("build_command", hooks.build_command, step, self.state)
        if inspect.isawaitable(built):
            try:
                built = await built
            except Exception as exc:
                raise ProcessHookError("build_command", hooks.process_type, exc) from exc
        if not isinstance(built, ProcessCommand):
            raise ProcessHookError(
                "build_command",
                hooks.process_type,
                TypeError(f"expected a ProcessCommand, got {type(built).__name__}"),
            )
        try:
            data = built.data_dict()
            command_type = validate_command_type(built.command_type)
            domain = validate_name(built.domain or process.domain)
            data_json = encode_payload(
                data, f"command data of step {step}", hooks.max_payload_bytes
            )
            delay = validate_seconds(
                built.delay_seconds, "delay_seconds", MAX_DELAY_SECONDS, allow_zero=True
            )
        except Exception as exc:
            raise ProcessHookError("build_command", hooks.process_type, exc) from exc
        seq = process.command_seq + 1
        command_id = command_id_for(process.domain, process.process_id, seq)
        step_name = str(step)
        process.command_seq = seq
        process.awaiting_command_id = command_id
        process.current_step = step
        self.commands.append(
            OutgoingCommand(
                domain, command_type, command_id, data, step_name, kind, data_json, delay
            )
        )
        # A step sent later: its command is visible then, and its timeout counts from then.
        visible_at = self.now + timedelta(seconds=delay)
        self.audit_inserts.append(
            ProcessAuditEntry(
                step_name=step_name,
                command_id=command_id,
                command_type=command_type,
                command_data=data,
                sent_at=self.now,
                kind=kind,
                scheduled_for=visible_at if delay else None,
            )
        )
        timeout = self.call("get_step_timeout", hooks.get_step_timeout, step, self.state)
        if timeout is not None and timeout > 0:
            fire_at = visible_at + timedelta(seconds=float(timeout))
            process.deadline_at = fire_at
            self.timers.append(TimerRequest(command_id, delay + float(timeout), fire_at))
        else:
            process.deadline_at = None

    async def compensate(self, target: ProcessStatus, waited_for: str | None = None) -> None:
        """Start compensating the completed forward steps, newest first."""
        completed = completed_steps(self.trail())
        remaining: list[str] = []
        for name in reversed(completed):
            step = self.parse(name)
            compensation = self.call(
                "get_compensation_step", self.hooks.get_compensation_step, step
            )
            if compensation is not None:
                remaining.append(str(compensation))
        self.process.compensation = CompensationPlan(
            target=target, remaining=tuple(remaining), waited_for=waited_for
        )
        self.process.status = ProcessStatus.COMPENSATING
        await self.next_compensation()

    def compensation_failed(self, step_name: str) -> None:
        plan = self.process.compensation
        if plan is None:  # defensive: a compensation entry outside a compensation
            plan = CompensationPlan(target=ProcessStatus.FAILED)
        self.process.compensation = CompensationPlan(
            target=plan.target,
            remaining=plan.remaining,
            failed=(*plan.failed, step_name),
            waited_for=plan.waited_for,
        )

    async def next_compensation(self) -> None:
        plan = self.process.compensation
        assert plan is not None
        if not plan.remaining:
            if plan.failed:
                self.set_error(
                    COMPENSATION_FAILED,
                    "compensation failed for: "
                    + ", ".join(plan.failed)
                    + (
                        f" (after {self.process.error_code}: {self.process.error_message})"
                        if self.process.error_code
                        else ""
                    ),
                )
                self.finish(ProcessStatus.FAILED)
            else:
                self.finish(plan.target)
            return
        step = self.parse(plan.remaining[0])
        self.process.compensation = CompensationPlan(
            target=plan.target,
            remaining=plan.remaining[1:],
            failed=plan.failed,
            waited_for=plan.waited_for,
        )
        await self.send(step, AuditEntryKind.COMPENSATION)
        self.process.status = ProcessStatus.COMPENSATING

    def finish(self, status: ProcessStatus) -> None:
        process = self.process
        process.status = status
        process.completed_at = self.now
        process.awaiting_command_id = None
        process.deadline_at = None

    def decision(self) -> Decision[S, T]:
        return Decision(
            process=self.process,
            commands=tuple(self.commands),
            audit_inserts=tuple(self.audit_inserts),
            audit_updates=tuple(self.audit_updates),
            timers=tuple(self.timers),
            withdrawals=tuple(self.withdrawals),
        )
