"""Running consumers (workers, routers) until SIGINT/SIGTERM, the same way for both.

The first signal asks every consumer to stop after the work in progress, waiting up to
``stop_timeout`` seconds; a second one stops waiting (a worker's running handlers are
cancelled, their commands are redelivered after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import click

from commandbus.cli._common import err_console, option
from commandbus.telemetry import Telemetry, combine

F = TypeVar("F", bound=Callable[..., Any])


class Stoppable(Protocol):
    def stop(self, timeout: float | None = None) -> Awaitable[None]: ...


async def run_until_signalled(
    consumers: Sequence[Stoppable],
    runs: Sequence[Awaitable[Any]],
    *,
    stop_timeout: float,
    what: str,
) -> float:
    """Await ``runs`` (each consumer's ``run()``) with the signal handlers installed;
    returns the seconds they ran."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Future[Any]] = []

    def request_stop(signame: str) -> None:
        if stopping:
            err_console().print(f"{signame} again: not waiting for {what} any longer")
            stopping.extend(asyncio.ensure_future(c.stop(timeout=0)) for c in consumers)
            return
        err_console().print(
            f"{signame}: stopping; letting {what} finish "
            f"(up to {stop_timeout:g}s, signal again to stop at once)"
        )
        stopping.extend(asyncio.ensure_future(c.stop(timeout=stop_timeout)) for c in consumers)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # e.g. Windows
            loop.add_signal_handler(sig, request_stop, sig.name)
            installed.append(sig)
    started = time.monotonic()
    try:
        await asyncio.gather(*runs)
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return time.monotonic() - started


async def refuse_stale_schema(backend: Any) -> None:
    """Stop with a clear message when the database schema is missing or not current; warn
    about server settings that slow the queues down over time (autovacuum off)."""
    from commandbus.postgres.schema import server_warnings
    from commandbus.postgres.schema import verify_schema as problems_of

    problems = await problems_of(backend.pool)
    if problems:
        raise click.ClickException(
            "the database schema is not current: "
            + "; ".join(problems)
            + ". Run `commandbus schema apply` (or pass --no-verify-schema)"
        )
    for warning in await server_warnings(backend.pool):
        err_console().print(f"[yellow]warning:[/] {warning}", highlight=False)


def consumer_options(func: F) -> F:
    """The options every consumer run takes (``worker run``, ``router run``, ``run``):
    ``--poll-interval``, ``--notify/--no-notify``, ``--verify-schema``, ``--progress``
    and ``--stop-timeout``."""
    for decorate in reversed(
        [
            option(
                "--poll-interval",
                envvar="COMMANDBUS_POLL_INTERVAL",
                type=click.FloatRange(0, 3600, min_open=True),
                default=1.0,
                show_default=True,
                help="Seconds between polls when idle (NOTIFY wakes sooner).",
            ),
            option(
                "--notify/--no-notify",
                envvar="COMMANDBUS_NOTIFY",
                default=True,
                show_default=True,
                help="Wake up on LISTEN/NOTIFY as well as by polling.",
            ),
            option(
                "--verify-schema/--no-verify-schema",
                envvar="COMMANDBUS_VERIFY_SCHEMA",
                default=True,
                show_default=True,
                help="Refuse to start when the database schema is missing or not current.",
            ),
            option(
                "--progress/--no-progress",
                envvar="COMMANDBUS_PROGRESS",
                default=None,
                help="Live counters (default: when standard error is a terminal).",
            ),
            option(
                "--stop-timeout",
                envvar="COMMANDBUS_STOP_TIMEOUT",
                type=click.FloatRange(0),
                default=30.0,
                show_default=True,
                help="On SIGINT/SIGTERM, seconds to let the work in progress finish "
                "(running handlers, batches).",
            ),
        ]
    ):
        func = decorate(func)
    return func


def observability_options(func: F) -> F:
    """``--metrics-port`` and ``--metrics-host``: serve Prometheus metrics (``worker run``,
    ``router run``, ``run``)."""
    for decorate in reversed(
        [
            option(
                "--metrics-port",
                envvar="COMMANDBUS_METRICS_PORT",
                type=click.IntRange(0, 65_535),
                default=None,
                metavar="PORT",
                help="Serve Prometheus metrics on http://HOST:PORT/metrics "
                "(needs the [metrics] extra). Off by default.",
            ),
            option(
                "--metrics-host",
                envvar="COMMANDBUS_METRICS_HOST",
                default="127.0.0.1",
                show_default=True,
                metavar="HOST",
                help="Address the metrics endpoint listens on (0.0.0.0: every interface).",
            ),
        ]
    ):
        func = decorate(func)
    return func


def tracing_option(func: F) -> F:
    """``--tracing``: OpenTelemetry spans (``worker run``, ``router run``, ``run``)."""
    return option(
        "--tracing/--no-tracing",
        envvar="COMMANDBUS_TRACING",
        default=False,
        show_default=True,
        help="Record OpenTelemetry spans through the global tracer provider (needs the "
        "[otel] extra and an SDK): set it up in the --app module, or run the command "
        "under opentelemetry-instrument. Off by default.",
    )(func)


@contextlib.asynccontextmanager
async def observed(
    metrics_port: int | None,
    metrics_host: str,
    backend: Any,
    domains: Iterable[str],
    tracing: bool = False,
) -> AsyncIterator[Telemetry]:
    """The telemetry a consumer run uses: none; Prometheus metrics served on
    ``metrics_port`` while the block runs (the gauges sampled from ``backend``); traces
    through the global tracer provider (``tracing``); or both."""
    from commandbus.errors import MissingExtraError

    traces: Telemetry | None = None
    if tracing:
        try:
            from commandbus.tracing import OpenTelemetryTracing

            traces = OpenTelemetryTracing()
        except MissingExtraError as exc:
            raise click.ClickException(str(exc)) from None
    if metrics_port is None:
        yield combine(traces)
        return
    try:
        from commandbus.metrics import PrometheusMetrics, serve_metrics

        metrics = PrometheusMetrics()
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None
    async with serve_metrics(
        metrics, metrics_port, backend=backend, domains=domains, host=metrics_host
    ) as port:
        err_console().print(f"metrics on http://{metrics_host}:{port}/metrics")
        yield combine(metrics, traces)
