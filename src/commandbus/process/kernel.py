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
- The whole process's deadline (``get_process_timeout``, a timer set at the start) asks
  ``on_process_timeout`` for the same choices; a step may be sent later
  (``ProcessCommand.delay_seconds``), its timeout counting from then
  (``commandbus.process.kernel_timers``).
- A command the process no longer awaits (cancel, a timeout that re-sends or gives up,
  an operator's step action) is in ``Decision.withdrawals``: the engine cancels it if it
  has not started.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

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
    deadline_id_for,
    parse_timer_message,
    timer_message,
)
from commandbus.process.draft import (
    COMPENSATION_FAILED,
    OPERATOR_COMPLETED,
    OPERATOR_RETRY,
    PROCESS_TIMEOUT,
    STEP_TIMEOUT,
    WITHDRAWN,
    Draft,
    ProcessHooks,
    S,
    T,
)
from commandbus.process.kernel_timers import on_timer
from commandbus.process.models import (
    AuditEntryKind,
    CompensationPlan,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)

__all__ = [
    "COMPENSATION_FAILED",
    "OPERATOR_COMPLETED",
    "OPERATOR_RETRY",
    "PROCESS_COMMAND_NAMESPACE",
    "PROCESS_TIMEOUT",
    "STEP_TIMEOUT",
    "TIMER_MESSAGE_KIND",
    "WITHDRAWN",
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


async def decide_start(
    hooks: ProcessHooks[S, T],
    process: ProcessMetadata[S, T],
    now: datetime,
    *,
    copy_state: bool = True,
) -> Decision[S, T]:
    """Decide the start of ``process`` (new, with its initial state): send the first step.

    ``copy_state=False``: see ``decide``."""
    draft = Draft(hooks, ProcessSnapshot(process, []), now, copy_state)
    first = draft.call("get_first_step", hooks.get_first_step, draft.state)
    await draft.send(first, AuditEntryKind.STEP)
    draft.process.status = ProcessStatus.WAITING_FOR_REPLY
    get_timeout = getattr(hooks, "get_process_timeout", None)
    limit = draft.call("get_process_timeout", get_timeout, draft.state) if get_timeout else None
    if limit is not None and limit > 0:
        # The whole process's deadline: a durable timer like a step's, fired once.
        deadline = deadline_id_for(process.domain, process.process_id)
        draft.timers.append(
            TimerRequest(deadline, float(limit), now + timedelta(seconds=float(limit)))
        )
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
        return await on_timer(hooks, snapshot, message.command_id, now, copy_state)
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

    draft = Draft(hooks, snapshot, now, copy_state)
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
    draft = Draft(hooks, snapshot, now, copy_state)
    draft.set_error("CANCELED", cancel.reason)
    awaited = snapshot.awaited_entry()
    if awaited is not None and awaited.kind is AuditEntryKind.STEP and not awaited.is_answered:
        if cancel.awaited_started:
            # Its handler runs (or ran): wait for the outcome, so that a step that
            # succeeded is compensated too. Compensation starts when the reply arrives.
            draft.process.status = ProcessStatus.COMPENSATING
            draft.process.compensation = CompensationPlan(
                target=ProcessStatus.CANCELED, waiting_for=awaited.step_name
            )
            if cancel.awaited_elsewhere:  # its cluster withdraws it if it has not started
                draft.withdrawals.append(awaited.command_id)
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
    awaited = snapshot.awaited_entry()
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
    draft = Draft(hooks, snapshot, now, copy_state)
    draft.withdrawals.append(awaited.command_id)
    superseded = awaited.copy()
    superseded.error_code = OPERATOR_RETRY
    superseded.error_message = f"retried{by}"
    draft.audit_updates.append(superseded)
    await draft.send(draft.parse(awaited.step_name), AuditEntryKind.STEP)
    draft.process.status = ProcessStatus.WAITING_FOR_REPLY
    draft.set_error(None, None)
    return draft.decision()
