"""OpenTelemetry traces, recorded by the SDK's in-memory exporter, in memory and on
PostgreSQL: one trace from the send through the handler, the reply, the process's
decisions and the commands they send; causation ids on the commands a process sends."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import uuid4

import pytest
from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import register_statement_handlers
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from commandbus import (
    CommandBus,
    HandlerRegistry,
    PermanentCommandError,
    RetryPolicy,
    TroubleshootingQueue,
    Worker,
)
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.tracing import OpenTelemetryTracing


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def _run_one_process(
    backend: Any, tracing: OpenTelemetryTracing, registry: HandlerRegistry | None = None
) -> tuple[StatementReportProcess, Any]:
    """Start one StatementReport process and drive it to completion with ``tracing`` on
    the bus and the worker (the statement handlers, or ``registry``'s)."""
    bus = CommandBus(backend, telemetry=tracing)
    manager = StatementReportProcess(bus)
    if registry is None:
        registry = HandlerRegistry()
        register_statement_handlers(registry)
    worker = Worker(backend, "reporting", registry, telemetry=tracing)
    router = ProcessReplyRouter(backend, managers=[manager])
    pid = await manager.start(
        {"from_date": "2024-01-01", "to_date": "2024-01-31", "account_list": ["A"]}
        | {"output_type": "pdf"}
    )
    for _ in range(20):
        if await worker.process_once() == 0 and await router.process_once() == 0:
            break
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.COMPLETED
    return manager, pid


async def test_a_process_its_commands_and_replies_form_one_trace(
    backend: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OpenTelemetryTracing(provider)
    bus = CommandBus(backend, telemetry=tracing)
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    worker = Worker(backend, "reporting", registry, telemetry=tracing)
    router = ProcessReplyRouter(backend, managers=[manager])  # the bus's telemetry
    tracer = provider.get_tracer("the application")
    with tracer.start_as_current_span("checkout") as root:
        pid = await manager.start(
            {
                "from_date": "2024-01-01",
                "to_date": "2024-01-31",
                "account_list": ["A"],
                "output_type": "pdf",
            }
        )
    for _ in range(20):
        if await worker.process_once() == 0 and await router.process_once() == 0:
            break
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.COMPLETED

    spans = exporter.get_finished_spans()
    handles = sorted(named(spans, "commandbus.handle"), key=lambda s: s.start_time or 0)
    decides = sorted(named(spans, "commandbus.process.decide"), key=lambda s: s.start_time or 0)
    assert [h.attributes["commandbus.command_type"] for h in handles] == [  # type: ignore[index]
        "StatementQuery",
        "StatementDataAggregation",
        "StatementRender",
    ]
    assert len(decides) == 3
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in [*handles, *decides]} == {trace_id}
    # The chain: checkout -> start -> handle -> decide -> handle -> decide -> handle -> decide.
    [start] = named(spans, "commandbus.process.start")
    assert parent_of(start) == root.get_span_context().span_id
    assert parent_of(handles[0]) == start.context.span_id
    for handle, decide in zip(handles, decides, strict=True):
        assert parent_of(decide) == handle.context.span_id
    for decide, handle in zip(decides, handles[1:], strict=False):
        assert parent_of(handle) == decide.context.span_id
    assert {h.kind for h in handles} == {SpanKind.CONSUMER}
    assert named(spans, "commandbus.claim") and named(spans, "commandbus.settle")
    assert named(spans, "commandbus.route")


async def test_a_handler_receives_the_causation_id_and_the_trace_context(
    backend: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    seen: list[tuple[str, str | None, bool]] = []
    inner = HandlerRegistry()
    for command_type in registry.command_types("reporting"):
        registered = registry.get("reporting", command_type)

        async def spy(command: Any, context: Any, _fn: Any = registered.fn) -> Any:
            headers = command.headers or {}
            seen.append((command.command_type, command.causation_id, "traceparent" in headers))
            return await _fn(command, context)

        inner.handler("reporting", command_type)(spy)
    manager, pid = await _run_one_process(backend, OpenTelemetryTracing(provider), inner)
    trail = await manager.get_audit_trail(pid)
    first, second, _ = (str(e.command_id) for e in trail)
    assert seen == [
        ("StatementQuery", None, True),
        ("StatementDataAggregation", first, True),
        ("StatementRender", second, True),
    ]


async def test_send_span_is_the_parent_of_the_handler_span_and_a_failure_is_marked(
    backend: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OpenTelemetryTracing(provider)
    bus = CommandBus(backend, telemetry=tracing, retry_policy=RetryPolicy(max_attempts=1))
    registry = HandlerRegistry()
    calls: list[int] = []

    @registry.handler("payments", "Debit")
    async def debit(command: Any, context: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise PermanentCommandError("CARD_EXPIRED", "the card expired")

    worker = Worker(backend, "payments", registry, telemetry=tracing)
    sent = await bus.send("payments", "Debit", uuid4(), {"amount": 1})
    await worker.drain()
    # An operator's retry puts the archived message back: the retry joins the trace.
    await TroubleshootingQueue(backend).operator_retry("payments", sent.command_id, "ada")
    await worker.drain()
    spans = exporter.get_finished_spans()
    [send] = named(spans, "commandbus.send")
    failed, retried = sorted(named(spans, "commandbus.handle"), key=lambda s: s.start_time or 0)
    assert send.kind is SpanKind.PRODUCER
    assert parent_of(failed) == parent_of(retried) == send.context.span_id
    assert failed.status.status_code is StatusCode.ERROR
    assert "CARD_EXPIRED" in (failed.status.description or "")
    assert retried.status.status_code is not StatusCode.ERROR


async def test_skipped_decision_spans_leave_each_handler_span_the_parent_of_the_next(
    backend: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OpenTelemetryTracing(provider, skip_spans={"commandbus.process.decide"})
    await _run_one_process(backend, tracing)
    spans = exporter.get_finished_spans()
    assert named(spans, "commandbus.process.decide") == []
    handles = sorted(named(spans, "commandbus.handle"), key=lambda s: s.start_time or 0)
    [start] = named(spans, "commandbus.process.start")
    assert len(handles) == 3
    assert {h.context.trace_id for h in handles} == {start.context.trace_id}
    assert parent_of(handles[0]) == start.context.span_id
    for previous, following in itertools.pairwise(handles):
        assert parent_of(following) == previous.context.span_id


async def test_skipped_handler_spans_leave_each_decision_span_the_parent_of_the_next(
    backend: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OpenTelemetryTracing(
        provider, skip_spans=["commandbus.handle", "commandbus.claim", "commandbus.settle"]
    )
    await _run_one_process(backend, tracing)
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {
        "commandbus.process.start",
        "commandbus.process.decide",
        "commandbus.route",
    }
    decides = sorted(named(spans, "commandbus.process.decide"), key=lambda s: s.start_time or 0)
    [start] = named(spans, "commandbus.process.start")
    assert len(decides) == 3
    assert parent_of(decides[0]) == start.context.span_id
    for previous, following in itertools.pairwise(decides):
        assert parent_of(following) == previous.context.span_id
