"""The hooks through which metrics and traces see the library, off by default.

``Telemetry`` is a base class whose every hook does nothing; ``NO_TELEMETRY`` is the one
the components use unless given another. ``PrometheusMetrics``
(``commandbus.metrics``, extra ``[metrics]``) and ``OpenTelemetryTracing``
(``commandbus.tracing``, extra ``[otel]``) override the hooks they need; ``combine`` joins
several. The hot path asks ``telemetry.enabled`` before it measures anything, so with
telemetry off a command costs one attribute read per hook site, no clock read, no
allocation.

Trace context: ``outgoing_headers()`` is what a send attaches to each command's queue
message (W3C ``traceparent``/``tracestate``, and the ``causation_id`` of the message that
caused the send); ``span(name, attributes, headers)`` opens a span whose parent is the
context carried by ``headers`` when there is one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from commandbus.models import JsonObject, SendRequest

__all__ = [
    "NO_TELEMETRY",
    "Attributes",
    "Span",
    "Telemetry",
    "combine",
    "count_sent",
    "with_headers",
]

#: A span's attributes: a mapping, or a function that makes one, called only if the span
#: records (a span a sampler dropped then costs no attribute at all; a sampler sees only
#: the attributes given as a mapping).
Attributes = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None


class Span:
    """What a hook's ``span`` yields: set attributes and record an error on it."""

    def set(self, key: str, value: Any) -> None:
        """Set attribute ``key`` (does nothing here)."""

    def error(self, exc: BaseException | str) -> None:
        """Mark the span failed (does nothing here)."""


_NO_SPAN = Span()


class Telemetry:
    """Hooks called by the bus, the workers and the routers; all of them do nothing."""

    #: False here: the hot path skips measuring. Subclasses that do something set True.
    enabled = False

    # -- metrics -------------------------------------------------------------------------

    def commands_sent(self, domain: str, command_type: str, count: int = 1) -> None:
        """``count`` commands of ``command_type`` were sent (committed or not yet)."""

    def command_handled(self, domain: str, command_type: str, seconds: float) -> None:
        """A handler of ``command_type`` ran for ``seconds``."""

    def command_settled(
        self, domain: str, command_type: str, status: str, latency_seconds: float | None
    ) -> None:
        """A delivery settled with ``status`` (COMPLETED, PENDING for a retry, FAILED,
        IN_TROUBLESHOOTING_QUEUE); ``latency_seconds`` is from the send to now."""

    def process_step_finished(
        self, domain: str, process_type: str, step: str, outcome: str, seconds: float
    ) -> None:
        """A process step's reply was applied ``seconds`` after its command was sent."""

    def process_changed(self, domain: str, process_type: str, status: str) -> None:
        """A process was written with ``status``."""

    # -- traces --------------------------------------------------------------------------

    def outgoing_headers(self, causation_id: str | None = None) -> JsonObject | None:
        """Headers for a command sent now (the current trace context); None: none."""
        return None

    def span(
        self,
        name: str,
        attributes: Attributes = None,
        headers: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[Span]:
        """A span around a unit of work, child of the context in ``headers`` if any;
        ``attributes`` a mapping or a function that makes one (see ``Attributes``)."""
        return contextlib.nullcontext(_NO_SPAN)


#: The telemetry of every component not given another: nothing measured, nothing traced.
NO_TELEMETRY = Telemetry()


class _Combined(Telemetry):
    """Each hook calls only the parts that override it (metrics do not trace, traces do
    not count): a combined telemetry costs what its parts cost, no more."""

    enabled = True

    def __init__(self, parts: Sequence[Telemetry]) -> None:
        self.parts = tuple(parts)

        def overriding(hook: str) -> tuple[Any, ...]:
            return tuple(
                getattr(p, hook)
                for p in self.parts
                if getattr(type(p), hook) is not getattr(Telemetry, hook)
            )

        self._sent = overriding("commands_sent")
        self._handled = overriding("command_handled")
        self._settled = overriding("command_settled")
        self._steps = overriding("process_step_finished")
        self._changed = overriding("process_changed")
        self._headers = overriding("outgoing_headers")
        self._spans = overriding("span")

    def commands_sent(self, domain: str, command_type: str, count: int = 1) -> None:
        for hook in self._sent:
            hook(domain, command_type, count)

    def command_handled(self, domain: str, command_type: str, seconds: float) -> None:
        for hook in self._handled:
            hook(domain, command_type, seconds)

    def command_settled(
        self, domain: str, command_type: str, status: str, latency_seconds: float | None
    ) -> None:
        for hook in self._settled:
            hook(domain, command_type, status, latency_seconds)

    def process_step_finished(
        self, domain: str, process_type: str, step: str, outcome: str, seconds: float
    ) -> None:
        for hook in self._steps:
            hook(domain, process_type, step, outcome, seconds)

    def process_changed(self, domain: str, process_type: str, status: str) -> None:
        for hook in self._changed:
            hook(domain, process_type, status)

    def outgoing_headers(self, causation_id: str | None = None) -> JsonObject | None:
        if len(self._headers) == 1:
            one: JsonObject | None = self._headers[0](causation_id)
            return one
        merged: JsonObject = {}
        for hook in self._headers:
            merged.update(hook(causation_id) or {})
        return merged or None

    def span(
        self,
        name: str,
        attributes: Attributes = None,
        headers: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[Span]:
        if not self._spans:
            return contextlib.nullcontext(_NO_SPAN)
        if len(self._spans) == 1:
            one: AbstractContextManager[Span] = self._spans[0](name, attributes, headers)
            return one
        return self._all_spans(name, attributes, headers)

    @contextlib.contextmanager
    def _all_spans(
        self,
        name: str,
        attributes: Attributes,
        headers: Mapping[str, Any] | None,
    ) -> Iterator[Span]:
        with contextlib.ExitStack() as stack:
            yield _Spans([stack.enter_context(s(name, attributes, headers)) for s in self._spans])


class _Spans(Span):
    def __init__(self, spans: Sequence[Span]) -> None:
        self._spans = spans

    def set(self, key: str, value: Any) -> None:
        for span in self._spans:
            span.set(key, value)

    def error(self, exc: BaseException | str) -> None:
        for span in self._spans:
            span.error(exc)


def combine(*parts: Telemetry | None) -> Telemetry:
    """One telemetry calling each of ``parts`` (those enabled); ``NO_TELEMETRY`` if none."""
    enabled = [p for p in parts if p is not None and p.enabled]
    if not enabled:
        return NO_TELEMETRY
    if len(enabled) == 1:
        return enabled[0]
    return _Combined(enabled)


def with_headers(request: SendRequest, headers: JsonObject) -> SendRequest:
    """``request`` carrying ``headers`` too (its own win on a clash)."""
    return replace(request, headers={**headers, **(request.headers or {})})


def count_sent(telemetry: Telemetry, requests: Sequence[SendRequest]) -> None:
    """Count ``requests`` per (domain, command type): one hook call per pair."""
    counts: dict[tuple[str, str], int] = {}
    for r in requests:
        key = (r.domain, r.command_type)
        counts[key] = counts.get(key, 0) + 1
    for (domain, command_type), n in counts.items():
        telemetry.commands_sent(domain, command_type, n)
