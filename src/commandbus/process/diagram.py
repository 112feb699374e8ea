"""Pictures of processes: a definition, or one live process with the path it took.

- ``process_graph(manager)``: the definition as a ``ProcessGraph``. A declared process
  (step DSL, state machine) describes itself completely: steps, conditions, final
  states, compensations. A hand-written manager shows what it declares — the members of
  its step enum, their command types and timeouts (``steps``) and which step undoes which
  (``get_compensation_step``, a pure function of the step); its order is decided in code
  (``get_next_step``) and is not drawn.
- ``trace_process(graph, process, audit_trail, manager)``: the graph with one process's
  path highlighted — the steps it sent, the edges it took, compensations, where it is now
  (or how it ended). Steps the graph does not show (a hand-written manager, or no manager
  at all) are added from the audit trail, so the path is always complete.
- ``to_mermaid`` / ``to_dot`` write a graph (and a highlight) as Mermaid or Graphviz DOT
  text; ``render_graphviz`` turns DOT into SVG or PNG with Graphviz's ``dot`` program
  (Debian: ``apt-get install graphviz``).

The CLI's ``commandbus process diagram`` uses these; so can any tool (a console page).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from commandbus.errors import InvalidOperationError
from commandbus.models import Reply, ReplyOutcome
from commandbus.process.base import BaseProcessManager
from commandbus.process.declared import DeclaredProcessManager
from commandbus.process.graph import (
    START_KEY,
    EdgeKind,
    GraphEdge,
    GraphNode,
    NodeKind,
    ProcessGraph,
)
from commandbus.process.models import AuditEntryKind, ProcessAuditEntry, ProcessMetadata

__all__ = [
    "Highlight",
    "process_graph",
    "render_graphviz",
    "to_dot",
    "to_mermaid",
    "trace_process",
]

AnyManager = BaseProcessManager[Any, Any]

HAND_WRITTEN_NOTE = (
    "steps as declared (step enum, steps); the order is decided in code by "
    "get_first_step and get_next_step, so it is not drawn"
)


def process_graph(manager: AnyManager | type[AnyManager]) -> ProcessGraph:
    """The definition of ``manager`` (an instance, or a declared process's class)."""
    if isinstance(manager, type):
        if issubclass(manager, DeclaredProcessManager):
            return manager.definition_graph()
        raise InvalidOperationError(
            f"{manager.__qualname__} is a hand-written manager class: pass an instance "
            "(its compensation hook is a method)"
        )
    if isinstance(manager, DeclaredProcessManager):
        return type(manager).definition_graph()
    return _hand_written_graph(manager)


def _hand_written_graph(manager: AnyManager) -> ProcessGraph:
    step_class = getattr(manager, "step_class", None)
    declared = {d.name: d for d in manager.steps}
    is_enum = isinstance(step_class, type) and issubclass(step_class, Enum)
    names = [str(m) for m in step_class] if is_enum else []  # type: ignore[union-attr]
    names += [n for n in declared if n not in names]
    undoes: dict[str, str] = {}
    for name in names:
        try:
            compensation = manager.get_compensation_step(manager.parse_step(name))
        except Exception:  # a hook that does not know the step: nothing declared for it
            compensation = None
        if compensation is not None:
            undoes[name] = str(compensation)
    nodes: list[GraphNode] = []
    for name in names:
        definition = declared.get(name)
        detail = None
        if definition is not None:
            detail = definition.command_type + (
                f", timeout {definition.timeout_seconds:g}s" if definition.timeout_seconds else ""
            )
        kind = NodeKind.COMPENSATION if name in undoes.values() else NodeKind.STEP
        nodes.append(GraphNode(name, name, kind, detail))
    edges = [GraphEdge(s, c, EdgeKind.COMPENSATION, "undo") for s, c in undoes.items()]
    return ProcessGraph(manager.process_type, tuple(nodes), tuple(edges), HAND_WRITTEN_NOTE)


# -- one live process ------------------------------------------------------------------


@dataclass(frozen=True)
class Highlight:
    """What to highlight: nodes the process visited, edges it took (by index in the
    graph's ``edges``), nodes whose last reply was not a success, where it waits now."""

    visited: frozenset[str] = frozenset()
    taken: frozenset[int] = frozenset()
    failed: frozenset[str] = frozenset()
    current: str | None = None


@dataclass
class _Trace:
    graph: ProcessGraph
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    taken: set[int] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nodes = list(self.graph.nodes)
        self.edges = list(self.graph.edges)

    def ensure_node(
        self, key: str, kind: NodeKind, detail: str | None = None, label: str | None = None
    ) -> None:
        if all(n.key != key for n in self.nodes):
            self.nodes.append(GraphNode(key, label or key, kind, detail))

    def take(self, source: str, target: str, kind: EdgeKind = EdgeKind.FORWARD) -> None:
        """Highlight the edges from ``source`` to ``target`` (through decisions); an edge
        the graph does not have is added, labelled as taken."""
        route = self._route(source, target, kind)
        if route is None:
            self.edges.append(GraphEdge(source, target, kind, "taken"))
            route = [len(self.edges) - 1]
        for index in route:
            self.taken.add(index)
            self.visited.add(self.edges[index].source)
            self.visited.add(self.edges[index].target)

    def _route(self, source: str, target: str, kind: EdgeKind) -> list[int] | None:
        # Breadth first, passing only through decision nodes: a step is never skipped.
        decisions = {n.key for n in self.nodes if n.kind is NodeKind.DECISION}
        frontier: list[tuple[str, list[int]]] = [(source, [])]
        seen = {source}
        while frontier:
            key, path = frontier.pop(0)
            for index, edge in enumerate(self.edges):
                if edge.source != key or edge.kind is not kind:
                    continue
                if edge.target == target:
                    return [*path, index]
                if edge.target in decisions and edge.target not in seen:
                    seen.add(edge.target)
                    frontier.append((edge.target, [*path, index]))
        return None

    def finals_after(self, source: str) -> list[str]:
        finals = {n.key for n in self.nodes if n.kind is NodeKind.FINAL}
        return [key for key in finals if self._route(source, key, EdgeKind.FORWARD) is not None]


def trace_process(
    graph: ProcessGraph,
    process: ProcessMetadata[Any, Any],
    audit_trail: Sequence[ProcessAuditEntry],
    manager: AnyManager | None = None,
) -> tuple[ProcessGraph, Highlight]:
    """``graph`` with what ``process`` did highlighted (and steps the graph lacks added
    from ``audit_trail``). ``manager`` (the process's) tells a declared process's final
    state apart when several could follow its last step."""
    trace = _Trace(graph)
    entries = [e for e in audit_trail if e.kind is not AuditEntryKind.STATE_UPGRADE]
    forward = [e for e in entries if e.kind is AuditEntryKind.STEP]
    if forward:
        trace.ensure_node(START_KEY, NodeKind.START, label="start")
        trace.take(START_KEY, forward[0].step_name)
    previous: ProcessAuditEntry | None = None
    for entry in entries:
        kind = NodeKind.COMPENSATION if entry.kind is AuditEntryKind.COMPENSATION else NodeKind.STEP
        trace.ensure_node(entry.step_name, kind, entry.command_type)
        trace.visited.add(entry.step_name)
        answered = entry.reply_outcome
        if answered is not None and answered is not ReplyOutcome.SUCCESS:
            trace.failed.add(entry.step_name)
        elif answered is ReplyOutcome.SUCCESS:
            trace.failed.discard(entry.step_name)
        if entry.kind is AuditEntryKind.STEP:
            if previous is not None:
                trace.take(previous.step_name, entry.step_name)
            previous = entry
        else:
            undone = [
                i
                for i, e in enumerate(trace.edges)
                if e.kind is EdgeKind.COMPENSATION
                and e.target == entry.step_name
                and e.source in {f.step_name for f in forward}
            ]
            trace.taken.update(undone)
    current: str | None = None
    status = process.status
    if not status.is_terminal:
        current = str(process.current_step) if process.current_step is not None else None
    elif previous is not None:
        last = entries[-1].step_name if entries else previous.step_name
        if status.value == "COMPLETED":
            end = _final_reached(trace, previous, process, manager)
            trace.ensure_node(end, NodeKind.FINAL, label=status.value)
            trace.take(previous.step_name, end)
        else:
            end = f"<{status.value}>"
            trace.nodes.append(GraphNode(end, status.value, NodeKind.FINAL))
            trace.edges.append(GraphEdge(last, end, EdgeKind.FORWARD, process.error_code))
            trace.taken.add(len(trace.edges) - 1)
            trace.visited.add(end)
            trace.failed.add(end)
    traced = ProcessGraph(
        f"{graph.title} {process.process_id} ({status.value})",
        tuple(trace.nodes),
        tuple(trace.edges),
        graph.note,
    )
    highlight = Highlight(
        frozenset(trace.visited), frozenset(trace.taken), frozenset(trace.failed), current
    )
    return traced, highlight


def _final_reached(
    trace: _Trace,
    last: ProcessAuditEntry,
    process: ProcessMetadata[Any, Any],
    manager: AnyManager | None,
) -> str:
    """The final node a completed process reached after its last step: the only one
    that can follow it, or the one its definition routes to — decided again from the
    stored state and the last reply, which is exactly what the kernel decided from
    (conditions are pure)."""
    finals = trace.finals_after(last.step_name)
    if len(finals) == 1:
        return finals[0]
    if isinstance(manager, DeclaredProcessManager) and last.reply_outcome is not None:
        reply = Reply(
            command_id=last.command_id,
            correlation_id=process.process_id,
            outcome=last.reply_outcome,
            data=last.reply_data,
            error_code=last.error_code,
            error_message=last.error_message,
        )
        try:
            # As stored (a dict) or already typed (a process loaded through the manager).
            state = (
                manager.load_state(process.state)
                if isinstance(process.state, dict)
                else process.state
            )
            return manager.compiled.route(last.step_name, reply, state)
        except Exception:  # an old state the current code cannot route: no final named
            pass
    return "<COMPLETED>"


# -- writing ---------------------------------------------------------------------------

_MERMAID_SHAPES = {
    NodeKind.START: ('(("', '"))'),
    NodeKind.STEP: ('["', '"]'),
    NodeKind.COMPENSATION: ('[/"', '"/]'),
    NodeKind.DECISION: ('{"', '"}'),
    NodeKind.FINAL: ('(["', '"])'),
}
_COLOURS = {
    "compensation": ("#fff4e5", "#c77700"),
    "visited": ("#e6f4ea", "#1e8e3e"),
    "failed": ("#fce8e6", "#d93025"),
    "current": ("#fff8c5", "#b08800"),
}


def _ids(graph: ProcessGraph) -> dict[str, str]:
    return {node.key: f"n{index}" for index, node in enumerate(graph.nodes)}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(graph: ProcessGraph, highlight: Highlight | None = None) -> str:
    """The graph as a Mermaid flowchart (paste it in Markdown, the Mermaid live editor)."""
    ids = _ids(graph)
    lines = ["---", f"title: {_mermaid_text(graph.title)}", "---", "flowchart TD"]
    if graph.note:
        lines.append(f"    %% {graph.note}")
    for node in graph.nodes:
        opening, closing = _MERMAID_SHAPES[node.kind]
        label = _mermaid_text(node.label)
        if node.detail:
            label += "<br/>" + _mermaid_text(node.detail)
        lines.append(f"    {ids[node.key]}{opening}{label}{closing}")
    for edge in graph.edges:
        arrow = "-.->" if edge.kind is EdgeKind.COMPENSATION else "-->"
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"    {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    for name, (fill, stroke) in _COLOURS.items():
        width = "4px" if name == "current" else "2px"
        lines.append(f"    classDef {name} fill:{fill},stroke:{stroke},stroke-width:{width}")
    classes: dict[str, list[str]] = {
        "compensation": [ids[n.key] for n in graph.nodes if n.kind is NodeKind.COMPENSATION]
    }
    if highlight is not None:
        # One class per node (the strongest), listed in the graph's order.
        for node in graph.nodes:
            colour = _node_colour(node, highlight)
            if colour is not None and colour != "compensation":
                classes.setdefault(colour, []).append(ids[node.key])
                if ids[node.key] in classes["compensation"]:
                    classes["compensation"].remove(ids[node.key])
    for name, members in classes.items():
        if members:
            lines.append(f"    class {','.join(members)} {name}")
    if highlight is not None and highlight.taken:
        taken = ",".join(str(i) for i in sorted(highlight.taken))
        lines.append(f"    linkStyle {taken} stroke:{_COLOURS['visited'][1]},stroke-width:3px")
    return "\n".join(lines) + "\n"


_DOT_SHAPES = {
    NodeKind.START: 'shape=circle, label="", width=0.25, style=filled, fillcolor=black',
    NodeKind.STEP: 'shape=box, style="rounded,filled"',
    NodeKind.COMPENSATION: 'shape=box, style="rounded,filled,dashed"',
    NodeKind.DECISION: "shape=diamond, style=filled",
    NodeKind.FINAL: 'shape=box, style="rounded,filled", peripheries=2',
}


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: ProcessGraph, highlight: Highlight | None = None) -> str:
    """The graph as Graphviz DOT (``dot -Tsvg``)."""
    ids = _ids(graph)
    title = graph.title + (f"\n({graph.note})" if graph.note else "")
    lines = [
        f"digraph {_dot_text(graph.title)} {{",
        f"    graph [label={_dot_text(title)}, labelloc=t, rankdir=TB, fontname=Helvetica];",
        "    node [fontname=Helvetica, fillcolor=white];",
        "    edge [fontname=Helvetica];",
    ]
    for node in graph.nodes:
        attributes = [_DOT_SHAPES[node.kind]]
        if node.kind is not NodeKind.START:
            label = node.label + (f"\n{node.detail}" if node.detail else "")
            attributes.append(f"label={_dot_text(label)}")
        colour = _node_colour(node, highlight)
        if colour is not None:
            fill, stroke = _COLOURS[colour]
            width = 3 if colour == "current" else 2
            attributes.append(f'fillcolor="{fill}", color="{stroke}", penwidth={width}')
        lines.append(f"    {ids[node.key]} [{', '.join(attributes)}];")
    for index, edge in enumerate(graph.edges):
        attributes = []
        if edge.kind is EdgeKind.COMPENSATION:
            attributes.append("style=dashed")
        if edge.label:
            attributes.append(f"label={_dot_text(edge.label)}")
        if highlight is not None and index in highlight.taken:
            attributes.append(f'color="{_COLOURS["visited"][1]}", penwidth=3')
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {ids[edge.source]} -> {ids[edge.target]}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_colour(node: GraphNode, highlight: Highlight | None) -> str | None:
    if highlight is not None:
        if node.key == highlight.current:
            return "current"
        if node.key in highlight.failed:
            return "failed"
        if node.key in highlight.visited and node.kind is not NodeKind.START:
            return "visited"
    return "compensation" if node.kind is NodeKind.COMPENSATION else None


def graphviz_available() -> bool:
    return shutil.which("dot") is not None


def render_graphviz(dot_source: str, image_format: str) -> bytes:
    """``dot_source`` rendered by Graphviz as ``svg`` or ``png`` bytes."""
    if image_format not in ("svg", "png"):
        raise InvalidOperationError(f"Graphviz renders svg or png here, not {image_format!r}")
    program = shutil.which("dot")
    if program is None:
        raise InvalidOperationError(
            "rendering SVG or PNG needs Graphviz's dot program, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz); Mermaid and DOT text need nothing"
        )
    done = subprocess.run(
        [program, f"-T{image_format}"],
        input=dot_source.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise InvalidOperationError(
            f"Graphviz could not render the diagram: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout
