"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, on a
console served by uvicorn over a real PostgreSQL with a worker and a router running.

A command of a process fails and is parked in the troubleshooting queue; an operator
retries it from the browser and the process then completes. A read-only user sees no
action button and is refused when it posts anyway. (``make browser-deps`` installs the
browser; with ``COMMANDBUS_CONSOLE_SCREENSHOTS=DIR`` the main pages are saved there.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
import uvicorn
from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import (
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)
from playwright.async_api import Browser, Page, async_playwright

from commandbus import CommandBus, HandlerRegistry, PermanentCommandError, RetryPolicy, Worker
from commandbus.console import ConsoleUsers, create_app
from commandbus.memory import InMemoryBackend
from commandbus.metrics import PrometheusMetrics
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.testing.clock import VirtualClock

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
OPERATOR = {"username": "ada", "password": "op-secret"}
VIEWER = {"username": "vic", "password": "view-only"}
INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-03-31",
    "account_list": ["ACC-001", "<script>alert(1)</script>"],
    "output_type": "pdf",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Running:
    """A console on a free port, and the worker and router of the statement report."""

    def __init__(
        self,
        backend: PostgresBackend,
        domains: tuple[str, ...] = (),
        manager: type[StatementReportProcess] = StatementReportProcess,
    ) -> None:
        self.backend = backend
        self.bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
        self.manager = manager(self.bus)
        self.config = ServiceConfig(rates={"StatementQuery": FailureRates(permanent=1.0)})
        registry = HandlerRegistry()
        register_statement_handlers(registry, self.config)
        self.worker = Worker(backend, "reporting", registry)
        self.router = ProcessReplyRouter(backend, managers=[self.manager])
        users = ConsoleUsers.from_specs(
            [f"ada:{OPERATOR['password']}", f"vic:{VIEWER['password']}:viewer"]
        )
        app = create_app(
            backend, users, domains=domains, managers=[self.manager], metrics=PrometheusMetrics()
        )
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.base = f"http://127.0.0.1:{self.port}"

    async def status_of(self, process_id: Any) -> ProcessStatus | None:
        process = await self.manager.get(process_id)
        return process.status if process is not None else None

    async def wait_for_status(self, process_id: Any, status: ProcessStatus) -> None:
        for _ in range(300):
            if await self.status_of(process_id) is status:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"process {process_id} never reached {status.value}")


@pytest_asyncio.fixture
async def running(pg_backend: PostgresBackend) -> AsyncIterator[Running]:
    async with serving(Running(pg_backend)) as system:
        yield system


