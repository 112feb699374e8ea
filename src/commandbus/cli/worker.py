"""``commandbus worker run``: process commands with the handlers of your application."""

from __future__ import annotations

import os
import time
from typing import Any

import click
from rich.table import Table

from commandbus.cli._common import (
    connect,
    domain_option,
    err_console,
    import_target,
    new_table,
    option,
    redact,
    run,
    state,
)
from commandbus.cli._progress import live_view, progress_console
from commandbus.cli._running import (
    consumer_options,
    observability_options,
    observed,
    refuse_stale_schema,
    run_until_signalled,
    tracing_option,
)
from commandbus.handler import HandlerRegistry


@click.group("worker")
def worker_group() -> None:
    """Run workers that claim commands and execute their handlers."""


def _parse_backoff(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        delays = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give seconds separated by commas, e.g. '10,60,300'"
        ) from None
    if not delays or any(d < 0 for d in delays):
        raise click.BadParameter(f"{value!r}: give one or more delays >= 0 seconds")
    return delays


@worker_group.command("run")
@option(
    "--app",
    "-a",
    envvar="COMMANDBUS_APP",
    required=True,
    metavar="MODULE:ATTRIBUTE",
    help="Where your HandlerRegistry is, e.g. 'myapp.handlers:registry' (a function "
    "returning one also works). The current directory is importable.",
)
@domain_option(required=False)
@option(
    "--concurrency",
    "-c",
    envvar="COMMANDBUS_CONCURRENCY",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Handlers running at once, per domain.",
)
@option(
    "--visibility-timeout",
    envvar="COMMANDBUS_VISIBILITY_TIMEOUT",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a claimed command stays invisible to other workers.",
)
@option(
    "--batch-size",
    envvar="COMMANDBUS_BATCH_SIZE",
    type=click.IntRange(1, 1_000),
    default=50,
    show_default=True,
    help="Commands claimed per round trip.",
)
@option(
    "--backoff",
    envvar="COMMANDBUS_BACKOFF",
    callback=_parse_backoff,
    metavar="SECONDS,…",
    help="Delays between retries, e.g. '10,60,300' (the last one repeats).",
)
@option(
    "--heartbeat/--no-heartbeat",
    envvar="COMMANDBUS_HEARTBEAT",
    default=True,
    show_default=True,
    help="Extend the lease of handlers still running, every third of the visibility timeout.",
)
@consumer_options
@observability_options
@tracing_option
@click.pass_context
def worker_run_cmd(
    ctx: click.Context,
    app: str,
    domain: str | None,
    concurrency: int,
    visibility_timeout: float,
    batch_size: int,
    poll_interval: float,
    backoff: tuple[float, ...] | None,
    heartbeat: bool,
    notify: bool,
    verify_schema: bool,
    progress: bool | None,
    stop_timeout: float,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    tracing: bool = False,
) -> None:
    """Process the commands of a domain until SIGINT or SIGTERM (then stop gracefully).

    Without --domain, every domain the registry has handlers for is processed.
    """
    registry = load_registry(app)
    if domain is not None:
        domains = [domain]
    else:
        domains = sorted(registry.domains())
        if not domains:
            raise click.ClickException(f"{app} has no handlers registered")
    unknown = [d for d in domains if d not in registry.domains()]
    if unknown:
        raise click.ClickException(
            f"{app} has no handler for domain {unknown[0]!r}; it handles "
            f"{sorted(registry.domains()) or 'nothing'}"
        )
    url = state(ctx).database_url_of(domains)
    err = err_console()
    stats = run(
        _run_workers(
            url,
            registry,
            domains,
            concurrency=concurrency,
            visibility_timeout=visibility_timeout,
            batch_size=batch_size,
            poll_interval=poll_interval,
            backoff=backoff,
            heartbeat=heartbeat,
            notify=notify,
            verify_schema=verify_schema,
            stop_timeout=stop_timeout,
            progress=progress,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            tracing=tracing,
            topology=state(ctx).topology(),
            announce=lambda: err.print(
                f"[bold]commandbus worker[/] (pid {os.getpid()}) on {redact(url)}: "
                f"domain(s) {', '.join(domains)}, concurrency {concurrency}, "
                f"visibility timeout {visibility_timeout:g}s. Ctrl-C to stop."
            ),
        )
    )
    print_worker_stats(stats)


