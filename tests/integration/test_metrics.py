"""Prometheus metrics from a real bus, worker and router (in memory and on PostgreSQL),
and the /metrics endpoint they are served on."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any
from uuid import uuid4

from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import register_statement_handlers

from commandbus import (
    BusinessRuleException,
    CommandBus,
    HandlerRegistry,
    PermanentCommandError,
    RetryPolicy,
    TransientCommandError,
    Worker,
)
from commandbus.metrics import PrometheusMetrics, serve_metrics
from commandbus.process import ProcessReplyRouter, ProcessStatus

DOMAIN = "billing"


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def billing_registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    attempts: dict[str, int] = {}

    @registry.handler(DOMAIN, "Charge")
    async def charge(command: Any, context: Any) -> dict[str, Any]:
        kind = command.data["kind"]
        if kind == "rule":
            raise BusinessRuleException("NO_FUNDS", "insufficient funds")
        if kind == "bad":
            raise PermanentCommandError("BAD_CARD", "card refused")
        if kind == "flaky" and attempts.setdefault(str(command.command_id), 0) == 0:
            attempts[str(command.command_id)] = 1
            raise TransientCommandError("TIMEOUT", "gateway timed out")
        return {"charged": True}

    return registry


async def test_counters_and_histograms_per_domain_and_command_type(backend: Any) -> None:
    metrics = PrometheusMetrics()
    policy = RetryPolicy(max_attempts=3, backoff_schedule=(0,), jitter=0)
    bus = CommandBus(backend, retry_policy=policy, telemetry=metrics)
    worker = Worker(backend, DOMAIN, billing_registry(), retry_policy=policy, telemetry=metrics)
    for kind in ("ok", "ok", "rule", "bad", "flaky"):
        await bus.send(DOMAIN, "Charge", uuid4(), {"kind": kind})
    await worker.drain()
    labels = {"domain": DOMAIN, "command_type": "Charge"}
    assert value(metrics, "commandbus_commands_sent_total", **labels) == 5
    assert value(metrics, "commandbus_commands_completed_total", **labels) == 3
    assert value(metrics, "commandbus_commands_failed_total", **labels) == 1
    assert value(metrics, "commandbus_commands_moved_to_tsq_total", **labels) == 1
    assert value(metrics, "commandbus_commands_retried_total", **labels) == 1
    assert value(metrics, "commandbus_handler_duration_seconds_count", **labels) == 6
    assert value(metrics, "commandbus_command_latency_seconds_count", **labels) == 3
    latency = value(metrics, "commandbus_command_latency_seconds_sum", **labels)
    assert latency is not None and 0 <= latency < 60

    await metrics.sample(backend, [DOMAIN])
    queue = {"queue": f"{DOMAIN}__commands"}
    assert value(metrics, "commandbus_queue_depth", **queue) == 0
    assert value(metrics, "commandbus_troubleshooting_queue_size", domain=DOMAIN) == 1


async def test_process_metrics_and_gauges(backend: Any) -> None:
    metrics = PrometheusMetrics()
    bus = CommandBus(backend, telemetry=metrics)
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    worker = Worker(backend, "reporting", registry, telemetry=metrics)
    router = ProcessReplyRouter(backend, managers=[manager])  # the bus's telemetry
    data = {
        "from_date": "2024-01-01",
        "to_date": "2024-01-31",
        "account_list": ["A"],
        "output_type": "pdf",
    }
    first = await manager.start(data)
    await manager.start(data)
    await metrics.sample(backend, ["reporting"])
    processes = {"domain": "reporting", "status": ProcessStatus.WAITING_FOR_REPLY.value}
    assert value(metrics, "commandbus_processes", **processes) == 2
    queue = {"queue": "reporting__commands"}
    assert value(metrics, "commandbus_queue_depth", **queue) == 2
    assert (value(metrics, "commandbus_queue_oldest_message_age_seconds", **queue) or 0) >= 0
    for _ in range(20):
        if await worker.process_once() == 0 and await router.process_once() == 0:
            break
    done = await manager.get(first)
    assert done is not None and done.status is ProcessStatus.COMPLETED
    await metrics.sample(backend, ["reporting"])
    # The WAITING count went back to 0 (not left at its last value).
    assert value(metrics, "commandbus_processes", **processes) == 0
    completed = {"domain": "reporting", "status": "COMPLETED"}
    assert value(metrics, "commandbus_processes", **completed) == 2
    transitions = {"domain": "reporting", "process_type": "StatementReport", "status": "COMPLETED"}
    assert value(metrics, "commandbus_process_transitions_total", **transitions) == 2
    step = {
        "domain": "reporting",
        "process_type": "StatementReport",
        "step": "statement_query",
        "outcome": "SUCCESS",
    }
    assert value(metrics, "commandbus_process_step_duration_seconds_count", **step) == 2
    sent = {"domain": "reporting", "command_type": "StatementRender"}
    assert value(metrics, "commandbus_commands_sent_total", **sent) == 2


async def test_the_metrics_endpoint_serves_the_text_format_with_sampled_gauges(
    pg_backend: Any,
) -> None:
    metrics = PrometheusMetrics()
    bus = CommandBus(pg_backend, telemetry=metrics)
    await bus.send(DOMAIN, "Charge", uuid4(), {"kind": "ok"})
    async with serve_metrics(
        metrics, 0, backend=pg_backend, domains=[DOMAIN], sample_every=0.05
    ) as port:
        for _ in range(100):  # the first sample is taken at once, in the background
            if value(metrics, "commandbus_queue_depth", queue=f"{DOMAIN}__commands") == 1:
                break
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    text = body.decode()
    assert 'commandbus_commands_sent_total{command_type="Charge",domain="billing"} 1.0' in text
    assert 'commandbus_queue_depth{queue="billing__commands"} 1.0' in text
