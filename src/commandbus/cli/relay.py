"""``commandbus relay run|lag``: the relays between clusters of ``--topology``.

``relay run`` relays the outbox (and the outgoing replies) of one cluster — ``--cluster``
names it by one of its domains — or of every cluster of the topology, until SIGINT or
SIGTERM; as many copies as you like may run (they share the work). ``relay lag`` prints
each cluster's waiting outbox rows, the age of the oldest, and the parked ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import click

from commandbus.cli._common import (
    console,
    err_console,
    json_option,
    new_table,
    option,
    print_json,
    run,
    state,
)
from commandbus.cli._running import observability_options, run_until_signalled
from commandbus.errors import CommandBusError


def _topology(ctx: click.Context) -> Any:
    topology = state(ctx).topology()
    if topology is None:
        raise click.UsageError(
            "relay needs the clusters: pass --topology FILE (or COMMANDBUS_TOPOLOGY), a TOML "
            "file whose [domains] table maps each domain to its cluster's DSN"
        )
    return topology


def _cluster_name(topology: Any, dsn: str) -> str:
    """A cluster by its domains (its DSN may hold a password)."""
    return ",".join(sorted(topology.domains_on(dsn)))


def _clusters(topology: Any, cluster: str | None) -> list[str]:
    if cluster is None:
        return list(topology.clusters)
    if cluster not in topology.domains:
        raise click.BadParameter(
            f"{cluster!r} is no domain of the topology (known: {sorted(topology.domains)})",
            param_hint="--cluster",
        )
    return [topology.dsn_of(cluster)]


@click.group("relay")
def relay_group() -> None:
    """Relay commands and replies between the clusters of --topology."""


class _Stoppable:
    def __init__(self, relay: Any) -> None:
        self.relay = relay

    async def stop(self, timeout: float | None = None) -> None:
        self.relay.stop()


@relay_group.command("run")
@option(
    "--cluster",
    envvar="COMMANDBUS_CLUSTER",
    metavar="DOMAIN",
    help="Relay only the cluster holding this domain (default: every cluster).",
)
@option(
    "--batch-size",
    envvar="COMMANDBUS_BATCH_SIZE",
    type=click.IntRange(1, 10_000),
    default=200,
    show_default=True,
    help="Outbox rows (and replies) relayed per pass.",
)
@option(
    "--poll-interval",
    envvar="COMMANDBUS_POLL_INTERVAL",
    type=click.FloatRange(0.01, 3600),
    default=0.2,
    show_default=True,
    help="Seconds between passes while the outbox is empty.",
)
@observability_options
@click.pass_context
def relay_run_cmd(
    ctx: click.Context,
    cluster: str | None,
    batch_size: int,
    poll_interval: float,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Relay until SIGINT or SIGTERM; an unreachable cluster is retried after a pause.

    \b
    Examples:
      commandbus --topology clusters.toml relay run
      commandbus --topology clusters.toml relay run --cluster reporting
    """
    topology = _topology(ctx)
    sources = _clusters(topology, cluster)
    names = [_cluster_name(topology, dsn) for dsn in sources]
    relayed = run(
        _run_relays(topology, sources, batch_size, poll_interval, metrics_port, metrics_host, names)
    )
    err_console().print(f"relayed {relayed} row(s) and message(s)")


async def _run_relays(
    topology: Any,
    sources: list[str],
    batch_size: int,
    poll_interval: float,
    metrics_port: int | None,
    metrics_host: str,
    names: list[str],
) -> int:
    from commandbus.postgres.clusters import connect_clusters

    async with (
        await connect_clusters(topology, max_size=2 + len(sources)) as clusters,
        contextlib.AsyncExitStack() as stack,
    ):
        relays = [clusters.relay(dsn, batch_size=batch_size) for dsn in sources]
        if metrics_port is not None:
            await _serve_lag(stack, clusters, sources, metrics_port, metrics_host)
        err_console().print(
            f"[bold]commandbus relay[/] (pid {os.getpid()}): cluster(s) "
            f"{'; '.join(names)}. Ctrl-C to stop."
        )
        await run_until_signalled(
            [_Stoppable(r) for r in relays],
            [r.run(poll_interval) for r in relays],
            stop_timeout=5,
            what="the relays",
        )
        return sum(r.relayed for r in relays)


async def _serve_lag(
    stack: contextlib.AsyncExitStack, clusters: Any, sources: list[str], port: int, host: str
) -> None:
    """Serve /metrics with the outbox gauges of ``sources``, sampled every 15 s."""
    from commandbus.errors import MissingExtraError

    try:
        from commandbus.metrics import PrometheusMetrics, serve_metrics

        metrics = PrometheusMetrics()
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None
    served = await stack.enter_async_context(serve_metrics(metrics, port, host=host))
    err_console().print(f"metrics on http://{host}:{served}/metrics")

    async def sample() -> None:
        while True:
            for dsn in sources:
                name = _cluster_name(clusters.topology, dsn)
                try:
                    await metrics.sample_outbox(name, clusters.backends[dsn].outbox)
                except CommandBusError as exc:
                    err_console().print(f"could not sample the outbox of {name}: {exc}")
            await asyncio.sleep(15)

    task = asyncio.create_task(sample())
    stack.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@relay_group.command("lag")
@json_option()
@click.pass_context
def relay_lag_cmd(ctx: click.Context, as_json: bool) -> None:
    """Each cluster's outbox: rows waiting for a relay, the oldest one's age, and rows
    parked because their cluster refused them."""
    topology = _topology(ctx)

    async def fetch() -> dict[str, Any]:
        from commandbus.postgres.clusters import connect_clusters

        async with await connect_clusters(topology, max_size=1) as clusters:
            return await clusters.lag()

    lags = run(fetch())
    rows = [
        {
            "cluster": _cluster_name(topology, dsn),
            "pending": lag.pending,
            "oldest_seconds": round(lag.oldest_seconds, 3),
            "parked": lag.parked,
        }
        for dsn, lag in lags.items()
    ]
    if as_json:
        print_json(rows)
        return
    table = new_table("Outbox lag per cluster")
    for header in ("cluster (domains)", "pending", "oldest (s)", "parked"):
        table.add_column(header, justify="left" if header.startswith("cluster") else "right")
    for row in rows:
        table.add_row(
            row["cluster"],
            str(row["pending"]),
            f"{row['oldest_seconds']:.1f}",
            str(row["parked"]),
        )
    console().print(table)
