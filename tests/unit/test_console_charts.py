"""The dashboard's last hour: commands per minute and their latency, process and step
durations, drawn on the server as inline SVG from the operator API's activity queries
(httpx against the ASGI app, in-memory backend on a virtual clock)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
from examples.statement_report.handlers import ServiceConfig
from tests.unit.test_console_process import Reports

from commandbus import CommandBus, HandlerRegistry, PermanentCommandError, RetryPolicy, Worker
from commandbus.activity import Durations, MinuteActivity
from commandbus.console import ConsoleUsers, create_app
from commandbus.console.charts import (
    duration_bar,
    fmt_seconds,
    latency_chart,
    throughput_chart,
)
from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock

T0 = datetime(2025, 3, 1, 9, 0, 30, tzinfo=UTC)
VIEWER = ("vic", "look")


def client_for(backend: InMemoryBackend, **kwargs: Any) -> httpx.AsyncClient:
    users = ConsoleUsers.from_specs([f"{VIEWER[0]}:{VIEWER[1]}:viewer"])
    app = create_app(backend, users, **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


def section(page: str, domain: str) -> str:
    return page.split(f'data-domain="{domain}">', 1)[1].split("</section>", 1)[0]


async def test_the_dashboard_charts_the_last_hour_per_domain() -> None:
    clock = VirtualClock(T0)
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
    registry = HandlerRegistry()

    @registry.handler("payments", "Debit")
    async def debit(command: Any, context: Any) -> None:
        if command.data.get("fail"):
            raise PermanentCommandError("NO", "<b>refused</b>")

    worker = Worker(backend, "payments", registry)
    for minute in range(3):  # 09:00, 09:01, 09:02: 2, 3, 4 completed and 1 failed each
        for n in range(minute + 2):
            await bus.send("payments", "Debit", uuid4(), {"n": n})
        await bus.send("payments", "Debit", uuid4(), {"fail": True})
        await clock.advance(1.5 + minute)
        await worker.drain()
        await clock.advance(60 - 1.5 - minute)
    async with client_for(backend, domains=["payments", "reporting"]) as http:
        page = (await http.get("/", auth=VIEWER)).text
        partial = (await http.get("/partials/activity", auth=VIEWER)).text
    assert 'hx-get="/partials/activity" hx-trigger="every 60s"' in page
    assert "<html" not in partial and 'data-domain="payments"' in partial
    payments = section(page, "payments")
    assert "9 completed" in payments and "3 failed" in payments
    throughput, latency = re.findall(r"<svg class=\"chart-svg\".*?</svg>", payments)
    # One stacked bar per busy minute, the window ending with the current minute (09:03).
    bars = re.findall(r"<title>(\d\d:\d\d) UTC: (\d+) completed, (\d+) failed</title>", throughput)
    assert bars == [("09:00", "2", "1"), ("09:01", "3", "1"), ("09:02", "4", "1")]
    assert throughput.count('class="completed"') == 3 and throughput.count('class="failed"') == 3
    assert ">08:04<" in throughput and ">09:03<" in throughput  # 60 minutes, the last one now
    # Latency: the median and the 95th percentile of each minute (1.5 s, 2.5 s, 3.5 s).
    assert re.findall(r"(\d\d:\d\d) UTC: median ([^,]+),", latency) == [
        ("09:00", "1.5 s"), ("09:01", "2.5 s"), ("09:02", "3.5 s")] * 2  # fmt: skip
    assert latency.count("<polyline") == 2
    # A domain without traffic: empty charts, no error.
    reporting = section(page, "reporting")
    assert "0 completed" in reporting and "<rect class" not in reporting
    assert "No process step answered in the last hour." in reporting


async def test_process_and_step_durations_are_listed_with_bars() -> None:
    clock = VirtualClock(T0)
    backend = InMemoryBackend(clock=clock)
    system = Reports(backend, ServiceConfig())
    for _ in range(2):
        await system.run()
        await clock.advance(7)
    async with client_for(backend, managers=[system.manager]) as http:
        page = (await http.get("/", auth=VIEWER)).text
    reporting = section(page, "reporting")
    rows = re.findall(
        r'<tr class="(process|step)-duration"><td>(.*?)</td><td>(\d+)</td>', reporting
    )
    assert rows[0] == ("process", "<strong>StatementReport</strong> (whole process)", "2")
    assert {name for kind, name, _ in rows[1:]} == {
        "StatementReport · statement_query",
        "StatementReport · statement_data_aggregation",
        "StatementReport · statement_render",
    }
    assert reporting.count('<svg class="bar-svg"') == 4


def test_charts_are_escaped_and_formatted() -> None:
    minutes = [
        MinuteActivity(T0, 1, 0, Durations.of([0.2])),
        MinuteActivity(T0 + timedelta(minutes=1)),
        MinuteActivity(T0 + timedelta(minutes=2), 2, 2, Durations.of([1.0, 30.0])),
    ]
    svg = throughput_chart("<script>x</script>", minutes)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    # A minute without completions breaks the latency lines: three dots per line, no line
    # joins them across the gap.
    latency = latency_chart("d", minutes)
    assert latency.count("<polyline") == 0 and latency.count("<circle") == 4
    assert ">50 s<" in latency  # the top of the scale: 95th percentile 28.55 s -> 50 s
    assert [fmt_seconds(s) for s in (0.25, 3.21, 42, 270, 9000)] == [
        "250 ms", "3.2 s", "42 s", "4.5 min", "2.5 h"]  # fmt: skip
    bar = duration_bar(Durations(3, 1.0, 2.0, 4.0), 4.0)
    assert 'width="55.0"' in bar and 'width="110.0"' in bar and 'x1="220.0"' in bar
