"""OpenTelemetry traces (extra ``[otel]``: the library needs ``opentelemetry-api`` only;
the SDK and exporters are your application's).

``OpenTelemetryTracing`` is a ``Telemetry``: give it to ``CommandBus``, ``Worker`` and
``ProcessReplyRouter`` (``telemetry=tracing``, or ``combine(tracing, metrics)``). Spans:

- ``commandbus.send`` (producer): ``bus.send``/``send_batch``;
- ``commandbus.claim``, ``commandbus.settle``: a worker's batch round trips;
- ``commandbus.handle`` (consumer): one handler call, child of the span that sent it;
- ``commandbus.route``: a router's batch; ``commandbus.process.decide`` (consumer): one
  reply or timer decided, child of the handler span that replied.

The W3C trace context (``traceparent``, ``tracestate``) travels in each command's
``headers`` and in each reply's, so a process's commands, their replies and the commands
that follow form one trace. A command a process sends also carries ``causation_id``: the
id of the command whose reply (or timer) made the process send it
(``Command.causation_id``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator, Mapping
from typing import Any

from commandbus.errors import MissingExtraError
from commandbus.models import JsonObject
from commandbus.telemetry import Span, Telemetry

__all__ = ["OpenTelemetryTracing"]

#: Span name -> its OpenTelemetry kind (by name; INTERNAL when absent).
_KINDS = {
    "commandbus.send": "PRODUCER",
    "commandbus.handle": "CONSUMER",
    "commandbus.process.decide": "CONSUMER",
}


def _api() -> tuple[Any, Any, Any]:
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError(
            "OpenTelemetry tracing needs opentelemetry-api: pip install 'commandbus[otel]'"
        ) from exc
    return trace, TraceContextTextMapPropagator(), trace.Status


def _version() -> str | None:
    try:
        return importlib.metadata.version("commandbus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return None


class _OtelSpan(Span):
    def __init__(self, span: Any, trace: Any) -> None:
        self._span = span
        self._trace = trace

    def set(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def error(self, exc: BaseException | str) -> None:
        description = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self._span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))
        if isinstance(exc, BaseException):
            self._span.record_exception(exc)


class OpenTelemetryTracing(Telemetry):
    """Spans from ``tracer_provider`` (default: the global one your SDK set up)."""

    enabled = True

    def __init__(self, tracer_provider: Any | None = None) -> None:
        trace, propagator, _ = _api()
        self._trace = trace
        self._propagator = propagator
        self._tracer = trace.get_tracer("commandbus", _version(), tracer_provider=tracer_provider)

    def outgoing_headers(self, causation_id: str | None = None) -> JsonObject | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        headers: JsonObject = dict(carrier)
        if causation_id is not None:
            headers["causation_id"] = causation_id
        return headers or None

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Iterator[Span]:
        # A message's trace context makes the span a child of the one that sent it; a
        # message without one leaves the current context as the parent.
        parent = None
        if headers:
            parent = self._propagator.extract(
                {k: v for k, v in headers.items() if isinstance(v, str)}
            )
        kind = getattr(self._trace.SpanKind, _KINDS.get(name, "INTERNAL"))
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=dict(attributes or {}),
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield _OtelSpan(span, self._trace)
