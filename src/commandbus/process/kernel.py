"""The pure core of the process manager: ``decide(hooks, snapshot, message, now)``.

Everything a process does is decided here from (the manager's hooks, the process with its
audit trail, one incoming message, the current time) and returned as a ``Decision`` value:
the new process row, the commands to send, audit entries to add or update and timers to
schedule — or "ignored" with a reason. Nothing here does I/O, reads a clock or draws a
random number; command ids are ``uuid5`` of the process and its command counter. So the
same inputs always give the same decision, which makes processes replayable and testable
without a database. ``commandbus.process.engine`` applies decisions (one transaction).

The manager hooks are the seed's (``get_first_step``, ``build_command`` — sync or async —,
``update_state``, ``get_next_step``, ``get_compensation_step``) plus two for timeouts
(``get_step_timeout``, ``on_step_timeout``). They must be deterministic too; an exception
from a hook is raised as ``ProcessHookError`` and nothing is decided.

Rules (ARCHITECTURE §1.2, §5):

- A reply is matched to the audit entry of its command. It is *ignored* (recorded in the
  message log, no change) when the process is terminal, the command is not one of the
  process's, the command was already answered (duplicate), or the process no longer awaits
  it (stale: the step was retried after a timeout, or the process was canceled).
- ``IN_TROUBLESHOOTING_QUEUE`` notice for a step: WAITING_FOR_TSQ; the command stays
  awaited, so the operator's retry (a later reply), complete (SUCCESS) or cancel (CANCELED)
  continues the process.
- SUCCESS: ``update_state`` then ``get_next_step``; None completes the process.
- FAILED (a business rule refused the step): ``update_state`` (the state may record the
  failure, as in the seed), then compensate, and end **FAILED** with the
  reply's error code and message — the process did not reach its goal because of a
  business failure, and FAILED keeps that visible (COMPENSATED is kept for an operator's
  cancel, as the design document has it).
- CANCELED (operator canceled the step in the TSQ): compensate, then end COMPENSATED.
- ``cancel()``: compensate, then end CANCELED. A command in flight is abandoned (its late
  reply is ignored); see docs/process-manager.md for what that means for compensation.
- Compensation runs one command at a time, for the completed forward steps in reverse
  order (steps whose ``get_compensation_step`` is None are skipped). A compensation that
  fails (FAILED, CANCELED, troubleshooting notice or timeout) is recorded and the rest
  continue; the process then ends FAILED with error ``COMPENSATION_FAILED``.
- A step timer that fires while its command is still awaited (and the process is not
  already with an operator) asks ``on_step_timeout`` for a ``TimeoutAction``. A timer for
  a compensation command counts as a failed compensation.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from commandbus.models import Reply, ReplyOutcome
from commandbus.process.decisions import (
    PROCESS_COMMAND_NAMESPACE,
    TIMER_MESSAGE_KIND,
    CancelRequested,
    Decision,
    Ignored,
    IncomingMessage,
    OperatorRequest,
    OutgoingCommand,
    ReplyReceived,
    StepCompletionRequested,
    TimerFired,
    TimerRequest,
    command_id_for,
    parse_timer_message,
    timer_message,
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
from commandbus.validation import encode_payload, validate_command_type, validate_name

__all__ = [
    "PROCESS_COMMAND_NAMESPACE",
    "TIMER_MESSAGE_KIND",
    "CancelRequested",
    "Decision",
    "Ignored",
    "IncomingMessage",
    "OutgoingCommand",
    "ProcessHooks",
    "ReplyReceived",
    "TimerFired",
    "TimerRequest",
    "command_id_for",
    "decide",
    "decide_start",
    "parse_timer_message",
    "timer_message",
]

S = TypeVar("S", bound=ProcessState)
T = TypeVar("T", bound=StrEnum)
R = TypeVar("R")

STEP_TIMEOUT = "STEP_TIMEOUT"
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


async def decide_start(
    hooks: ProcessHooks[S, T],
    process: ProcessMetadata[S, T],
    now: datetime,
    *,
    copy_state: bool = True,
) -> Decision[S, T]:
    """Decide the start of ``process`` (new, with its initial state): send the first step.

    ``copy_state=False``: see ``decide``."""
    draft = _Draft(hooks, ProcessSnapshot(process, []), now, copy_state)
    first = draft.call("get_first_step", hooks.get_first_step, draft.state)
    await draft.send(first, AuditEntryKind.STEP)
    draft.process.status = ProcessStatus.WAITING_FOR_REPLY
    return draft.decision()


async def decide(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    message: IncomingMessage,
    now: datetime,
    *,
    copy_state: bool = True,
) -> Decision[S, T]:
    """Decide what ``message`` does to the process in ``snapshot`` (not modified).

    The hooks work on a copy of the state (``hooks.copy_state``). A caller that will not
    look at ``snapshot`` again may pass ``copy_state=False`` to save the copy: the hooks
    then change ``snapshot.process.state`` in place (also when they fail halfway), and the
    decision's process carries that very state object."""
    process = snapshot.process
    if process.status.is_terminal:
        return Decision.ignore(Ignored.FINISHED, f"process is {process.status.value}")
    if isinstance(message, ReplyReceived):
        return await _on_reply(hooks, snapshot, message.reply, now, copy_state)
    if isinstance(message, TimerFired):
        return await _on_timer(hooks, snapshot, message.command_id, now, copy_state)
    if isinstance(message, CancelRequested):
        return await _on_cancel(hooks, snapshot, message, now, copy_state)
    return await _on_operator(hooks, snapshot, message, now, copy_state)


