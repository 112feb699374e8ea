"""Prometheus metrics (extra ``[metrics]``: ``pip install 'commandbus[metrics]'``).

``PrometheusMetrics`` is a ``Telemetry``: give it to ``CommandBus``, ``Worker`` and
``ProcessReplyRouter`` (``telemetry=metrics``) and it counts, per domain and command type,
what they do — sent, completed, failed, retried, moved to the TSQ — and observes handler
durations, send-to-completion latency and process step durations. The gauges (queue
depth, in flight, oldest message age, TSQ size, processes by status) are read from the
database by ``sample(backend, domains)``, which ``commandbus worker run --metrics-port``,
``router run --metrics-port`` and the console call before each scrape or on a timer.

Nothing here runs unless you create it: without it the library never imports
``prometheus_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from commandbus.clusters.ports import OutboxStore, RoutesSends
from commandbus.errors import MissingExtraError
from commandbus.ports import Backend
from commandbus.telemetry import Telemetry
from commandbus.validation import command_queue, process_reply_queue

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusMetrics", "cluster_label", "serve_metrics"]

logger = logging.getLogger(__name__)

#: Seconds: from a fast in-memory handler to a slow external call.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Seconds from send to completion, or a step's send to its reply: retries and operators
#: make these long.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)

#: Settled status -> the counter it increments.
_SETTLED = {
    "COMPLETED": "completed",
    "PENDING": "retried",
    "FAILED": "failed",
    "IN_TROUBLESHOOTING_QUEUE": "moved_to_tsq",
}


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError(
            "Prometheus metrics need prometheus_client: pip install 'commandbus[metrics]'"
        ) from exc
    return prometheus_client


class PrometheusMetrics(Telemetry):
    """The library's metrics in ``registry`` (default: a new one; pass
    ``prometheus_client.REGISTRY`` to add them to your application's)."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prometheus = _prometheus()
        self.registry: CollectorRegistry = (
            registry if registry is not None else prometheus.CollectorRegistry()
        )
        counter, histogram, gauge = prometheus.Counter, prometheus.Histogram, prometheus.Gauge
        per_type = ("domain", "command_type")
        r = self.registry
        self.sent = counter("commandbus_commands_sent", "Commands sent.", per_type, registry=r)
        self.completed = counter(
            "commandbus_commands_completed", "Commands completed.", per_type, registry=r
        )
        self.failed = counter(
            "commandbus_commands_failed",
            "Commands failed on a business rule.",
            per_type,
            registry=r,
        )
        self.retried = counter(
            "commandbus_commands_retried",
            "Failed attempts scheduled for a retry.",
            per_type,
            registry=r,
        )
        self.moved_to_tsq = counter(
            "commandbus_commands_moved_to_tsq",
            "Commands moved to the troubleshooting queue.",
            per_type,
            registry=r,
        )
        self.handler_duration = histogram(
            "commandbus_handler_duration_seconds",
            "How long handlers ran.",
            per_type,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency = histogram(
            "commandbus_command_latency_seconds",
            "From send to completion.",
            per_type,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.step_duration = histogram(
            "commandbus_process_step_duration_seconds",
            "From a process step's command to the reply the process acted on.",
            ("domain", "process_type", "step", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.process_transitions = counter(
            "commandbus_process_transitions",
            "Processes written, by the status they were written with.",
            ("domain", "process_type", "status"),
            registry=r,
        )
        self.queue_depth = gauge(
            "commandbus_queue_depth", "Messages in a queue.", ("queue",), registry=r
        )
        self.queue_in_flight = gauge(
            "commandbus_queue_in_flight",
            "Invisible messages read before: leased now, or a retry waiting out its backoff.",
            ("queue",),
            registry=r,
        )
        self.oldest_age = gauge(
            "commandbus_queue_oldest_message_age_seconds",
            "How long the oldest message of a queue has waited.",
            ("queue",),
            registry=r,
        )
        self.tsq_size = gauge(
            "commandbus_troubleshooting_queue_size",
            "Commands waiting for an operator.",
            ("domain",),
            registry=r,
        )
        self.processes = gauge(
            "commandbus_processes", "Processes by status.", ("domain", "status"), registry=r
        )
        self.outbox_pending = gauge(
            "commandbus_outbox_pending",
            "Outbox rows of a cluster waiting for its relay (commands and withdrawals for "
            "other clusters' domains).",
            ("cluster",),
            registry=r,
        )
        self.outbox_parked = gauge(
            "commandbus_outbox_parked",
            "Outbox rows of a cluster parked because their cluster refused them.",
            ("cluster",),
            registry=r,
        )
        self.outbox_oldest_age = gauge(
            "commandbus_outbox_oldest_age_seconds",
            "How long the oldest outbox row of a cluster has waited: the relay's lag.",
            ("cluster",),
            registry=r,
        )
        # The statuses sampled per domain so far: one that emptied must read 0 again.
        self._statuses: dict[str, set[str]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    # -- the hooks -----------------------------------------------------------------------

    # The labelled children are cached: ``labels()`` costs about a microsecond, and these
    # hooks run for every command.

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def commands_sent(self, domain: str, command_type: str, count: int = 1) -> None:
        self._child(self.sent, domain, command_type).inc(count)

    def command_handled(self, domain: str, command_type: str, seconds: float) -> None:
        self._child(self.handler_duration, domain, command_type).observe(seconds)

    def command_settled(
        self, domain: str, command_type: str, status: str, latency_seconds: float | None
    ) -> None:
        name = _SETTLED.get(status)
        if name is None:
            return
        self._child(getattr(self, name), domain, command_type).inc()
        if status == "COMPLETED" and latency_seconds is not None:
            self._child(self.latency, domain, command_type).observe(max(latency_seconds, 0.0))

    def process_step_finished(
        self, domain: str, process_type: str, step: str, outcome: str, seconds: float
    ) -> None:
        self._child(self.step_duration, domain, process_type, step, outcome).observe(seconds)

    def process_changed(self, domain: str, process_type: str, status: str) -> None:
        self._child(self.process_transitions, domain, process_type, status).inc()

    # -- gauges, read from the database ----------------------------------------------------

    async def sample(self, backend: Backend, domains: Iterable[str]) -> None:
        """Set the gauges from ``backend`` for ``domains`` (their command and reply
        queues, TSQ size, processes by status)."""
        now = backend.clock.now()
        for domain in sorted(set(domains)):
            for queue in (command_queue(domain), process_reply_queue(domain)):
                stats = await backend.queue.stats(queue)
                self.queue_depth.labels(queue).set(stats.depth)
                self.queue_in_flight.labels(queue).set(stats.in_flight)
                self.oldest_age.labels(queue).set(stats.oldest_age_seconds(now))
            self.tsq_size.labels(domain).set(
                await backend.commands.count_troubleshooting(domain, None)
            )
            processes = getattr(backend, "processes", None)
            if processes is not None:
                counts = {s.value: n for s, n in (await processes.count_by_status(domain)).items()}
                seen = self._statuses.setdefault(domain, set())
                seen.update(counts)
                for status in seen:
                    self.processes.labels(domain, status).set(counts.get(status, 0))

        routing = backend.commands
        outbox: OutboxStore | None = getattr(backend, "outbox", None)
        if isinstance(routing, RoutesSends) and outbox is not None:
            # One cluster of a topology: how far behind its relay is.
            await self.sample_outbox(cluster_label(routing), outbox)

    async def sample_outbox(self, cluster: str, outbox: OutboxStore) -> None:
        """Set the outbox gauges of ``cluster`` (a label: its domains, comma-separated,
        never its DSN, which may hold a password) from its ``outbox``."""
        lag = await outbox.lag()
        self.outbox_pending.labels(cluster).set(lag.pending)
        self.outbox_parked.labels(cluster).set(lag.parked)
        self.outbox_oldest_age.labels(cluster).set(lag.oldest_seconds)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what ``/metrics`` answers)."""
        body: bytes = _prometheus().generate_latest(self.registry)
        return body


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: PrometheusMetrics,
    port: int,
    *,
    backend: Backend | None = None,
    domains: Iterable[str] = (),
    host: str = "127.0.0.1",
    sample_every: float = 15.0,
) -> AsyncIterator[int]:
    """Serve ``/metrics`` on ``host:port`` while the block runs (port 0: any free one;
    the port is what the block receives). With ``backend``, the gauges are sampled every
    ``sample_every`` seconds; a failed sample is logged and retried at the next tick."""
    prometheus = _prometheus()
    server, thread = prometheus.start_http_server(port, addr=host, registry=metrics.registry)
    domains = list(domains)
    sampler: asyncio.Task[None] | None = None
    if backend is not None:
        sampler = asyncio.create_task(_sample_forever(metrics, backend, domains, sample_every))
    try:
        yield int(server.server_port)
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def cluster_label(routing: RoutesSends) -> str:
    """The ``cluster`` label of a topology's cluster: its domains, comma-separated."""
    return ",".join(sorted(routing.topology.domains_on(routing.dsn)))


async def _sample_forever(
    metrics: PrometheusMetrics, backend: Backend, domains: list[str], every: float
) -> None:
    while True:
        try:
            await metrics.sample(backend, domains)
        except Exception as exc:
            logger.warning("could not sample the queue and process gauges: %s", exc)
        await asyncio.sleep(every)
