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
