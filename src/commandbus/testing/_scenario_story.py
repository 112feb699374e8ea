"""How a ``ProcessScenario`` tells the story of a process: the commands it sent
(``SentCommand``), a readable account of its row and history (``describe_process``), and
the error its failed assertions raise (``ScenarioAssertionError``).

Split from ``commandbus.testing.scenario``, which re-exports every name here; import them
from there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from commandbus.models import JsonObject, ReplyOutcome
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageRecord,
    ProcessMetadata,
)

__all__ = ["ScenarioAssertionError", "SentCommand", "describe_process", "short_json"]


class ScenarioAssertionError(AssertionError):
    """An ``expect_*`` of a scenario failed; the message tells the story of the process."""


@dataclass(frozen=True)
class SentCommand:
    """A command a process sent (one audit entry), with the reply it got so far."""

    index: int  # 1-based position in the process's audit trail
    step: str
    command_type: str
    command_id: UUID
    data: JsonObject
    kind: AuditEntryKind
    reply_outcome: ReplyOutcome | None = None
    reply_data: JsonObject | None = None

    @property
    def is_compensation(self) -> bool:
        return self.kind is AuditEntryKind.COMPENSATION

    @classmethod
    def from_entry(cls, index: int, entry: ProcessAuditEntry) -> SentCommand:
        return cls(
            index=index,
            step=entry.step_name,
            command_type=entry.command_type,
            command_id=entry.command_id,
            data=dict(entry.command_data or {}),
            kind=AuditEntryKind(entry.kind),
            reply_outcome=entry.reply_outcome,
            reply_data=entry.reply_data,
        )

    def __str__(self) -> str:
        kind = " (compensation)" if self.is_compensation else ""
        return f"{self.command_type}{kind} step={self.step} data={short_json(self.data)}"


def short_json(value: object, limit: int = 120) -> str:
    """``value`` as compact JSON, cut to ``limit`` characters (for one-line messages)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_process(
    process: ProcessMetadata[Any, Any] | None,
    audit: Sequence[ProcessAuditEntry],
    ignored: Sequence[ProcessMessageRecord] = (),
) -> str:
    """A readable multi-line account of a process: its row and every command with its
    reply (what assertion messages and ``commandbus process show`` print)."""
    if process is None:
        return "no process"
    state = process.state
    state_dict = state.to_dict() if hasattr(state, "to_dict") else state
    lines = [
        f"process {process.process_id} ({process.process_type}, domain {process.domain})",
        f"  status: {process.status.value}   current step: {process.current_step}",
    ]
    if process.error_code or process.error_message:
        lines.append(f"  error: {process.error_code}: {process.error_message}")
    lines.append(f"  state: {short_json(state_dict, 400)}")
    if not audit:
        lines.append("  (no commands sent)")
    for index, entry in enumerate(audit, 1):
        kind = "COMP" if entry.kind is AuditEntryKind.COMPENSATION else "STEP"
        if entry.reply_outcome is None:
            answer = "awaiting reply" if entry.command_id == process.awaiting_command_id else "-"
        else:
            answer = entry.reply_outcome.value
            if entry.reply_data:
                answer += f" {short_json(entry.reply_data, 80)}"
            if entry.error_code or entry.error_message:
                answer += f" [{entry.error_code}: {entry.error_message}]"
        timed_out = " (timed out)" if entry.timed_out_at is not None else ""
        lines.append(
            f"  #{index} {kind} {entry.step_name}: {entry.command_type} "
            f"{short_json(entry.command_data or {}, 80)} -> {answer}{timed_out}"
        )
    for record in ignored:
        lines.append(f"  {record.disposition.value.lower()}: {record.reason}")
    return "\n".join(lines)
