"""``commandbus router run`` and ``commandbus run``: drive processes from their replies.

``router run --app myapp.processes:managers`` is the process twin of ``worker run``: one
``ProcessReplyRouter`` per reply queue of the managers, until SIGINT/SIGTERM, with its
counters printed on exit. ``run --handlers … --processes …`` runs the workers and the
routers an application needs together, in one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Group
from rich.table import Table

from commandbus.cli._common import (
    connect,
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
from commandbus.cli._topology import check_on_cluster
from commandbus.cli.process import build_managers
from commandbus.handler import HandlerRegistry

F = TypeVar("F", bound=Callable[..., Any])


def load_managers_target(app: str) -> Any:
    """Import what ``--app`` names; a HandlerRegistry gets a pointer to ``worker run``."""
    target = import_target(app, "myapp.processes:managers")
    if isinstance(target, HandlerRegistry):
        raise click.BadParameter(
            f"{app!r} names a HandlerRegistry, not process managers: run its handlers with "
            f"`commandbus worker run --app {app}`",
            param_hint="--app",
        )
    return target


@click.group("router")
def router_group() -> None:
    """Run routers that drive process managers from their reply queues."""


@router_group.command("run")
@option(
    "--app",
    "-a",
    envvar="COMMANDBUS_APP",
    required=True,
    metavar="MODULE:ATTRIBUTE",
    help="Where your process managers are, e.g. 'myapp.processes:managers': a list or "
    "{process_type: manager} dict of managers or manager classes, or a function taking a "
    "CommandBus and returning one. The current directory is importable.",
)
@option(
    "--concurrency",
    "-c",
    envvar="COMMANDBUS_CONCURRENCY",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Batches handled at once per reply queue (each its own transaction).",
)
@option(
    "--batch-size",
    envvar="COMMANDBUS_BATCH_SIZE",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Reply-queue messages read per batch.",
)
@option(
    "--max-reply-attempts",
    envvar="COMMANDBUS_MAX_REPLY_ATTEMPTS",
    type=click.IntRange(1, 1_000),
    default=5,
    show_default=True,
    help="Deliveries of a message that keeps failing before it is parked.",
)
@option(
    "--domain",
    "-d",
    envvar="COMMANDBUS_DOMAIN",
    default=None,
    help="With --topology: run on the cluster of this domain (default: --database-url).",
)
@consumer_options
@observability_options
@tracing_option
@click.pass_context
def router_run_cmd(
    ctx: click.Context,
    app: str,
    concurrency: int,
    batch_size: int,
    max_reply_attempts: int,
    poll_interval: float,
    notify: bool,
    verify_schema: bool,
    progress: bool | None,
    stop_timeout: float,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    tracing: bool = False,
    domain: str | None = None,
) -> None:
    """Drive the processes of --app from their reply queues until SIGINT or SIGTERM."""
    target = load_managers_target(app)
    cli = state(ctx)
    url = cli.database_url_for(domain)

    async def serve() -> list[tuple[str, ...]]:
        from commandbus.bus import CommandBus

        async with connect(
            url, max_size=2 * concurrency + 4, topology=state(ctx).topology()
        ) as backend:
            if verify_schema:
                await refuse_stale_schema(backend)
            managers = build_managers(target, CommandBus(backend), app)
            domains = {m.domain for m in managers}
            check_on_cluster(cli.topology(), cli.topology_file, sorted(domains), url)
            async with observed(metrics_port, metrics_host, backend, domains, tracing) as telemetry:
                routers = make_routers(
                    managers,
                    backend,
                    batch_size=batch_size,
                    max_reply_attempts=max_reply_attempts,
                    telemetry=telemetry,
                )
                return await drive(routers)

    async def drive(routers: list[Any]) -> list[tuple[str, ...]]:
        err_console().print(
            f"[bold]commandbus router[/] (pid {os.getpid()}) on {redact(url)}: "
            f"reply queue(s) {', '.join(r.reply_queue for r in routers)}, concurrency "
            f"{concurrency}. Ctrl-C to stop."
        )
        runs = [r.run(poll_interval, concurrency=concurrency, use_notify=notify) for r in routers]
        started = time.monotonic()

        def live() -> Table:
            rows = [router_stats(r, time.monotonic() - started) for r in routers]
            return router_stats_table(rows, "Router running")

        async with live_view(progress_console(progress), live):
            elapsed = await run_until_signalled(
                routers, runs, stop_timeout=stop_timeout, what="batches in progress"
            )
        return [router_stats(r, elapsed) for r in routers]

    print_router_stats(run(serve()))


def make_routers(managers: list[Any], backend: Any, **options: Any) -> list[Any]:
    """One router per reply queue the managers use."""
    from commandbus.process.router import ProcessReplyRouter

    by_queue: dict[str, list[Any]] = {}
    for manager in managers:
        by_queue.setdefault(manager.reply_queue, []).append(manager)
    return [
        ProcessReplyRouter(backend, managers=group, reply_queue=queue, **options)
        for queue, group in sorted(by_queue.items())
    ]


def router_stats(router: Any, elapsed: float) -> tuple[str, ...]:
    s = router.stats
    return (
        router.reply_queue,
        str(s.batches),
        str(s.applied),
        str(s.ignored),
        str(s.parked),
        str(s.retried),
        f"{elapsed:.1f}s",
    )


def router_stats_table(rows: list[tuple[str, ...]], title: str = "Router stopped") -> Table:
    table = new_table(title)
    for header in ("reply queue", "batches", "applied", "ignored", "parked", "retried", "elapsed"):
        table.add_column(header, justify="left" if header == "reply queue" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_router_stats(rows: list[tuple[str, ...]]) -> None:
    err_console().print(router_stats_table(rows))


@click.command("run")
@option(
    "--handlers",
    envvar="COMMANDBUS_HANDLERS",
    required=True,
    metavar="MODULE:ATTRIBUTE",
    help="Your HandlerRegistry (as for `worker run --app`); every domain it handles is run.",
)
@option(
    "--processes",
    envvar="COMMANDBUS_PROCESSES",
    metavar="MODULE:ATTRIBUTE",
    help="Your process managers (as for `router run --app`); omit when there are none.",
)
@option(
    "--concurrency",
    "-c",
    envvar="COMMANDBUS_CONCURRENCY",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Handlers running at once, per domain.",
)
@consumer_options
@observability_options
@tracing_option
@click.pass_context
def run_cmd(
    ctx: click.Context,
    handlers: str,
    processes: str | None,
    concurrency: int,
    poll_interval: float,
    notify: bool,
    verify_schema: bool,
    progress: bool | None,
    stop_timeout: float,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    tracing: bool = False,
) -> None:
    """Run the workers and the routers of an application together, until SIGINT or
    SIGTERM: one worker per domain of --handlers, one router per reply queue of
    --processes."""
    from commandbus.cli.worker import (
        load_registry,
        print_worker_stats,
        worker_stats,
        worker_stats_table,
    )

    registry = load_registry(handlers)
    domains = sorted(registry.domains())
    if not domains:
        raise click.ClickException(f"{handlers} has no handlers registered")
    target = load_managers_target(processes) if processes else None
    cli = state(ctx)
    url = cli.database_url_of(domains)

    async def serve() -> tuple[dict[str, tuple[str, ...]], list[tuple[str, ...]]]:
        from commandbus.bus import CommandBus
        from commandbus.worker import Worker

        async with (
            connect(
                url,
                max_size=len(domains) * (concurrency + 3) + 6,
                topology=state(ctx).topology(),
            ) as backend,
            observed(metrics_port, metrics_host, backend, domains, tracing) as telemetry,
        ):
            if verify_schema:
                await refuse_stale_schema(backend)
            workers = [Worker(backend, d, registry, telemetry=telemetry) for d in domains]
            bus = CommandBus(backend, telemetry=telemetry)
            managers = build_managers(target, bus, processes or "") if target else []
            check_on_cluster(
                cli.topology(), cli.topology_file, sorted({m.domain for m in managers}), url
            )
            routers = make_routers(managers, backend)
            queues = ", ".join(r.reply_queue for r in routers) or "none"
            err_console().print(
                f"[bold]commandbus run[/] (pid {os.getpid()}) on {redact(url)}: workers for "
                f"{', '.join(domains)}, routers for {queues}. Ctrl-C to stop."
            )
            runs = [
                *(
                    w.run(concurrency=concurrency, poll_interval=poll_interval, use_notify=notify)
                    for w in workers
                ),
                *(r.run(poll_interval, use_notify=notify) for r in routers),
            ]
            started = time.monotonic()

            def live() -> Group:
                elapsed = time.monotonic() - started
                tables = [worker_stats_table(worker_stats(workers, elapsed), "Worker running")]
                if routers:
                    rows = [router_stats(r, elapsed) for r in routers]
                    tables.append(router_stats_table(rows, "Router running"))
                return Group(*tables)

            async with live_view(progress_console(progress), live):
                elapsed = await run_until_signalled(
                    [*workers, *routers], runs, stop_timeout=stop_timeout, what="work in progress"
                )
            return worker_stats(workers, elapsed), [router_stats(r, elapsed) for r in routers]

    workers, rows = run(serve())
    print_worker_stats(workers)
    if rows:
        print_router_stats(rows)
