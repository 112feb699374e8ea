"""OpenTelemetry traces (extra ``[otel]``: the library needs ``opentelemetry-api`` only;
the SDK and exporters are your application's).

``OpenTelemetryTracing`` is a ``Telemetry``: give it to ``CommandBus``, ``Worker`` and
``ProcessReplyRouter`` (``telemetry=tracing``, or ``combine(tracing, metrics)``). Spans:

- ``commandbus.send`` (producer): ``bus.send``/``send_batch``;
- ``commandbus.claim``, ``commandbus.settle``: a worker's batch round trips;
- ``commandbus.handle`` (consumer): one handler call, child of the span that sent it;
- ``commandbus.route``: a router's batch; ``commandbus.process.decide`` (consumer): one
  reply or timer decided, child of the handler span that replied;
- ``commandbus.process.start``: a ``start`` or ``start_many`` call;
  ``commandbus.process_manager.apply``: an event-driven process manager's batch.

``skip_spans`` names spans not to record (each recorded span costs the SDK tens of
microseconds, see docs/observability.md). A skipped span's trace context passes through:
the work it would have wrapped runs in the context of the message's sender, so the
commands and replies it sends carry that context and the trace stays one trace. With
``skip_spans={"commandbus.process.decide"}`` each handler span is the parent of the next
command's handler span.

The W3C trace context (``traceparent``, ``tracestate``) travels in each command's
``headers`` and in each reply's, so a process's commands, their replies and the commands
that follow form one trace. A command a process sends also carries ``causation_id``: the
id of the command whose reply (or timer) made the process send it
(``Command.causation_id``).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from commandbus.errors import MissingExtraError, ValidationError
from commandbus.models import JsonObject
from commandbus.telemetry import Attributes, Span, Telemetry

__all__ = ["SPAN_NAMES", "OpenTelemetryTracing"]

#: Every span the library opens.
SPAN_NAMES = frozenset(
    {
        "commandbus.send",
        "commandbus.claim",
        "commandbus.handle",
        "commandbus.settle",
        "commandbus.route",
        "commandbus.process.start",
        "commandbus.process.decide",
        "commandbus.process_manager.apply",
    }
)

#: Span name -> its OpenTelemetry kind (by name; INTERNAL when absent).
_KINDS = {
    "commandbus.send": "PRODUCER",
    "commandbus.handle": "CONSUMER",
    "commandbus.process.decide": "CONSUMER",
}


def _api() -> tuple[Any, Any, Any]:
    try:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError(
            "OpenTelemetry tracing needs opentelemetry-api: pip install 'commandbus[otel]'"
        ) from exc
    return trace, TraceContextTextMapPropagator(), context


def _version() -> str | None:
    try:
        return importlib.metadata.version("commandbus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return None


class OpenTelemetryTracing(Telemetry):
    """Spans from ``tracer_provider`` (default: the global one your SDK set up), except
    those named in ``skip_spans`` (see ``SPAN_NAMES``), whose trace context passes
    through unrecorded."""

    enabled = True

    def __init__(
        self, tracer_provider: Any | None = None, *, skip_spans: Iterable[str] = ()
    ) -> None:
        try:
            if isinstance(skip_spans, str):
                raise TypeError
            skipped = frozenset(skip_spans)
        except TypeError:
            raise ValidationError(
                "skip_spans takes span names, e.g. {'commandbus.claim'}"
            ) from None
        unknown = sorted(repr(name) for name in skipped if name not in SPAN_NAMES)
        if unknown:
            raise ValidationError(
                f"skip_spans: no span is named {', '.join(unknown)}; the spans "
                f"are {', '.join(sorted(SPAN_NAMES))}"
            )
        self.skip_spans = skipped
        trace, propagator, context = _api()
        self._trace = trace
        self._propagator = propagator
        self._context = context
        self._tracer = trace.get_tracer("commandbus", _version(), tracer_provider=tracer_provider)
        self._kinds = {name: getattr(trace.SpanKind, kind) for name, kind in _KINDS.items()}
        self._internal = trace.SpanKind.INTERNAL
        # A remote parent is set in an empty context (not a copy of the current one).
        self._root = context.Context()
        self._flags = {flags: trace.TraceFlags(flags) for flags in range(256)}

    def outgoing_headers(self, causation_id: str | None = None) -> JsonObject | None:
        # The W3C traceparent written directly (what the propagator writes, at a fraction
        # of its cost: this runs for every command and every reply).
        headers: JsonObject = {}
        context = self._trace.get_current_span().get_span_context()
        if context.is_valid:
            headers["traceparent"] = (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            )
            if context.trace_state:
                headers["tracestate"] = context.trace_state.to_header()
        if causation_id is not None:
            headers["causation_id"] = causation_id
        return headers or None

    def parent_context(self, headers: Mapping[str, Any]) -> Any | None:
        """The context whose span is the remote parent ``headers`` name; None if they
        name none. Version 00 is read directly; anything else goes to the SDK-agnostic
        W3C propagator of opentelemetry-api."""
        parent = headers.get("traceparent")
        if not isinstance(parent, str):
            return None
        # "00-<32 hex>-<16 hex>-<2 hex>", read by position (no split, no list).
        if len(parent) != 55 or parent[:3] != "00-" or parent[35] != "-" or parent[52] != "-":
            return self._propagator.extract(headers)
        try:
            trace_id, span_id = int(parent[3:35], 16), int(parent[36:52], 16)
            flags = int(parent[53:], 16)
        except ValueError:
            return None
        if not trace_id or not span_id:
            return None
        trace = self._trace
        state = headers.get("tracestate")
        span_context = trace.SpanContext(
            trace_id,
            span_id,
            True,
            self._flags[flags],
            trace.TraceState.from_header([state]) if isinstance(state, str) else None,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), self._root)

    def span(
        self,
        name: str,
        attributes: Attributes = None,
        headers: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[Span]:
        if name in self.skip_spans:
            return _PassedThrough(self, headers)
        return _ActiveSpan(self, name, attributes, headers)


class _PassedThrough(AbstractContextManager[Span], Span):
    """A skipped span: no span is made, and the block runs in the context of the
    message's sender (when the message carries one), which is what it then sends on."""

    __slots__ = ("_headers", "_token", "_tracing")

    def __init__(self, tracing: OpenTelemetryTracing, headers: Mapping[str, Any] | None) -> None:
        self._tracing = tracing
        self._headers = headers
        self._token: Any = None

    def __enter__(self) -> Span:
        parent = self._tracing.parent_context(self._headers) if self._headers else None
        if parent is not None:
            self._token = self._tracing._context.attach(parent)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            self._tracing._context.detach(self._token)


