"""The branches of an event-driven process, side by side, read from its own stream
(``<process_type>-<process_id>``): what ``commandbus process show`` and the console's
process page draw as one column per branch."""

from __future__ import annotations

from typing import Any

from commandbus.events.models import RecordedEvent
from commandbus.process_manager.events import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_IGNORED,
    TRANSITION_PLANNED,
)

__all__ = ["NO_BRANCH", "branch_lanes"]

#: The lane of tasks planned without a branch.
NO_BRANCH = "-"

_OUTCOMES = {
    TASK_COMPLETED: "SUCCESS",
    TASK_FAILED: "FAILED",
    TASK_IGNORED: "late: ignored",
    TASK_CANCELLED: "no longer awaited",
}


def branch_lanes(events: list[RecordedEvent]) -> dict[str, list[dict[str, Any]]]:
    """Per branch (``-`` for tasks without one), its task runs in the order they were
    planned: ``{"task", "run", "command", "outcome", "undone"}``."""
    lanes: dict[str, list[dict[str, Any]]] = {}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    by_command: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.data
        if event.event_type == TRANSITION_PLANNED:
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
            lanes.setdefault(data.get("branch") or NO_BRANCH, []).append(run)
        elif event.event_type in _OUTCOMES:
            if data.get("compensates") is not None:
                undone = runs.get((data["compensates"], data.get("run", 0)))
                if undone is not None:
                    undone["undone"] = "yes" if event.event_type == TASK_COMPLETED else "FAILED"
                continue
            found = by_command.get(data.get("command_id", ""))
            if found is None:
                continue
            run = found
            if event.event_type == TASK_FAILED and data.get("reason") == "TIMEOUT":
                run["outcome"] = "TIMEOUT"
            elif run["outcome"] == "awaited" or event.event_type == TASK_IGNORED:
                run["outcome"] = _OUTCOMES[event.event_type]
    return lanes
