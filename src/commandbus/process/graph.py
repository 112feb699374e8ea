"""The shape of a process definition as a graph: what diagrams are drawn from.

Plain values, no behaviour. A declared process (``commandbus.process.dsl``,
``commandbus.process.fsm``) describes itself as a ``ProcessGraph`` when its class is
created; ``commandbus.process.diagram`` builds one for a hand-written manager from its step
enum and writes any graph as Mermaid or Graphviz DOT, with the path of a live process
highlighted.

Nodes have a ``key`` that is unique within the graph: a step's key is its step name (what
the audit trail records), so a live process's trail maps onto the graph directly. Other
nodes use keys in angle brackets (``<start>``, ``<decision:1>``, ``<end>``), which no
step name of the examples or tests uses; a declared process refuses a step name that
starts with ``<``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "START_KEY",
    "EdgeKind",
    "GraphEdge",
    "GraphNode",
    "NodeKind",
    "ProcessGraph",
]

#: The key of the start node every graph has.
START_KEY = "<start>"


class NodeKind(StrEnum):
    """What a node stands for (and so how it is drawn)."""

    START = "start"
    #: A forward step: sends a command and waits for its reply.
    STEP = "step"
    #: A compensation: the command that undoes a completed step.
    COMPENSATION = "compensation"
    #: A condition evaluated on the state (and the reply) to choose the next step.
    DECISION = "decision"
    #: The process completes here.
    FINAL = "final"


class EdgeKind(StrEnum):
    #: What follows when a step succeeds (or a condition holds).
    FORWARD = "forward"
    #: From a step to the compensation that undoes it (run in reverse order on failure).
    COMPENSATION = "compensation"


@dataclass(frozen=True)
class GraphNode:
    key: str
    label: str
    kind: NodeKind
    #: A second line: the command type, the timeout.
    detail: str | None = None


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    kind: EdgeKind = EdgeKind.FORWARD
    label: str | None = None


@dataclass(frozen=True)
class ProcessGraph:
    """A process definition's nodes and edges; ``note`` says what the graph leaves out."""

    title: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    note: str | None = None

    def node(self, key: str) -> GraphNode | None:
        for node in self.nodes:
            if node.key == key:
                return node
        return None

    def successors(self, key: str) -> list[GraphEdge]:
        return [e for e in self.edges if e.source == key and e.kind is EdgeKind.FORWARD]
