"""The console's process page draws the process: its definition's diagram with the path
it took (inline SVG from Graphviz, or Mermaid/DOT text without it) and an event-driven
process's branches side by side (httpx against the ASGI app, in-memory backend)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)
from examples.statement_report.steps import StatementReportSteps
from tests.pull_request_scenarios import Previews

from commandbus import CommandBus, HandlerRegistry, RetryPolicy, Worker
from commandbus.console import ConsoleUsers, create_app, pictures
from commandbus.memory import InMemoryBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.process.diagram import graphviz_available, render_graphviz, to_dot
from commandbus.process.graph import EdgeKind, GraphEdge, GraphNode, NodeKind, ProcessGraph
from commandbus.testing.clock import VirtualClock

SCRIPT = "<script>alert('x')</script>"
OPERATOR = ("ada", "s3cret")
INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-03-31",
    "account_list": ["ACC-001", SCRIPT],
    "output_type": "pdf",
}
needs_dot = pytest.mark.skipif(not graphviz_available(), reason="needs Graphviz (make graphviz)")


class Reports:
    """StatementReport in the step DSL on the in-memory backend, with its services."""

    def __init__(self, backend: InMemoryBackend, config: ServiceConfig) -> None:
        self.bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
        self.manager = StatementReportSteps(self.bus)
        registry = HandlerRegistry()
        register_statement_handlers(registry, config)
        self.worker = Worker(backend, "reporting", registry)
        self.router = ProcessReplyRouter(backend, managers=[self.manager])

    async def run(self) -> Any:
        pid = await self.manager.start(INPUT)
        for _ in range(50):
            if await self.worker.drain() + await self.router.drain() == 0:
                return pid
        raise AssertionError("did not settle")


@pytest_asyncio.fixture
async def backend() -> InMemoryBackend:
    return InMemoryBackend(clock=VirtualClock())


def client_for(backend: InMemoryBackend, **kwargs: Any) -> httpx.AsyncClient:
    users = ConsoleUsers.from_specs([f"{OPERATOR[0]}:{OPERATOR[1]}"])
    app = create_app(backend, users, **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


@pytest_asyncio.fixture
async def reports(backend: InMemoryBackend) -> AsyncIterator[tuple[Reports, httpx.AsyncClient]]:
    system = Reports(backend, ServiceConfig())
    async with client_for(backend, managers=[system.manager]) as http:
        yield system, http


@needs_dot
async def test_a_completed_process_is_drawn_on_its_definition_as_inline_svg(
    reports: tuple[Reports, httpx.AsyncClient],
) -> None:
    system, http = reports
    pid = await system.run()
    assert (await system.manager.get(pid)).status is ProcessStatus.COMPLETED  # type: ignore[union-attr]
    page = (await http.get(f"/processes/reporting/{pid}", auth=OPERATOR)).text
    figure = page.split('<figure class="diagram" id="diagram">', 1)[1].split("</figure>", 1)[0]
    assert figure.lstrip().startswith("<svg") and "<?xml" not in figure
    assert "<!--" not in figure and "<script" not in figure
    # The whole definition: every step and compensation, the path taken in green.
    for step in ("statement_query", "statement_render", "delete_aggregated_data", "completed"):
        assert f">{step}<" in figure, step
    assert 'stroke="#1e8e3e"' in figure
    # The text it was drawn from is on the page too, escaped.
    assert "flowchart TD" in page and "digraph" in page
    assert SCRIPT not in page


async def test_without_graphviz_the_diagram_is_mermaid_and_dot_text(
    reports: tuple[Reports, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pictures, "graphviz_available", lambda: False)
    system, http = reports
    pid = await system.run()
    page = (await http.get(f"/processes/reporting/{pid}", auth=OPERATOR)).text
    assert "<svg" not in page
    assert "Graphviz&#39;s dot is not installed" in page
    mermaid = page.split('id="diagram-mermaid">', 1)[1].split("</pre>", 1)[0]
    assert mermaid.startswith("---\ntitle: StatementReport") and "classDef visited" in mermaid
    assert '<details class="diagram-text" open>' in page


@needs_dot
async def test_a_process_of_a_type_without_manager_is_drawn_from_its_audit_trail(
    backend: InMemoryBackend,
) -> None:
    config = ServiceConfig(rates={"StatementQuery": FailureRates(permanent=1.0)})
    system = Reports(backend, config)
    pid = await system.run()
    assert (await system.manager.get(pid)).status is ProcessStatus.WAITING_FOR_TSQ  # type: ignore[union-attr]
    async with client_for(backend, domains=["reporting"]) as http:
        page = (await http.get(f"/processes/reporting/{pid}", auth=OPERATOR)).text
    assert "the console has no manager for this process type" in page
    figure = page.split('id="diagram">', 1)[1].split("</figure>", 1)[0]
    assert ">statement_query<" in figure and "aggregation<" not in figure  # what it did
    assert 'fill="#fff8c5"' in figure  # where it waits now: the current step


async def test_an_event_driven_process_shows_its_branches_side_by_side(
    backend: InMemoryBackend,
) -> None:
    system = Previews(backend, failing={"qa"})
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    async with client_for(backend, domains=["previews"]) as http:
        page = (await http.get(f"/processes/previews/{system.pid}", auth=OPERATOR)).text
    lanes = page.split('id="branches"', 1)[1].split("</div>", 1)[0]
    assert "repeat(2, " in lanes  # one column per branch
    headings = re.findall(r"<h3>(.*?)</h3>", lanes)
    assert sorted(headings) == ["qa", "staging"]
    staging, qa = (lanes.split(f"<h3>{name}</h3>", 1)[1].split("</section>")[0]
                   for name in ("staging", "qa"))  # fmt: skip
    assert "deploy-staging</strong> #1 DeployPreview" in staging and "undone: yes" in staging
    assert "deploy-qa</strong> #1 DeployPreview" in qa and ">FAILED<" in qa
    assert "undone" not in qa
    # Its tasks ran in parallel: no path through its audit trail is drawn as a diagram.
    assert 'id="diagram"' not in page and "has no definition to draw" in page


async def test_a_reply_driven_process_has_no_branches(
    reports: tuple[Reports, httpx.AsyncClient],
) -> None:
    system, http = reports
    pid = await system.run()
    page = (await http.get(f"/processes/reporting/{pid}", auth=OPERATOR)).text
    assert 'id="branches"' not in page and "<h2>Branches</h2>" not in page


async def test_a_long_process_stream_is_read_in_one_bounded_page(
    backend: InMemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = Previews(backend)
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    monkeypatch.setattr(pictures, "MAX_STREAM_EVENTS", 3)
    row = await system.row()
    branches = await pictures.process_branches(backend, row)
    assert branches.truncated and sum(len(r) for r in branches.lanes.values()) <= 3
    monkeypatch.setattr(pictures, "MAX_STREAM_EVENTS", 5000)
    full = await pictures.process_branches(backend, row)
    assert not full.truncated and set(full.lanes) == {"staging", "qa"}


@needs_dot
def test_graphviz_escapes_labels_and_anything_active_is_not_inlined() -> None:
    evil = "--> " + SCRIPT + ' & "q" onload=alert(1)'
    graph = ProcessGraph(
        evil,
        (GraphNode("a", evil, NodeKind.STEP, evil), GraphNode("b", "b", NodeKind.FINAL)),
        (GraphEdge("a", "b", EdgeKind.FORWARD, evil),),
        evil,
    )
    svg = pictures._inline_svg(render_graphviz(to_dot(graph), "svg").decode())
    assert svg is not None and svg.startswith("<svg")
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert pictures._inline_svg("<svg><script>alert(1)</script></svg>") is None
    assert pictures._inline_svg('<svg onload="alert(1)"></svg>') is None
    assert pictures._inline_svg("<p>not an svg</p>") is None
