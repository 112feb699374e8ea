"""The fold at the heart of replay: ``Replayer`` feeds a stored history, message by
message, through the pure kernel with the current manager, and stops at the first point
where the current code does something the stored process did not (``Diverged``).

What the history is made of and in which order it is fed is described in
``commandbus.process.replay``, the public entry point that runs a ``Replayer``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.process.base import BaseProcessManager
from commandbus.process.decisions import StepRetryRequested, deadline_id_for
from commandbus.process.kernel import (
    OPERATOR_RETRY,
    PROCESS_TIMEOUT,
    WITHDRAWN,
    CancelRequested,
    Decision,
    IncomingMessage,
    ReplyReceived,
    TimerFired,
    decide,
    decide_start,
)
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.process.replay._report import (
    ENTRY_FIELDS,
    PROCESS_FIELDS,
    AnyProcess,
    ReplayMismatch,
    ReplayResult,
    comparable,
    first_difference,
)
from commandbus.process.versions import STATE_VERSION_KEY, stored_version

__all__ = ["AnyManager", "Diverged", "Replayer", "error_text"]

AnyManager = BaseProcessManager[Any, Any]

# A canceled process whose compensation then failed keeps the cancel's reason only inside
# the kernel's error, "compensation failed for: ... (after CANCELED: <reason>)".
CANCELED_AFTER = re.compile(r"\(after CANCELED: (?P<reason>.*)\)$", re.DOTALL)


class Diverged(Exception):
    """The replay stopped: ``mismatch`` is the first thing the current code does otherwise."""

    def __init__(self, mismatch: ReplayMismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class Replayer:
    """Replays one stored process (``run``), keeping the replayed row and audit trail in
    ``snapshot`` and the messages it fed in ``result.history``; ``compare_final`` then
    lists where the replayed row differs from the stored one."""

    def __init__(
        self,
        manager: AnyManager,
        process: AnyProcess,
        audit: Sequence[ProcessAuditEntry],
        result: ReplayResult,
    ) -> None:
        self.manager = manager
        self.stored = process
        # State upgrades are not decisions: the replay starts at the current version.
        self.audit = [e for e in audit if str(e.kind) != "STATE_UPGRADE"]
        self.result = result
        self.snapshot: ProcessSnapshot[Any, Any] | None = None
        self.deadline_id: UUID | None = None
        self.process_deadline: datetime | None = None

    def mismatch(
        self, step: str | None, name: str, stored: Any, replayed: Any, detail: str = ""
    ) -> ReplayMismatch:
        p = self.stored
        return ReplayMismatch(
            p.domain, p.process_id, p.process_type, step, name, stored, replayed, detail
        )

    # -- folding -------------------------------------------------------------------------

    async def start(self, initial_data: JsonObject) -> None:
        manager, stored = self.manager, self.stored
        try:
            state = manager.create_initial_state(dict(initial_data))
        except Exception as exc:
            raise Diverged(
                self.mismatch(None, "initial_data", "accepted", error_text(exc), "start refused")
            ) from exc
        now = stored.created_at
        process: AnyProcess = ProcessMetadata(
            domain=stored.domain,
            process_id=stored.process_id,
            process_type=stored.process_type,
            status=ProcessStatus.PENDING,
            state=state,
            created_at=now,
            updated_at=now,
            version=1,
        )
        self.result.history.append(("start", now))
        try:
            decision = await decide_start(manager, process, now)
        except Exception as exc:
            raise Diverged(
                self.mismatch(None, "start", "decided", error_text(exc), "a hook raised")
            ) from exc
        deadline_id = deadline_id_for(stored.domain, stored.process_id)
        self.deadline_id = deadline_id
        self.process_deadline = next(
            (t.fire_at for t in decision.timers if t.command_id == deadline_id), None
        )
        self.apply(decision, ProcessSnapshot(process, []))

    def _deadline_fired(self, entry: ProcessAuditEntry) -> bool:
        """Whether the process deadline (not the step's timer) timed ``entry`` out: its
        error says so, or only the process deadline explains when it happened."""
        if entry.timed_out_at is None or self.process_deadline is None:
            return False
        if entry.error_code == PROCESS_TIMEOUT:
            return True
        assert self.snapshot is not None
        step_deadline = self.snapshot.process.deadline_at
        explained_by_step = step_deadline is not None and step_deadline <= entry.timed_out_at
        return not explained_by_step and entry.timed_out_at >= self.process_deadline

    async def feed(self, message: IncomingMessage, now: datetime, label: str) -> None:
        """Decide ``message`` and apply the decision (it must not be ignored)."""
        assert self.snapshot is not None
        self.result.history.append((label, now))
        try:
            decision = await decide(self.manager, self.snapshot, message, now)
        except Exception as exc:
            step = self._step_of(message)
            raise Diverged(
                self.mismatch(step, label, "handled", error_text(exc), "a hook raised")
            ) from exc
        if decision.ignored is not None:
            # Everything the audit recorded was acted on when it happened.
            raise Diverged(
                self.mismatch(
                    self._step_of(message),
                    label,
                    "applied",
                    f"ignored: {decision.ignored}",
                    "the current code ignores a message the process acted on",
                )
            )
        self.apply(decision, self.snapshot)

    def apply(self, decision: Decision[Any, Any], before: ProcessSnapshot[Any, Any]) -> None:
        assert decision.process is not None
        updated = {e.command_id: e for e in decision.audit_updates}
        audit = [updated.get(e.command_id, e) for e in before.audit]
        audit.extend(decision.audit_inserts)
        self.snapshot = ProcessSnapshot(decision.process, audit)
        # Every new entry must be the stored entry at the same position.
        for index in range(len(before.audit), len(audit)):
            self.compare_entry(index, audit[index])

    def compare_entry(self, index: int, replayed: ProcessAuditEntry) -> None:
        step = replayed.step_name
        if index >= len(self.audit):
            raise Diverged(
                self.mismatch(
                    step,
                    f"audit[{index + 1}]",
                    None,
                    f"{replayed.command_type} {replayed.command_data}",
                    "the current code sends a command the process never sent",
                )
            )
        stored = self.audit[index]
        for name in ENTRY_FIELDS:
            a, b = getattr(stored, name), getattr(replayed, name)
            if name == "kind":
                a, b = str(a), str(b)
            if a != b:
                path, sa, sb = first_difference(f"audit[{index + 1}].{name}", a, b)
                raise Diverged(self.mismatch(stored.step_name, path, sa, sb))
        if stored.command_id != replayed.command_id:
            raise Diverged(
                self.mismatch(
                    stored.step_name,
                    f"audit[{index + 1}].command_id",
                    stored.command_id,
                    replayed.command_id,
                )
            )

    def _step_of(self, message: IncomingMessage) -> str | None:
        command_id: UUID | None = None
        if isinstance(message, ReplyReceived):
            command_id = message.reply.command_id
        elif isinstance(message, TimerFired):
            command_id = message.command_id
        for entry in self.audit:
            if entry.command_id == command_id:
                return entry.step_name
        return str(self.snapshot.process.current_step) if self.snapshot else None

    async def run(self, initial_data: JsonObject) -> None:
        await self.start(initial_data)
        stored = self.stored
        index = 0
        while index < len(self.audit):
            assert self.snapshot is not None
            replayed_count = len(self.snapshot.audit)
            if index >= replayed_count:
                # The replay sent nothing more, yet the process did: only a cancel (the
                # one message the audit does not record) starts a compensation like this.
                entry = self.audit[index]
                process = self.snapshot.process
                if (
                    str(entry.kind) == "COMPENSATION"
                    and process.status is not ProcessStatus.COMPENSATING
                    and not process.status.is_terminal
                ):
                    await self.feed(CancelRequested(self.cancel_reason()), entry.sent_at, "cancel")
                if len(self.snapshot.audit) <= index:
                    raise Diverged(
                        self.mismatch(
                            entry.step_name,
                            f"audit[{index + 1}]",
                            f"{entry.command_type} {entry.command_data}",
                            None,
                            "the current code does not send this command",
                        )
                    )
                continue
            entry = self.audit[index]
            if self._deadline_fired(entry):
                assert entry.timed_out_at is not None
                assert self.deadline_id is not None
                fired = TimerFired(self.deadline_id)
                await self.feed(fired, entry.timed_out_at, "process deadline")
            elif entry.timed_out_at is not None:
                deadline = self.snapshot.process.deadline_at
                if deadline is None or deadline > entry.timed_out_at:
                    raise Diverged(
                        self.mismatch(
                            entry.step_name,
                            f"audit[{index + 1}].timed_out_at",
                            entry.timed_out_at,
                            deadline,
                            "the step timed out, but under the current code its timer "
                            + ("would not exist" if deadline is None else "fires later"),
                        )
                    )
                await self.feed(
                    TimerFired(entry.command_id), entry.timed_out_at, f"timer {entry.step_name}"
                )
            if entry.error_code == OPERATOR_RETRY and entry.reply_outcome is None:
                # An operator re-sent this step: the next entry is the new command.
                following = self.audit[index + 1] if index + 1 < len(self.audit) else entry
                message = entry.error_message or ""
                operator = message.removeprefix("retried by ") if " by " in message else None
                retry = StepRetryRequested(operator)
                await self.feed(retry, following.sent_at, f"operator retry of {entry.step_name}")
                index += 1
                continue
            if entry.error_code == WITHDRAWN and entry.received_at is not None:
                # Not a reply: a cancel withdrew this command before it started.
                await self.feed(CancelRequested(self.cancel_reason()), entry.received_at, "cancel")
                index += 1
                continue
            if (
                entry.reply_outcome is not None
                and entry.received_at is not None
                and self._cancel_waited_for(entry)
            ):
                # A cancel came while this step's command ran; it waited for this reply.
                cancel = CancelRequested(self.cancel_reason(), awaited_started=True)
                await self.feed(cancel, entry.received_at, "cancel")
            if entry.reply_outcome is not None and entry.received_at is not None:
                # The reply exactly as the audit stored it, not ``Reply.answering``: an
                # audit entry has no correlation id or domain, and ``answering`` would drop
                # the data of a non-SUCCESS reply (or the error of a SUCCESS one) that the
                # process did receive, so the hooks would see another reply than it did.
                reply = Reply(
                    command_id=entry.command_id,
                    correlation_id=stored.process_id,
                    outcome=ReplyOutcome(entry.reply_outcome),
                    data=entry.reply_data,
                    error_code=entry.error_code,
                    error_message=entry.error_message,
                    domain=stored.domain,
                    command_type=entry.command_type,
                )
                label = f"reply {entry.reply_outcome} to {entry.step_name}"
                await self.feed(ReplyReceived(reply), entry.received_at, label)
            index += 1
        assert self.snapshot is not None
        if (
            not self.snapshot.process.status.is_terminal
            and stored.status is ProcessStatus.CANCELED
            and stored.completed_at is not None
        ):
            await self.feed(CancelRequested(self.cancel_reason()), stored.completed_at, "cancel")
        if len(self.snapshot.audit) > len(self.audit):
            extra = self.snapshot.audit[len(self.audit)]
            raise Diverged(
                self.mismatch(
                    extra.step_name,
                    f"audit[{len(self.audit) + 1}]",
                    None,
                    f"{extra.command_type} {extra.command_data}",
                    "the current code sends a command the process never sent",
                )
            )

    def _cancel_waited_for(self, entry: ProcessAuditEntry) -> bool:
        """Whether a cancel waited for the reply of ``entry``: the stored plan names its
        step, and it is the last forward step the process sent."""
        plan = self.stored.compensation
        if plan is None or plan.waited_for is None or entry.step_name != plan.waited_for:
            return False
        steps = [e for e in self.audit if str(e.kind) == "STEP"]
        return bool(steps) and steps[-1].command_id == entry.command_id

    def cancel_reason(self) -> str:
        message = self.stored.error_message or "canceled"
        if self.stored.error_code == "CANCELED":
            return message
        found = CANCELED_AFTER.search(message)
        return found.group("reason") if found else message

    def compare_final(self) -> list[ReplayMismatch]:
        assert self.snapshot is not None
        replayed = self.snapshot.process
        stored = self.stored
        step = str(stored.current_step) if stored.current_step is not None else None
        found: list[ReplayMismatch] = []
        for name in PROCESS_FIELDS:
            a = comparable(name, getattr(stored, name))
            b = comparable(name, getattr(replayed, name))
            if a != b and name == "state" and self._compatible_state(a, b):
                continue
            if a != b:
                path, sa, sb = first_difference(name, a, b)
                found.append(self.mismatch(step, path, sa, sb))
        return found

    def _compatible_state(self, stored: Any, replayed: Any) -> bool:
        """Whether the stored state, read by the current code (upgraded to its
        ``state_version``, through ``from_dict`` and ``to_dict``), is the replayed one: a
        compatible change (a field added with a default, an upgraded version), noted in
        ``result.compatible``. Anything else is a divergence."""
        try:
            normalised = comparable("state", self.manager.load_state(dict(stored)))
        except Exception:
            return False
        if normalised != replayed:
            return False
        notes = []
        before, after = stored_version(stored), stored_version(replayed)
        if before != after:
            notes.append(f"state upgraded from version {before} to {after}")
        added = sorted(k for k in replayed if k not in stored and k != STATE_VERSION_KEY)
        if added:
            notes.append("field(s) added with their defaults: " + ", ".join(added))
        removed = sorted(k for k in stored if k not in replayed and k != STATE_VERSION_KEY)
        if removed:
            notes.append("field(s) no longer stored: " + ", ".join(removed))
        self.result.compatible.extend(notes or ["state written differently, read the same"])
        return True


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
