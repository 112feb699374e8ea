"""``commandbus console``: the operator console in the browser (extra ``[console]``)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import click

from commandbus.cli._common import connect, err_console, option, redact, run, state
from commandbus.errors import ValidationError


@click.command("console")
@option(
    "--port",
    "-p",
    envvar="COMMANDBUS_CONSOLE_PORT",
    type=click.IntRange(0, 65_535),
    default=8080,
    show_default=True,
    help="Port to serve the console on.",
)
@option(
    "--host",
    envvar="COMMANDBUS_CONSOLE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface; put TLS in front of it).",
)
@option(
    "--domain",
    "-d",
    "domains",
    envvar="COMMANDBUS_CONSOLE_DOMAINS",
    multiple=True,
    metavar="DOMAIN",
    help="A domain to show (repeat for several; the --processes managers' domains are added).",
)
@option(
    "--processes",
    envvar="COMMANDBUS_PROCESSES",
    metavar="MODULE:ATTRIBUTE",
    help="Your process managers (as for `router run --app`), to cancel processes.",
)
@option(
    "--user",
    "users",
    envvar="COMMANDBUS_CONSOLE_USERS",
    multiple=True,
    metavar="NAME:PASSWORD[:ROLE]",
    help="A user for HTTP Basic auth; ROLE is operator (default) or viewer (read-only). "
    "Prefer the environment variable (space-separated) to keep passwords out of `ps`.",
)
@option(
    "--token",
    envvar="COMMANDBUS_CONSOLE_TOKEN",
    metavar="TOKEN",
    help="A bearer token with the operator role (also accepted as a Basic password).",
)
@option(
    "--viewer-token",
    envvar="COMMANDBUS_CONSOLE_VIEWER_TOKEN",
    metavar="TOKEN",
    help="A bearer token with the read-only viewer role.",
)
@click.pass_context
def console_cmd(
    ctx: click.Context,
    port: int,
    host: str,
    domains: tuple[str, ...],
    processes: str | None,
    users: tuple[str, ...],
    token: str | None,
    viewer_token: str | None,
) -> None:
    """Serve the operator console: dashboard, troubleshooting queue, commands, processes,
    parked messages. No anonymous access: give --user or --token (or their variables).
    With --topology it serves the cluster holding its --domain(s)."""
    try:
        from commandbus.console import ConsoleUsers, create_app
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the console needs its extra ({exc.name} is missing): "
            "pip install 'commandbus[console]'"
        ) from None
    try:
        console_users = ConsoleUsers.from_specs(users, token, viewer_token)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    # With --topology, the console serves the cluster of its --domain(s): one per cluster.
    url = state(ctx).database_url_of(list(domains))

    async def serve() -> None:
        import uvicorn

        from commandbus.bus import CommandBus

        async with connect(url, max_size=8, topology=state(ctx).topology()) as backend:
            managers: list[Any] = []
            if processes:
                from commandbus.cli.process import build_managers
                from commandbus.cli.router import load_managers_target

                managers = build_managers(
                    load_managers_target(processes), CommandBus(backend), processes
                )
            app = create_app(
                backend, console_users, domains=domains, managers=managers, metrics=_metrics()
            )
            config = uvicorn.Config(app, host=host, port=port, log_level="warning")
            server = uvicorn.Server(config)
            with stopping_on_signals(server):
                err_console().print(
                    f"[bold]commandbus console[/] on http://{host}:{port}/ "
                    f"({redact(url)}). Ctrl-C to stop."
                )
                await server.serve()

    run(serve())


@contextlib.contextmanager
def stopping_on_signals(server: Any) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM stop the uvicorn ``server``, and the
    command then returns (exit status 0, as ``worker run``). uvicorn installs its own
    handlers while it serves, shuts down gracefully, restores these and raises the
    signal again: under SIGTERM's default action that killed the process on the spot,
    skipping the exit hooks that stop an embedded server, and SIGINT ended in "Aborted!"
    (status 1). A signal before uvicorn's handlers are in place stops it as well."""

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _metrics() -> Any | None:
    """Prometheus metrics for the console's /metrics, when the extra is installed."""
    try:
        from commandbus.metrics import PrometheusMetrics

        return PrometheusMetrics()
    except ImportError:
        return None
