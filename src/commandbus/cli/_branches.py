"""The branches of an event-driven process, side by side: what ``process show`` adds for
a process that has its own event stream (``commandbus.process_manager``): the lanes come
from ``commandbus.process_manager.branches``, the table is the CLI's."""

from __future__ import annotations

from rich.table import Table

from commandbus.events.models import RecordedEvent
from commandbus.process_manager.branches import branch_lanes

__all__ = ["branch_lanes", "branches_table"]


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