async def _on_reply(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    reply: Reply,
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    process = snapshot.process
    if reply.correlation_id is not None and reply.correlation_id != process.process_id:
        return Decision.ignore(Ignored.OTHER_PROCESS, "reply correlates to another process")
    entry = snapshot.entry_for(reply.command_id)
    if entry is None:
        return Decision.ignore(Ignored.NOT_SENT, "command was not sent by this process")
    if entry.is_answered:
        outcome = entry.reply_outcome.value if entry.reply_outcome else "?"
        return Decision.ignore(
            Ignored.DUPLICATE, f"duplicate reply: command already answered {outcome}"
        )
    if reply.command_id != process.awaiting_command_id:
        return Decision.ignore(
            Ignored.STALE, "stale reply: the process no longer awaits this command"
        )

    draft = _Draft(hooks, snapshot, now, copy_state)
    step = draft.parse(entry.step_name)
    draft.record_reply(entry, reply)

    plan = process.compensation
    if entry.kind is AuditEntryKind.STEP and plan is not None and plan.waiting_for is not None:
        # A cancel waited for this step's outcome: it succeeded (compensate it with the
        # others), failed, was canceled, or went to the troubleshooting queue (withdraw it
        # there, it must not run after the cancel).
        if reply.outcome in (ReplyOutcome.SUCCESS, ReplyOutcome.FAILED):
            draft.call("update_state", hooks.update_state, draft.state, step, reply)
        if reply.outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE:
            draft.withdrawals.append(entry.command_id)
        await draft.compensate(plan.target, waited_for=plan.waiting_for)
        return draft.decision()

    if entry.kind is AuditEntryKind.COMPENSATION:
        if reply.outcome is ReplyOutcome.SUCCESS:
            draft.call("update_state", hooks.update_state, draft.state, step, reply)
        else:
            draft.compensation_failed(entry.step_name)
        await draft.next_compensation()
        return draft.decision()

    match reply.outcome:
        case ReplyOutcome.IN_TROUBLESHOOTING_QUEUE:
            draft.process.status = ProcessStatus.WAITING_FOR_TSQ
            draft.set_error(reply.error_code or "IN_TROUBLESHOOTING_QUEUE", reply.error_message)
            draft.process.deadline_at = None
        case ReplyOutcome.SUCCESS:
            draft.call("update_state", hooks.update_state, draft.state, step, reply)
            following = draft.call("get_next_step", hooks.get_next_step, step, reply, draft.state)
            draft.set_error(None, None)
            if following is None:
                draft.finish(ProcessStatus.COMPLETED)
            else:
                await draft.send(following, AuditEntryKind.STEP)
                draft.process.status = ProcessStatus.WAITING_FOR_REPLY
        case ReplyOutcome.FAILED:
            # As the seed does: the state may record the failure before compensation.
            draft.call("update_state", hooks.update_state, draft.state, step, reply)
            draft.set_error(reply.error_code or "FAILED", reply.error_message)
            await draft.compensate(ProcessStatus.FAILED)
        case ReplyOutcome.CANCELED:
            draft.set_error(
                reply.error_code or "CANCELED_IN_TSQ",
                reply.error_message or f"step {entry.step_name} was canceled by an operator",
            )
            await draft.compensate(ProcessStatus.COMPENSATED)
    return draft.decision()


async def _on_timer(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    command_id: UUID,
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    process = snapshot.process
    if command_id != process.awaiting_command_id:
        return Decision.ignore(
            Ignored.TIMER_NOT_AWAITED, "timer for a command the process no longer awaits"
        )
    entry = snapshot.entry_for(command_id)
    if entry is None or entry.is_answered:
        return Decision.ignore(Ignored.TIMER_ANSWERED, "timer for a command already answered")
    if process.status.needs_operator:
        return Decision.ignore(
            Ignored.TIMER_WAITING_FOR_OPERATOR, "timer while the process waits for an operator"
        )
    plan = process.compensation
    if entry.kind is AuditEntryKind.STEP and plan is not None and plan.waiting_for is not None:
        return Decision.ignore(
            Ignored.TIMER_WHILE_CANCELING,
            "timer while a cancel waits for the outcome of the step's started command",
        )

    draft = _Draft(hooks, snapshot, now, copy_state)
    step = draft.parse(entry.step_name)
    draft.mark_timed_out(entry)
    if entry.kind is AuditEntryKind.COMPENSATION:
        draft.compensation_failed(entry.step_name)
        await draft.next_compensation()
        return draft.decision()

    attempt = _consecutive_attempts(snapshot.audit, entry.step_name)
    action = draft.call("on_step_timeout", hooks.on_step_timeout, step, draft.state, attempt)
    message = f"step {entry.step_name} got no reply in time (attempt {attempt})"
    match TimeoutAction(action):
        case TimeoutAction.RETRY:
            draft.withdrawals.append(command_id)  # superseded: must not run if not started
            await draft.send(step, AuditEntryKind.STEP)
            draft.process.status = ProcessStatus.WAITING_FOR_REPLY
        case TimeoutAction.TSQ:
            draft.process.status = ProcessStatus.WAITING_FOR_OPERATOR
            draft.process.deadline_at = None
            draft.set_error(STEP_TIMEOUT, message)
        case TimeoutAction.COMPENSATE:
            draft.withdrawals.append(command_id)
            draft.set_error(STEP_TIMEOUT, message)
            await draft.compensate(ProcessStatus.FAILED)
        case TimeoutAction.FAIL:
            draft.withdrawals.append(command_id)
            draft.set_error(STEP_TIMEOUT, message)
            draft.finish(ProcessStatus.FAILED)
    return draft.decision()


async def _on_cancel(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    cancel: CancelRequested,
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    process = snapshot.process
    if process.status is ProcessStatus.COMPENSATING:
        return Decision.ignore(Ignored.ALREADY_COMPENSATING, "process is already compensating")
    draft = _Draft(hooks, snapshot, now, copy_state)
    draft.set_error("CANCELED", cancel.reason)
    awaited = (
        snapshot.entry_for(process.awaiting_command_id)
        if process.awaiting_command_id is not None
        else None
    )
    if awaited is not None and awaited.kind is AuditEntryKind.STEP and not awaited.is_answered:
        if cancel.awaited_started:
            # Its handler runs (or ran): wait for the outcome, so that a step that
            # succeeded is compensated too. Compensation starts when the reply arrives.
            draft.process.status = ProcessStatus.COMPENSATING
            draft.process.compensation = CompensationPlan(
                target=ProcessStatus.CANCELED, waiting_for=awaited.step_name
            )
            return draft.decision()
        draft.withdrawals.append(awaited.command_id)  # not started: it must never run
        draft.record_withdrawn(awaited, cancel.reason)
    await draft.compensate(ProcessStatus.CANCELED)
    return draft.decision()


async def _on_operator(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    request: OperatorRequest,
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    """An operator's decision on the awaited step of a process that needs one."""
    process = snapshot.process
    awaited = (
        snapshot.entry_for(process.awaiting_command_id)
        if process.awaiting_command_id is not None
        else None
    )
    if (
        not process.status.needs_operator
        or awaited is None
        or awaited.kind is not AuditEntryKind.STEP
        or awaited.is_answered
    ):
        return Decision.ignore(
            Ignored.NOT_WAITING_FOR_OPERATOR,
            f"process is {process.status.value}, not waiting for an operator on a step",
        )
    by = f" by {request.operator}" if request.operator else ""
    if isinstance(request, StepCompletionRequested):
        reply = Reply(
            command_id=awaited.command_id,
            correlation_id=process.process_id,
            outcome=ReplyOutcome.SUCCESS,
            data=request.result,
            error_code=OPERATOR_COMPLETED,
            error_message=f"completed{by}",
        )
        decision = await _on_reply(hooks, snapshot, reply, now, copy_state)
        return dataclasses.replace(
            decision, withdrawals=(awaited.command_id, *decision.withdrawals)
        )
    draft = _Draft(hooks, snapshot, now, copy_state)
    draft.withdrawals.append(awaited.command_id)
    superseded = awaited.copy()
    superseded.error_code = OPERATOR_RETRY
    superseded.error_message = f"retried{by}"
    draft.audit_updates.append(superseded)
    await draft.send(draft.parse(awaited.step_name), AuditEntryKind.STEP)
    draft.process.status = ProcessStatus.WAITING_FOR_REPLY
    draft.set_error(None, None)
    return draft.decision()


def _consecutive_attempts(audit: list[ProcessAuditEntry], step_name: str) -> int:
    count = 0
    for entry in reversed(audit):
        if entry.kind is not AuditEntryKind.STEP:
            continue
        if entry.step_name != step_name:
            break
        count += 1
    return max(count, 1)


class _Draft(Generic[S, T]):
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
        except Exception as exc:
            raise ProcessHookError("build_command", hooks.process_type, exc) from exc
        seq = process.command_seq + 1
        command_id = command_id_for(process.domain, process.process_id, seq)
        step_name = str(step)
        process.command_seq = seq
        process.awaiting_command_id = command_id
        process.current_step = step
        self.commands.append(
            OutgoingCommand(domain, command_type, command_id, data, step_name, kind, data_json)
        )
        self.audit_inserts.append(
            ProcessAuditEntry(
                step_name=step_name,
                command_id=command_id,
                command_type=command_type,
                command_data=data,
                sent_at=self.now,
                kind=kind,
            )
        )
        timeout = self.call("get_step_timeout", hooks.get_step_timeout, step, self.state)
        if timeout is not None and timeout > 0:
            fire_at = self.now + timedelta(seconds=float(timeout))
            process.deadline_at = fire_at
            self.timers.append(TimerRequest(command_id, float(timeout), fire_at))
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
