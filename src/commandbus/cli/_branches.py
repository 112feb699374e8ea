"""The branches of an event-driven process, side by side: what ``process show`` adds for
a process that has its own event stream (``commandbus.process_manager``)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from commandbus.events.models import RecordedEvent

__all__ = ["branch_lanes", "branches_table"]

_OUTCOMES = {
    "TaskCompleted": "SUCCESS",
    "TaskFailed": "FAILED",
    "TaskIgnored": "late: ignored",
    "TaskCancelled": "no longer awaited",
}


def branch_lanes(events: list[RecordedEvent]) -> dict[str, list[dict[str, Any]]]:
    """Per branch (``-`` for tasks without one), its task runs in the order they were
    planned: ``{"task", "run", "command", "outcome", "undone"}``."""
    lanes: dict[str, list[dict[str, Any]]] = {}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    by_command: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.data
        if event.event_type == "TransitionPlanned":
            key = (data["task_id"], data["run"])
            if data.get("compensates") is not None:
                if key in runs:
                    runs[key]["undone"] = "sent"
                continue
            run = {
                "task": data["task_id"],
                "run": data["run"],
                "command": data["command_type"],
                "outcome": "awaited",
                "undone": "",
            }
            runs[key] = by_command[data["command_id"]] = run
            lanes.setdefault(data.get("branch") or "-", []).append(run)
        elif event.event_type in _OUTCOMES:
            if data.get("compensates") is not None:
                undone = runs.get((data["compensates"], data.get("run", 0)))
                if undone is not None:
                    undone["undone"] = "yes" if event.event_type == "TaskCompleted" else "FAILED"
                continue
            found = by_command.get(data.get("command_id", ""))
            if found is None:
                continue
            run = found
            if event.event_type == "TaskFailed" and data.get("reason") == "TIMEOUT":
                run["outcome"] = "TIMEOUT"
            elif run["outcome"] == "awaited" or event.event_type == "TaskIgnored":
                run["outcome"] = _OUTCOMES[event.event_type]
    return lanes


def branches_table(events: list[RecordedEvent]) -> Table | None:
    """One column per branch, its task runs top to bottom; None without tasks."""
    lanes = branch_lanes(events)
    if not lanes:
        return None
    table = Table(title="Branches", title_justify="left", header_style="bold")
    for branch in lanes:
        table.add_column(branch, overflow="fold")
    for row in range(max(len(runs) for runs in lanes.values())):
        cells = []
        for runs in lanes.values():
            if row >= len(runs):
                cells.append("")
                continue
            r = runs[row]
            undone = f", undone: {r['undone']}" if r["undone"] else ""
            cells.append(f"{r['task']} #{r['run']} {r['command']}\n{r['outcome']}{undone}")
        table.add_row(*cells)
    return table
