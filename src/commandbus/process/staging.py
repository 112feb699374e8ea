"""What the engine collects for one transaction, and the types it reads of a definition.

``Staged`` gathers the writes of a batch of decisions (process rows, audit entries, the
message log, the commands to send, the step timers, the commands to withdraw, the state
upgrades to record) so that ``ProcessEngine.flush`` writes them in a few statements.
``SendingPolicy`` is how a process type's commands are sent; ``EngineManager`` is what the
engine reads of a process definition (``BaseProcessManager`` provides it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID, uuid5

from commandbus.models import JsonObject, ReplyOutcome, SendRequest
from commandbus.process.decisions import PROCESS_COMMAND_NAMESPACE
from commandbus.process.errors import ProcessHookError
from commandbus.process.kernel import Decision, ProcessHooks, timer_message
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
)
from commandbus.process.repository import JsonText, state_to_dict
from commandbus.process.versions import declared_version, stored_version
from commandbus.process.withdrawal import HeldCommand
from commandbus.validation import encode_payload

__all__ = ["EngineManager", "SendingPolicy", "Staged", "checked_state", "state_upgrade"]


@dataclass(frozen=True)
class SendingPolicy:
    """How a process type's commands are sent: their replies go to ``reply_queue``, they
    may be attempted ``max_attempts`` times (None: the store's default) and their data is
    held to ``max_payload_bytes``, the same limit as ``bus.send``."""

    reply_queue: str
    max_attempts: int | None
    max_payload_bytes: int


class EngineManager(ProcessHooks[Any, Any], Protocol):
    """What the engine needs of a process definition besides the kernel's hooks
    (``BaseProcessManager`` provides it): how its commands are sent, and how its stored
    snapshots load."""

    @property
    def sending(self) -> SendingPolicy: ...

    def load_snapshot(self, snapshot: ProcessSnapshot[Any, Any]) -> ProcessSnapshot[Any, Any]: ...


#: Makes the headers of the commands a decision sends (called only if it sends any).
Outgoing = Callable[[], JsonObject | None]


@dataclass
class Staged:
    """Writes collected for one transaction (see ``ProcessEngine.flush``)."""

    updates: dict[tuple[str, UUID], ProcessMetadata[Any, Any]] = field(default_factory=dict)
    audit_inserts: dict[tuple[str, UUID, UUID], ProcessAuditEntry] = field(default_factory=dict)
    audit_updates: dict[tuple[str, UUID, UUID], ProcessAuditEntry] = field(default_factory=dict)
    messages: list[ProcessMessageRecord] = field(default_factory=list)
    commands: list[SendRequest] = field(default_factory=list)
    # (command_id, process_id, reason): commands to withdraw if they have not started
    withdrawals: list[tuple[UUID, UUID, str]] = field(default_factory=list)
    # command rows already read and locked in this transaction (a cancel reads the awaited
    # one to decide), so that withdrawing them does not read them again
    locked_commands: dict[UUID, HeldCommand] = field(default_factory=dict)
    # (queue, delay) -> timer messages
    timers: dict[tuple[str, float], list[JsonObject]] = field(default_factory=dict)
    # process id -> (stored, current) state version, for states upgraded when loaded
    upgrades: dict[UUID, tuple[int, int]] = field(default_factory=dict)

    def add_upgrade(
        self, process: ProcessMetadata[Any, Any], stored: int, current: int, now: datetime
    ) -> None:
        """The audit entry saying the state was upgraded from version ``stored``."""
        key = (process.domain, process.process_id)
        name = f"{process.domain}/{process.process_id}/state/v{current}"
        entry = ProcessAuditEntry(
            step_name=f"state v{stored} -> v{current}",
            command_id=uuid5(PROCESS_COMMAND_NAMESPACE, name),
            command_type="state_upgrade",
            command_data={"from_version": stored, "to_version": current},
            sent_at=now,
            reply_outcome=ReplyOutcome.SUCCESS,
            received_at=now,
            kind=AuditEntryKind.STATE_UPGRADE,
        )
        self.audit_inserts[(*key, entry.command_id)] = entry

    def add_decision(
        self,
        manager: EngineManager,
        decision: Decision[Any, Any],
        expected_version: int,
        state_json: JsonText,
        headers: Outgoing | None = None,
    ) -> None:
        process = decision.process
        assert process is not None
        key = (process.domain, process.process_id)
        raw = process.copy(
            state=state_json,
            current_step=str(process.current_step) if process.current_step is not None else None,
            version=expected_version,
        )
        self.updates[key] = raw
        self.add_effects(manager, process.domain, process.process_id, decision, headers)

    def add_effects(
        self,
        manager: EngineManager,
        domain: str,
        process_id: UUID,
        decision: Decision[Any, Any],
        outgoing: Outgoing | None = None,
    ) -> None:
        """Stage what ``decision`` writes besides the process row; the commands it sends
        carry the headers ``outgoing`` makes (trace context and causation id, with
        telemetry on; made only when the decision sends a command)."""
        headers = outgoing() if outgoing is not None and decision.commands else None
        for entry in decision.audit_inserts:
            self.audit_inserts[(domain, process_id, entry.command_id)] = entry
        for entry in decision.audit_updates:
            akey = (domain, process_id, entry.command_id)
            if akey in self.audit_inserts:  # sent and answered within one batch
                self.audit_inserts[akey] = entry
            else:
                self.audit_updates[akey] = entry
        for command in decision.commands:
            self.commands.append(
                SendRequest(
                    domain=command.domain,
                    command_type=command.command_type,
                    command_id=command.command_id,
                    data=command.data,
                    correlation_id=process_id,
                    reply_to=manager.sending.reply_queue,
                    max_attempts=manager.sending.max_attempts,
                    delay=command.delay_seconds or None,
                    encoded_data=command.data_json,
                    headers=headers,
                )
            )
        if decision.withdrawals:
            process = decision.process
            why = f"{process.error_code}: {process.error_message}" if process else "withdrawn"
            for command_id in decision.withdrawals:
                self.withdrawals.append((command_id, process_id, why))
        for timer in decision.timers:
            message = timer_message(domain, process_id, timer.command_id, timer.fire_at)
            queue = manager.sending.reply_queue
            self.timers.setdefault((queue, timer.delay_seconds), []).append(message)


def checked_state(decision: Decision[Any, Any], process_type: str) -> JsonText:
    """The new state as stored JSON text; a state that cannot be stored (not JSON, too
    large) is a hook failure of that message alone."""
    assert decision.process is not None
    try:
        return JsonText(encode_payload(state_to_dict(decision.process.state), "process state"))
    except Exception as exc:
        raise ProcessHookError("to_dict", process_type, exc) from exc


def state_upgrade(
    manager: EngineManager, process: ProcessMetadata[Any, Any]
) -> tuple[int, int] | None:
    """``(stored, current)`` when loading ``process`` upgraded its state; else None."""
    current = declared_version(getattr(manager, "state_class", None))
    if current is None or not isinstance(process.state, dict):
        return None
    stored = stored_version(process.state)
    return (stored, current) if stored != current else None
