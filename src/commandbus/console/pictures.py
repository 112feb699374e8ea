"""What the console draws on a process page: its definition's diagram with the path it
took, and an event-driven process's branches side by side.

- The diagram comes from ``commandbus.process.diagram`` (as ``commandbus process diagram``
  draws it): the manager's definition when the console has it (``--processes``), else
  the steps of the audit trail alone, with the path highlighted. It is rendered on the
  server as SVG by Graphviz's ``dot`` when it is installed (``make graphviz``), and is
  otherwise offered as Mermaid and DOT text: the page loads no JavaScript from anywhere.
- The branches come from the process's own event stream (``<process_type>-<process_id>``,
  ``commandbus.process_manager``), read through ``EventStore``, turned into lanes by
  ``branch_lanes``: one column per branch.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from commandbus.errors import CommandBusError, ValidationError
from commandbus.events import EventStore
from commandbus.events.encoding import validate_stream_name
from commandbus.ports import Backend
from commandbus.process.base import BaseProcessManager
from commandbus.process.diagram import (
    graphviz_available,
    process_graph,
    render_graphviz,
    to_dot,
    to_mermaid,
    trace_process,
)
from commandbus.process.graph import ProcessGraph
from commandbus.process.models import ProcessAuditEntry, ProcessMetadata
from commandbus.process_manager.branches import branch_lanes

__all__ = ["MAX_STREAM_EVENTS", "Branches", "Diagram", "process_branches", "process_diagram"]

#: How many events of a process stream the page reads at most (the branches of the
#: first ones are drawn, and the page says so).
MAX_STREAM_EVENTS = 5000

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
#: What Graphviz never writes from text labels (it escapes them); refused if present.
_ACTIVE = re.compile(r"<\s*(script|foreignobject|iframe)|<[^>]*(\son\w+\s*=|javascript:)", re.I)


@dataclass(frozen=True)
class Diagram:
    """One process drawn: ``svg`` (Graphviz's, to inline) when ``dot`` rendered it, and
    always the Mermaid and DOT text it was drawn from."""

    mermaid: str
    dot: str
    svg: str | None = None
    #: Why there is no SVG (no Graphviz, or it failed), or what the drawing leaves out.
    note: str | None = None


@dataclass(frozen=True)
class Branches:
    """An event-driven process's task runs per branch (``-``: tasks without a branch),
    each ``{"task", "run", "command", "outcome", "undone"}``."""

    lanes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The process has a stream of its own: it is event-driven.
    event_driven: bool = False
    #: The stream had more than ``MAX_STREAM_EVENTS`` events: only the first are drawn.
    truncated: bool = False

    @property
    def rows(self) -> int:
        return max((len(runs) for runs in self.lanes.values()), default=0)


async def process_diagram(
    process: ProcessMetadata[Any, Any],
    audit: Sequence[ProcessAuditEntry],
    manager: BaseProcessManager[Any, Any] | None,
) -> Diagram:
    """``process`` on its definition (``manager``'s, or its audit trail's steps). Not
    for an event-driven process: its tasks run in parallel branches, which a path
    through the audit trail would draw one after the other."""
    definition: ProcessGraph | None = None
    note = None
    if manager is not None:
        try:
            definition = process_graph(manager)
        except CommandBusError as exc:
            note = f"the definition could not be drawn ({exc}): steps from the audit trail"
    if definition is None:
        definition = ProcessGraph(process.process_type, (), (), None)
        note = note or (
            "steps from the audit trail: the console has no manager for this process type "
            "(start it with --processes to draw the whole definition)"
        )
    graph, highlight = trace_process(definition, process, audit, manager)
    mermaid, dot = to_mermaid(graph, highlight), to_dot(graph, highlight)
    if not graphviz_available():
        missing = "Graphviz's dot is not installed (make graphviz): the diagram as text"
        return Diagram(mermaid, dot, None, f"{note}; {missing}" if note else missing)
    try:
        rendered = await asyncio.to_thread(render_graphviz, dot, "svg")
    except CommandBusError as exc:
        return Diagram(mermaid, dot, None, str(exc))
    svg = _inline_svg(rendered.decode("utf-8", errors="replace"))
    if svg is None:
        return Diagram(mermaid, dot, None, "Graphviz wrote an SVG the console does not inline")
    return Diagram(mermaid, dot, svg, note)


def _inline_svg(document: str) -> str | None:
    """Graphviz's SVG document as an element to put in a page: without its XML prolog,
    doctype and comments; None if it holds anything active (it never should: Graphviz
    escapes every label)."""
    svg = _COMMENT.sub("", _PROLOG.sub("", document, count=1)).strip()
    if not svg.startswith("<svg") or _ACTIVE.search(svg):
        return None
    return svg


async def process_branches(backend: Backend, process: ProcessMetadata[Any, Any]) -> Branches:
    """The branches of ``process`` if it has a stream of its own, else none."""
    try:
        store = EventStore(backend)
        stream = validate_stream_name(f"{process.process_type}-{process.process_id}")
    except (TypeError, ValidationError):
        # A backend without events, or a process type that cannot name a stream: no
        # stream of its own, so no branches.
        return Branches()
    # One bounded read: a page draws the first MAX_STREAM_EVENTS events, and says so.
    events = await store.read_stream(stream, 1, MAX_STREAM_EVENTS + 1)
    truncated = len(events) > MAX_STREAM_EVENTS
    return Branches(branch_lanes(events[:MAX_STREAM_EVENTS]), bool(events), truncated)
