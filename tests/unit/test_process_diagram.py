"""Diagrams: definitions as graphs (declared and hand-written managers), one live
process's path highlighted on them, written as Mermaid and DOT, rendered by Graphviz."""

from __future__ import annotations

import os
from typing import Any

import pytest
from examples.statement_report import StatementReportProcess
from examples.statement_report.machine import StatementReportMachine
from examples.statement_report.steps import StatementReportSteps
from tests.declared_examples import Approval, Fulfilment

from commandbus import CommandBus
from commandbus.errors import InvalidOperationError
from commandbus.process.diagram import (
    graphviz_available,
    process_graph,
    render_graphviz,
    to_dot,
    to_mermaid,
    trace_process,
)
from commandbus.process.graph import START_KEY, EdgeKind, NodeKind, ProcessGraph
from commandbus.testing.scenario import ProcessScenario

REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["ACC-1"],
    "output_type": "pdf",
}


def edges(graph: ProcessGraph, kind: EdgeKind = EdgeKind.FORWARD) -> set[tuple[str, str]]:
    labels = {n.key: n.label for n in graph.nodes}
    return {(labels[e.source], labels[e.target]) for e in graph.edges if e.kind is kind}


def test_a_step_flow_with_branches_is_drawn_whole() -> None:
    graph = process_graph(Fulfilment)
    kinds = {n.label: n.kind for n in graph.nodes}
    assert kinds == {
        "start": NodeKind.START,
        "reserve": NodeKind.STEP,
        "ship_express": NodeKind.STEP,
        "ship": NodeKind.STEP,
        "notify": NodeKind.STEP,
        "in_stock?": NodeKind.DECISION,
        "is_express?": NodeKind.DECISION,
        "completed": NodeKind.FINAL,
        "out of stock": NodeKind.FINAL,
        "release": NodeKind.COMPENSATION,
    }
    assert edges(graph) == {
        ("start", "reserve"),
        ("reserve", "in_stock?"),
        ("in_stock?", "is_express?"),
        ("in_stock?", "out of stock"),
        ("is_express?", "ship_express"),
        ("is_express?", "ship"),
        ("ship_express", "notify"),
        ("ship", "notify"),
        ("notify", "completed"),
    }
    assert edges(graph, EdgeKind.COMPENSATION) == {("reserve", "release")}
    assert graph.node("reserve") is not None
    assert graph.node("reserve").detail == "Reserve, timeout 30s"  # type: ignore[union-attr]


def test_a_state_machine_is_drawn_with_its_guards() -> None:
    graph = process_graph(Approval)
    labelled = {(e.source, e.target): e.label for e in graph.edges}
    assert labelled[("check", "check")] == "still pending"
    assert labelled[("check", "approved")] == "approved"
    assert labelled[("check", "notify_rejection")] is None
    assert labelled[("submit", "withdraw")] == "undo"
    assert labelled[(START_KEY, "submit")] is None
    assert {n.key for n in graph.nodes if n.kind is NodeKind.FINAL} == {"approved", "rejected"}


def test_the_three_statement_reports_draw_the_same_steps() -> None:
    bus = CommandBus.in_memory()
    steps = process_graph(StatementReportSteps(bus))
    machine = process_graph(StatementReportMachine)
    assert edges(steps, EdgeKind.COMPENSATION) == edges(machine, EdgeKind.COMPENSATION)
    assert edges(steps) - {("statement_render", "completed")} == edges(machine) - {
        ("statement_render", "reported")
    }
    by_hand = process_graph(StatementReportProcess(bus))
    assert by_hand.note is not None and "decided in code" in by_hand.note
    assert edges(by_hand) == set()  # its order is code: not drawn, not guessed
    assert edges(by_hand, EdgeKind.COMPENSATION) == edges(steps, EdgeKind.COMPENSATION)
    assert {(n.key, n.kind) for n in by_hand.nodes} == {
        (n.key, n.kind) for n in steps.nodes if n.kind in (NodeKind.STEP, NodeKind.COMPENSATION)
    }
    with pytest.raises(InvalidOperationError, match="pass an instance"):
        process_graph(StatementReportProcess)


def test_mermaid_and_dot_text() -> None:
    graph = process_graph(Fulfilment)
    mermaid = to_mermaid(graph)
    assert mermaid.startswith("---\ntitle: Fulfilment\n---\nflowchart TD\n")
    assert '    n1["reserve<br/>Reserve, timeout 30s"]' in mermaid
    assert '{"in_stock?"}' in mermaid and '(["out of stock"])' in mermaid
    assert ' -->|"yes"| ' in mermaid and ' -.->|"undo"| ' in mermaid
    dot = to_dot(graph)
    assert dot.startswith('digraph "Fulfilment" {')
    assert 'label="reserve\\nReserve, timeout 30s"' in dot
    assert "shape=diamond" in dot and "style=dashed" in dot
    assert dot.rstrip().endswith("}")


