"""The W3C headers the tracing writes and reads directly agree with the official
propagator of opentelemetry-api, both ways, tracestate included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import commandbus
from commandbus.errors import ValidationError
from commandbus.tracing import SPAN_NAMES, OpenTelemetryTracing

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


def test_skip_spans_takes_only_the_names_of_the_librarys_spans() -> None:
    with pytest.raises(ValidationError, match=re.escape("no span is named 'commandbus.decide'")):
        OpenTelemetryTracing(TracerProvider(), skip_spans={"commandbus.decide"})
    with pytest.raises(ValidationError, match="takes span names"):
        OpenTelemetryTracing(TracerProvider(), skip_spans="commandbus.claim")
    with pytest.raises(ValidationError, match="no span is named"):
        OpenTelemetryTracing(TracerProvider(), skip_spans=[1, "x"])  # type: ignore[list-item]
    for not_names in (5, [["commandbus.claim"]]):
        with pytest.raises(ValidationError, match="takes span names"):
            OpenTelemetryTracing(TracerProvider(), skip_spans=not_names)  # type: ignore[arg-type]
    tracing = OpenTelemetryTracing(TracerProvider(), skip_spans=SPAN_NAMES)
    assert tracing.skip_spans == SPAN_NAMES


def test_span_names_are_every_span_the_library_opens() -> None:
    # Read from the source: a span added without its name here could not be skipped.
    source = Path(commandbus.__file__).parent
    opened = {
        match
        for path in source.rglob("*.py")
        for match in re.findall(r'\.span\(\s*"(commandbus\.[a-z_.]+)"', path.read_text())
    }
    assert opened == SPAN_NAMES


def test_a_skipped_span_passes_the_senders_context_on_and_records_nothing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OpenTelemetryTracing(provider, skip_spans={"commandbus.handle"})
    with provider.get_tracer("test").start_as_current_span("sender") as sender:
        headers = tracing.outgoing_headers()
    assert headers is not None
    with tracing.span("commandbus.handle", {"a": 1}, headers) as span:
        span.set("b", 2)
        span.error("ignored")
        passed_on = tracing.outgoing_headers()
    assert passed_on == headers
    assert trace.get_current_span().get_span_context().is_valid is False
    assert [s.name for s in exporter.get_finished_spans()] == ["sender"]
    assert sender.get_span_context().span_id == int(headers["traceparent"][36:52], 16)


@given(
    st.one_of(
        st.text(),
        st.integers(),
        st.lists(st.one_of(st.text(), st.integers(), st.sampled_from(sorted(SPAN_NAMES)))),
        st.lists(st.lists(st.text(), max_size=2), min_size=1, max_size=2),
    )
)
def test_skip_spans_takes_the_librarys_names_or_raises_a_validation_error(value: object) -> None:
    try:
        tracing = OpenTelemetryTracing(TracerProvider(), skip_spans=value)  # type: ignore[arg-type]
    except ValidationError:
        names_only = isinstance(value, list) and all(
            isinstance(n, str) and n in SPAN_NAMES for n in value
        )
        assert not names_only
    else:
        assert isinstance(value, list) and tracing.skip_spans == frozenset(value)
