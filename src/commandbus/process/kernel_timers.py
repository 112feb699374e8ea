"""The kernel's timers: a step's timeout and the whole process's deadline.

A step timer that fires while its command is still awaited (and the process is not with
an operator) asks ``on_step_timeout`` for a ``TimeoutAction``; a process deadline
(``get_process_timeout``, set at the start) asks ``on_process_timeout``. Both mark the
awaited audit entry (``timed_out_at``) and withdraw a command they give up. Pure.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from commandbus.process.decisions import (
    Decision,
    Ignored,
    deadline_id_for,
)
from commandbus.process.draft import (
    PROCESS_TIMEOUT,
    STEP_TIMEOUT,
    Draft,
    ProcessHooks,
    S,
    T,
    consecutive_attempts,
)
from commandbus.process.models import (
    AuditEntryKind,
    ProcessSnapshot,
    ProcessStatus,
    TimeoutAction,
)

__all__ = ["on_timer"]


async def on_timer(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    command_id: UUID,
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    process = snapshot.process
    if command_id == deadline_id_for(process.domain, process.process_id):
        return await _on_deadline(hooks, snapshot, now, copy_state)
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

    draft = Draft(hooks, snapshot, now, copy_state)
    step = draft.parse(entry.step_name)
    draft.mark_timed_out(entry)
    if entry.kind is AuditEntryKind.COMPENSATION:
        draft.compensation_failed(entry.step_name)
        await draft.next_compensation()
        return draft.decision()

    attempt = consecutive_attempts(snapshot.audit, entry.step_name)
    action = draft.call("on_step_timeout", hooks.on_step_timeout, step, draft.state, attempt)
    message = f"step {entry.step_name} got no reply in time (attempt {attempt})"
    await draft.act_on_timeout(TimeoutAction(action), entry, STEP_TIMEOUT, message)
    return draft.decision()


async def _on_deadline(
    hooks: ProcessHooks[S, T],
    snapshot: ProcessSnapshot[S, T],
    now: datetime,
    copy_state: bool,
) -> Decision[S, T]:
    """The whole process ran out of time: ``on_process_timeout`` chooses, as for a step.
    The awaited step's audit entry records it (``timed_out_at``, error PROCESS_TIMEOUT)."""
    process = snapshot.process
    awaited = snapshot.awaited_entry()
    if (
        process.status is ProcessStatus.COMPENSATING
        or awaited is None
        or awaited.kind is not AuditEntryKind.STEP
        or awaited.is_answered
    ):
        return Decision.ignore(
            Ignored.DEADLINE_NOT_APPLICABLE,
            f"process deadline while {process.status.value}: it is winding down already",
        )
    draft = Draft(hooks, snapshot, now, copy_state)
    on_timeout = getattr(hooks, "on_process_timeout", None)
    action = (
        draft.call("on_process_timeout", on_timeout, draft.state)
        if on_timeout is not None
        else TimeoutAction.TSQ
    )
    message = f"the process ran out of time at step {awaited.step_name}"
    marked = awaited.copy()
    marked.timed_out_at = now
    marked.error_code, marked.error_message = PROCESS_TIMEOUT, message
    draft.audit_updates.append(marked)
    draft.set_error(PROCESS_TIMEOUT, message)  # kept by a RETRY too: the process is late
    await draft.act_on_timeout(TimeoutAction(action), awaited, PROCESS_TIMEOUT, message)
    return draft.decision()