def worker_stats(workers: Any, elapsed: float) -> dict[str, tuple[str, ...]]:
    """Each worker's counters, as the table on exit shows them."""
    return {
        w.domain: (
            str(w.stats.claimed),
            str(w.stats.completed),
            str(w.stats.retried),
            str(w.stats.to_troubleshooting),
            str(w.stats.business_failures),
            f"{elapsed:.1f}s",
        )
        for w in workers
    }


def worker_stats_table(stats: dict[str, tuple[str, ...]], title: str = "Worker stopped") -> Table:
    table = new_table(title)
    for header in ("domain", "claimed", "completed", "retried", "to TSQ", "failed", "elapsed"):
        table.add_column(header, justify="right" if header != "domain" else "left")
    for name, values in stats.items():
        table.add_row(name, *values)
    return table


def print_worker_stats(stats: dict[str, tuple[str, ...]]) -> None:
    err_console().print(worker_stats_table(stats))


def load_registry(app: str) -> HandlerRegistry:
    """Import ``module:attribute`` and return the ``HandlerRegistry`` it names."""
    target = import_target(app, "myapp.handlers:registry")
    if _is_process_managers(target):
        raise click.BadParameter(
            f"{app!r} names process managers, not a HandlerRegistry: run them with "
            f"`commandbus router run --app {app}`",
            param_hint="--app",
        )
    is_factory = callable(target) and not isinstance(target, type)
    if not isinstance(target, HandlerRegistry) and is_factory:
        target = target()
    if not isinstance(target, HandlerRegistry):
        raise click.BadParameter(
            f"{app!r} is a {type(target).__name__}, not a commandbus HandlerRegistry",
            param_hint="--app",
        )
    return target


def _is_process_managers(target: Any) -> bool:
    from commandbus.process.base import BaseProcessManager

    def one(item: Any) -> bool:
        return isinstance(item, BaseProcessManager) or (
            isinstance(item, type) and issubclass(item, BaseProcessManager)
        )

    if isinstance(target, dict):
        return bool(target) and all(one(v) for v in target.values())
    if isinstance(target, list | tuple):
        return bool(target) and all(one(v) for v in target)
    return one(target)


async def _run_workers(
    url: str,
    registry: HandlerRegistry,
    domains: list[str],
    *,
    concurrency: int,
    visibility_timeout: float,
    batch_size: int,
    poll_interval: float,
    backoff: tuple[float, ...] | None,
    heartbeat: bool,
    notify: bool,
    verify_schema: bool,
    stop_timeout: float,
    announce: Any,
    progress: bool | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    tracing: bool = False,
    topology: Any = None,
) -> dict[str, tuple[str, ...]]:
    from commandbus.policies import RetryPolicy
    from commandbus.worker import Worker

    retry_policy = RetryPolicy(backoff_schedule=backoff) if backoff else None
    # Transactional handlers each hold a connection; claims, settlements and LISTEN too.
    pool_size = len(domains) * (concurrency + 3)
    async with (
        connect(url, max_size=pool_size, topology=topology) as backend,
        observed(metrics_port, metrics_host, backend, domains, tracing) as telemetry,
    ):
        if verify_schema:
            await refuse_stale_schema(backend)
        workers = [
            Worker(
                backend,
                d,
                registry,
                visibility_timeout=visibility_timeout,
                retry_policy=retry_policy,
                batch_size=batch_size,
                heartbeat=heartbeat,
                telemetry=telemetry,
            )
            for d in domains
        ]
        announce()
        started = time.monotonic()

        def live() -> Table:
            elapsed = time.monotonic() - started
            return worker_stats_table(worker_stats(workers, elapsed), "Worker running")

        async with live_view(progress_console(progress), live):
            elapsed = await run_until_signalled(
                workers,
                [
                    w.run(concurrency=concurrency, poll_interval=poll_interval, use_notify=notify)
                    for w in workers
                ],
                stop_timeout=stop_timeout,
                what="running handlers",
            )
        return worker_stats(workers, elapsed)