async def test_a_waiting_process_shows_its_path_and_current_step() -> None:
    scenario: ProcessScenario[Any] = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 1, "express": True})
    await scenario.reply_success({"reservation": "R-1"})
    graph, highlight = trace_process(
        process_graph(Fulfilment), scenario.process, scenario.audit_trail, scenario.manager
    )
    assert highlight.current == "ship_express"
    assert {"reserve", "<decision:1>", "<decision:2>", "ship_express"} <= highlight.visited
    taken = {(graph.edges[i].source, graph.edges[i].target) for i in highlight.taken}
    assert taken == {
        (START_KEY, "reserve"),
        ("reserve", "<decision:1>"),
        ("<decision:1>", "<decision:2>"),
        ("<decision:2>", "ship_express"),
    }
    mermaid = to_mermaid(graph, highlight)
    ids = {n.key: f"n{i}" for i, n in enumerate(graph.nodes)}
    assert f"class {ids['ship_express']} current" in mermaid
    assert "linkStyle " in mermaid
    assert 'fillcolor="#fff8c5"' in to_dot(graph, highlight)  # the current step


async def test_a_completed_process_ends_in_the_final_state_it_reached() -> None:
    scenario: ProcessScenario[Any] = ProcessScenario(Approval)
    await scenario.start({"applicant": "ada"})
    await scenario.reply_success({"ticket": "T-1"})
    await scenario.reply_success({"status": "pending"})
    await scenario.reply_success({"status": "approved"})
    graph, highlight = trace_process(
        process_graph(Approval), scenario.process, scenario.audit_trail, scenario.manager
    )
    assert highlight.current is None
    assert "approved" in highlight.visited and "rejected" not in highlight.visited
    taken = {(graph.edges[i].source, graph.edges[i].target) for i in highlight.taken}
    assert ("check", "check") in taken and ("check", "approved") in taken
    assert "(COMPLETED)" in graph.title

    # Out of stock: the flow's named finish, not its natural end.
    scenario = ProcessScenario(Fulfilment)
    await scenario.start({"amount": 1})
    await scenario.reply_success({"reservation": "R-1", "in_stock": False})
    graph, highlight = trace_process(
        process_graph(Fulfilment), scenario.process, scenario.audit_trail, scenario.manager
    )
    assert "<end>:out of stock" in highlight.visited and "<end>" not in highlight.visited


async def test_a_failed_process_shows_its_compensations_and_how_it_ended() -> None:
    scenario: ProcessScenario[Any] = ProcessScenario(StatementReportSteps)
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    await scenario.reply_failed("NO_DATA")
    await scenario.reply_success({"deleted": "s3://q"})
    graph, highlight = trace_process(
        process_graph(scenario.manager), scenario.process, scenario.audit_trail
    )
    assert highlight.failed == {"statement_data_aggregation", "<FAILED>"}
    assert "delete_query_result" in highlight.visited
    taken = {(graph.edges[i].source, graph.edges[i].target) for i in highlight.taken}
    assert ("statement_query", "delete_query_result") in taken
    assert ("delete_query_result", "<FAILED>") in taken
    assert graph.node("<FAILED>") is not None


async def test_a_hand_written_process_is_drawn_from_its_audit_trail() -> None:
    scenario: ProcessScenario[Any] = ProcessScenario(StatementReportProcess)
    await scenario.start(REQUEST)
    await scenario.reply_success({"result_path": "s3://q"})
    graph, highlight = trace_process(
        process_graph(scenario.manager), scenario.process, scenario.audit_trail
    )
    taken = [graph.edges[i] for i in sorted(highlight.taken)]
    assert [(e.source, e.target, e.label) for e in taken] == [
        (START_KEY, "statement_query", "taken"),
        ("statement_query", "statement_data_aggregation", "taken"),
    ]
    assert highlight.current == "statement_data_aggregation"

    # With no definition at all, the audit trail is the whole picture.
    empty = ProcessGraph("StatementReport", (), ())
    graph, highlight = trace_process(empty, scenario.process, scenario.audit_trail)
    assert [n.key for n in graph.nodes] == [
        START_KEY,
        "statement_query",
        "statement_data_aggregation",
    ]


needs_graphviz = pytest.mark.skipif(
    not graphviz_available() and not os.environ.get("COMMANDBUS_REQUIRE_GRAPHVIZ"),
    reason="Graphviz's dot is not installed (CI installs it: make graphviz)",
)


@needs_graphviz
def test_graphviz_renders_svg_and_png() -> None:
    dot = to_dot(process_graph(StatementReportMachine))
    svg = render_graphviz(dot, "svg")
    assert svg.startswith(b"<?xml") and b"statement_query" in svg
    assert render_graphviz(dot, "png").startswith(b"\x89PNG\r\n\x1a\n")


def test_without_graphviz_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("commandbus.process.diagram.shutil.which", lambda name: None)
    with pytest.raises(InvalidOperationError, match="apt-get install graphviz"):
        render_graphviz("digraph {}", "svg")
    with pytest.raises(InvalidOperationError, match="svg or png"):
        render_graphviz("digraph {}", "gif")