class _ActiveSpan(AbstractContextManager[Span], Span):
    """A span made current while the block runs, and the ``Span`` the block gets (one
    plain object: this runs for every command and every reply, and a generator-based
    context manager, or a second object, costs more)."""

    __slots__ = ("_attributes", "_headers", "_name", "_span", "_token", "_tracing")

    def __init__(
        self,
        tracing: OpenTelemetryTracing,
        name: str,
        attributes: Attributes,
        headers: Mapping[str, Any] | None,
    ) -> None:
        self._tracing = tracing
        self._name = name
        self._attributes = attributes
        self._headers = headers

    def __enter__(self) -> Span:
        tracing = self._tracing
        # A message's trace context makes the span a child of the one that sent it; a
        # message without one leaves the current context as the parent.
        headers = self._headers
        parent = tracing.parent_context(headers) if headers else None
        attributes = self._attributes
        make = attributes if callable(attributes) else None
        span = tracing._tracer.start_span(
            self._name,
            parent,
            tracing._kinds.get(self._name, tracing._internal),
            None if make is not None else attributes,
        )
        # Attributes made by a function are made only for a span that records.
        if make is not None and span.is_recording():
            span.set_attributes(make())
        self._span = span
        self._token = tracing._context.attach(tracing._trace.set_span_in_context(span))
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        if exc is not None:
            self.error(exc)
        self._tracing._context.detach(self._token)
        span.end()

    def set(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def error(self, exc: BaseException | str) -> None:
        trace = self._tracing._trace
        description = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self._span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        if isinstance(exc, BaseException):
            self._span.record_exception(exc)