@contextlib.asynccontextmanager
async def serving(system: Running, *, worker: bool = True) -> AsyncIterator[Running]:
    """The console, the router and (unless ``worker`` is false) the worker, running."""
    tasks = [
        asyncio.create_task(system.server.serve()),
        asyncio.create_task(system.router.run(poll_interval=0.1)),
    ]
    if worker:
        tasks.append(asyncio.create_task(system.worker.run(concurrency=2, poll_interval=0.1)))
    for _ in range(200):
        if system.server.started:
            break
        await asyncio.sleep(0.02)
    assert system.server.started, "the console did not start"
    try:
        yield system
    finally:
        system.server.should_exit = True
        system.worker.stop()
        system.router.stop()
        await asyncio.gather(*tasks)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_as(browser: Browser, credentials: dict[str, str]) -> Page:
    context = await browser.new_context(
        http_credentials=credentials,  # type: ignore[arg-type]
        viewport={"width": 1280, "height": 900},
    )
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    return page


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("COMMANDBUS_CONSOLE_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"console-{name}.png"), full_page=True)


async def test_an_operator_retries_a_parked_command_and_its_process_completes(
    running: Running, browser: Browser
) -> None:
    pid = await running.manager.start(INPUT)
    await running.wait_for_status(pid, ProcessStatus.WAITING_FOR_TSQ)
    running.config.rates.clear()  # the cause is fixed: the next attempt succeeds

    page = await open_as(browser, OPERATOR)
    await page.goto(running.base + "/")
    assert await page.locator("h2", has_text="reporting").count() == 1

    await page.goto(running.base + "/tsq?domain=reporting")
    rows = page.locator("tbody tr")
    assert await rows.count() == 1
    await screenshot(page, "tsq")
    await rows.first.locator("a").click()
    await page.wait_for_selector("#retry")
    # The account list holds a <script>: shown as text, never run.
    assert "<script>alert(1)</script>" in await page.locator("pre.payload").inner_text()
    await screenshot(page, "tsq-item")
    await page.click("#retry")  # confirms the dialog (accepted above)
    await page.wait_for_selector("text=command retried")
    assert "/commands/reporting/" in page.url

    await running.wait_for_status(pid, ProcessStatus.COMPLETED)
    await page.goto(f"{running.base}/processes/reporting/{pid}")
    assert await page.locator("#process-status").inner_text() == "COMPLETED"
    # Its definition drawn by Graphviz on the server, the path it took highlighted.
    diagram = page.locator("#diagram svg")
    assert await diagram.is_visible()
    assert await diagram.locator("text", has_text="statement_render").count() == 1
    assert await diagram.locator("text", has_text="delete_query_result").count() == 1
    await screenshot(page, "process")
    trail = await running.manager.get_audit_trail(pid)
    assert [e.command_type for e in trail] == [
        "StatementQuery",
        "StatementDataAggregation",
        "StatementRender",
    ]
    # The operator's retry is in the command's audit, with the operator's name.
    retried = await running.bus.get_audit_trail(trail[0].command_id)
    [event] = [e for e in retried if e.event_type.value == "OPERATOR_RETRY"]
    assert event.details is not None and event.details["operator"] == "ada"


async def test_a_viewer_sees_no_action_and_is_refused_when_posting_anyway(
    running: Running, browser: Browser
) -> None:
    pid = await running.manager.start(INPUT)
    await running.wait_for_status(pid, ProcessStatus.WAITING_FOR_TSQ)
    [item] = await running.manager.get_audit_trail(pid)

    page = await open_as(browser, VIEWER)
    await page.goto(f"{running.base}/tsq/reporting/{item.command_id}")
    assert "viewer" in await page.locator("header .user").inner_text()
    assert await page.locator("button.act").count() == 0
    assert await page.locator("form[method=post]").count() == 0
    await page.goto(f"{running.base}/processes/reporting/{pid}")
    assert await page.locator("#cancel-process").count() == 0

    # Posting anyway, from the page itself with its own CSRF token: refused.
    status = await page.evaluate(
        """async ([url]) => {
            const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
            const response = await fetch(url, {
                method: "POST",
                headers: {"Content-Type": "application/x-www-form-urlencoded"},
                body: "csrf_token=" + encodeURIComponent(token),
            });
            return response.status;
        }""",
        [f"/tsq/reporting/{item.command_id}/retry"],
    )
    assert status == 403
    assert await running.status_of(pid) is ProcessStatus.WAITING_FOR_TSQ
    meta = await running.bus.get_command("reporting", item.command_id)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"


async def test_an_event_driven_process_shows_its_branches_side_by_side(
    pg_backend: PostgresBackend, browser: Browser
) -> None:
    from tests.pull_request_scenarios import Previews

    previews = Previews(pg_backend, failing={"qa"})
    await previews.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await previews.settle()
    async with serving(Running(pg_backend, domains=("previews",))) as system:
        page = await open_as(browser, VIEWER)
        await page.goto(f"{system.base}/processes/previews/{previews.pid}")
        assert await page.locator("#process-status").inner_text() == "COMPENSATED"
        lanes = page.locator("#branches .lane")
        assert sorted(await lanes.locator("h3").all_inner_texts()) == ["qa", "staging"]
        # Side by side: one column per branch, on one row.
        boxes = [await lane.bounding_box() for lane in await lanes.all()]
        assert all(box is not None for box in boxes)
        assert len({round(box["y"]) for box in boxes if box}) == 1
        assert len({round(box["x"]) for box in boxes if box}) == 2
        staging = page.locator("#branches .lane", has_text="staging")
        assert "undone: yes" in await staging.inner_text()
        qa = page.locator("#branches .lane", has_text="qa")
        assert "FAILED" in await qa.inner_text()
        await screenshot(page, "process-branches")


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "the console did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def an_hour_of_traffic(backend: InMemoryBackend, clock: VirtualClock) -> Any:
    """Statement reports and payments for an hour of virtual time, busier in the middle,
    some payments refused (the troubleshooting queue), latencies of a few seconds."""
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(registry, ServiceConfig())

    @registry.handler("payments", "Debit")
    async def debit(command: Any, context: Any) -> None:
        if command.data["n"] % 11 == 0:
            raise PermanentCommandError("CARD_EXPIRED", "card expired")

    workers = [Worker(backend, d, registry) for d in ("reporting", "payments")]
    router = ProcessReplyRouter(backend, managers=[manager])
    sent = 0
    pace = random.Random(7)  # the same hour every run
    for minute in range(60):
        busy = 1 + round(6 * math.sin(math.pi * minute / 60) ** 2)
        for _ in range(busy):
            await manager.start(INPUT)
            for _ in range(2):
                sent += 1
                await bus.send("payments", "Debit", uuid4(), {"n": sent})
        spent = 0.0
        for _ in range(6):  # three steps, each answered after a second or so
            wait = pace.uniform(0.2, 0.9) * (1.5 if 25 <= minute < 35 else 1.0)
            await clock.advance(wait)
            spent += wait
            for worker in workers:
                await worker.drain()
            await router.drain()
        await clock.advance(60 - spent)
    return manager


async def test_the_dashboard_draws_the_last_hour(browser: Browser) -> None:
    clock = VirtualClock(datetime(2025, 3, 1, 8, 0, 5, tzinfo=UTC))
    backend = InMemoryBackend(clock=clock)
    manager = await an_hour_of_traffic(backend, clock)
    users = ConsoleUsers.from_specs([f"vic:{VIEWER['password']}:viewer"])
    app = create_app(backend, users, domains=["payments"], managers=[manager])
    async with serve(app) as base:
        page = await open_as(browser, VIEWER)
        await page.goto(base + "/")
        charts = page.locator("#activity svg.chart-svg")
        assert await charts.count() == 4  # two per domain
        for index in range(4):
            box = await charts.nth(index).bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 60
        payments = page.locator('#activity section[data-domain="payments"]')
        bars = payments.locator("svg.chart-svg rect.completed")
        # One bar per minute of traffic: 08:01 to 08:59 (the clock stands at 09:00:05,
        # so 08:00 has just left the window, and 09:00 saw nothing yet).
        assert await bars.count() == 59
        assert await payments.locator("rect.failed").count() > 0
        assert "failed" in await payments.locator("figcaption").first.inner_text()
        durations = page.locator('#activity section[data-domain="reporting"] table.durations')
        assert "StatementReport" in await durations.inner_text()
        assert await durations.locator("svg.bar-svg").count() == 4
        await screenshot(page, "dashboard")
