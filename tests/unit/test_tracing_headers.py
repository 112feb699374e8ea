"""The W3C headers the tracing writes and reads directly agree with the official
propagator of opentelemetry-api, both ways, tracestate included."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from commandbus.tracing import OpenTelemetryTracing

W3C = TraceContextTextMapPropagator()


def test_written_headers_are_what_the_propagator_writes() -> None:
    provider = TracerProvider()
    tracing = OpenTelemetryTracing(provider)
    state = trace.TraceState([("vendor", "v1")])
    parent = trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(1),
                          trace_state=state)
    )  # fmt: skip
    with trace.use_span(parent):
        ours = tracing.outgoing_headers(causation_id="c-1")
        theirs: dict[str, str] = {}
        W3C.inject(theirs)
    assert ours is not None
    assert ours.pop("causation_id") == "c-1"
    assert ours == theirs
    assert tracing.outgoing_headers() is None  # no current span: nothing to carry


def test_read_headers_give_the_parent_the_propagator_reads() -> None:
    tracing = OpenTelemetryTracing(TracerProvider())
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "congo=t61rcWkgMzE",
        "causation_id": "c-1",
    }
    ours = trace.get_current_span(tracing.parent_context(headers)).get_span_context()
    theirs = trace.get_current_span(W3C.extract(headers)).get_span_context()
    assert ours == theirs and ours.trace_state == theirs.trace_state and ours.is_remote
    for broken in ("00-zz-yy-01", "00-" + "0" * 32 + "-b7ad6b7169203331-01", 42):
        assert (
            tracing.parent_context({"traceparent": broken}) is None
            or not trace.get_current_span(tracing.parent_context({"traceparent": broken}))
            .get_span_context()
            .is_valid
        )
    assert tracing.parent_context({}) is None


def test_attributes_given_as_a_function_are_made_only_for_a_span_that_records() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    made: list[str] = []

    def attributes() -> dict[str, str]:
        made.append("made")
        return {"commandbus.command_id": "c-1"}

    exporter = InMemorySpanExporter()
    recording = TracerProvider()
    recording.add_span_processor(SimpleSpanProcessor(exporter))
    with OpenTelemetryTracing(recording).span("commandbus.handle", attributes) as span:
        span.set("commandbus.extra", 1)
    [finished] = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {
        "commandbus.command_id": "c-1",
        "commandbus.extra": 1,
    }
    assert made == ["made"]
    dropped = OpenTelemetryTracing(TracerProvider(sampler=ALWAYS_OFF))
    with dropped.span("commandbus.handle", attributes, {"traceparent": "00-" + "a" * 32 + "-"
                      + "b" * 16 + "-00"}) as span:  # fmt: skip
        span.set("commandbus.extra", 1)  # a span that does not record takes it, ignores it
        # Still current, so what it sends carries the (unsampled) trace on.
        assert (dropped.outgoing_headers() or {})["traceparent"].startswith("00-" + "a" * 32)
    assert made == ["made"]  # not made again for the span the sampler dropped
