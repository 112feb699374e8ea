"""How the ``process`` commands show a process: its row, its audit trail, its message
log, and a status in colour (rich tables)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from commandbus.cli._common import compact_json, fmt_time, new_table
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageRecord,
    ProcessMetadata,
)

__all__ = ["message_table", "process_audit_table", "process_status_text", "process_table"]

_PROCESS_STATUS_STYLES = {
    "WAITING": "cyan",
    "WAITING_FOR_TSQ": "magenta",
    "WAITING_FOR_OPERATOR": "bold magenta",
    "COMPENSATING": "yellow",
    "COMPLETED": "green",
    "COMPENSATED": "yellow",
    "FAILED": "red",
    "CANCELED": "yellow",
}


def process_status_text(status: object) -> Text:
    value = getattr(status, "value", str(status))
    return Text(value, style=_PROCESS_STATUS_STYLES.get(value, ""))


def process_table(process: ProcessMetadata[Any, Any]) -> Table:
    table = new_table(f"Process {process.process_id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("domain", process.domain),
        ("type", process.process_type),
        ("status", process_status_text(process.status)),
        ("current step", str(process.current_step or "")),
        ("awaiting command", str(process.awaiting_command_id or "")),
        ("deadline", fmt_time(process.deadline_at)),
        ("created", fmt_time(process.created_at)),
        ("updated", fmt_time(process.updated_at)),
        ("completed", fmt_time(process.completed_at)),
        ("version", str(process.version)),
        ("state", compact_json(process.state)),
    ]
    if process.error_code or process.error_message:
        rows.append(("error", f"{process.error_code}: {process.error_message}"))
    if process.compensation is not None:
        rows.append(("compensation", compact_json(process.compensation.to_dict())))
    for name, value in rows:
        table.add_row(name, value)
    return table


def process_audit_table(
    process: ProcessMetadata[Any, Any], audit: Sequence[ProcessAuditEntry]
) -> Table:
    table = new_table(f"Audit trail ({len(audit)} commands)")
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("command")
    table.add_column("sent", no_wrap=True)
    table.add_column("reply", no_wrap=True)
    table.add_column("received", no_wrap=True)
    table.add_column("data → result", overflow="fold")
    for index, entry in enumerate(audit, 1):
        step = entry.step_name
        if entry.kind is AuditEntryKind.COMPENSATION:
            step += " (compensation)"
        if entry.scheduled_for is not None:
            step += f" (scheduled for {fmt_time(entry.scheduled_for)})"
        if entry.reply_outcome is not None:
            reply = process_status_text(entry.reply_outcome)
        elif entry.command_id == process.awaiting_command_id:
            reply = Text("awaiting", style="cyan")
        else:
            reply = Text("-", style="dim")
        if entry.timed_out_at is not None:
            reply.append(" timed out", style="red")
        detail = compact_json(entry.command_data, 60)
        if entry.reply_data is not None:
            detail += f" → {compact_json(entry.reply_data, 60)}"
        if entry.error_code or entry.error_message:
            detail += f" [{entry.error_code}: {entry.error_message}]"
        table.add_row(
            str(index),
            step,
            entry.command_type,
            fmt_time(entry.sent_at),
            reply,
            fmt_time(entry.received_at),
            detail,
        )
    return table


def message_table(messages: Sequence[ProcessMessageRecord]) -> Table:
    table = new_table(f"Ignored or parked messages ({len(messages)})")
    table.add_column("recorded", no_wrap=True)
    table.add_column("disposition")
    table.add_column("command id", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for record in messages:
        table.add_row(
            fmt_time(record.recorded_at),
            record.disposition.value,
            str(record.command_id or ""),
            record.reason,
        )
    return table
