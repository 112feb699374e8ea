"""A tour of commandbus in the terminal: ``python -m commandbus.demo`` (or ``make demo``).

On the embedded PostgreSQL (or ``DATABASE_URL``) it applies the schema, sends a few hundred
commands of three types to a fresh demo domain, and runs a worker with a live progress
bar. Among the commands:

- one fails transiently (a gateway timeout) and succeeds on its retry;
- one raises ``PermanentCommandError`` and lands in the troubleshooting queue; an operator
  "fixes the data" and retries it, and then it succeeds;
- one breaks a business rule and ends FAILED (with a FAILED reply).

It ends with a summary (counts by status, replies, throughput) and the audit trails of
those three commands. Then, if the process manager's demo is installed, it runs too
(see ``PROCESS_DEMOS``).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from commandbus.bus import CommandBus
from commandbus.errors import BusinessRuleException, PermanentCommandError, TransientCommandError
from commandbus.handler import HandlerContext, HandlerRegistry
from commandbus.models import (
    AuditEvent,
    Command,
    CommandStatus,
    JsonObject,
    ReplyOutcome,
    SendRequest,
)
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.worker import Worker

#: Modules that may provide ``async def run_process_demo(backend, console) -> None`` (a
#: ``PostgresBackend`` with the schema applied, and the rich ``Console`` to print to); each
#: one that imports runs after the command demo, in this order: the StatementReport process
#: demo (reply-driven), then the pull-request previews demo (event-driven).
PROCESS_DEMOS: tuple[str, ...] = (
    "examples.statement_report.demo",
    "examples.pull_request.demo",
)

COMMAND_TYPES = ("ChargeCard", "ReserveStock", "SendReceipt")


@dataclass
class DemoOutcome:
    """What the command demo did (returned for tests and for the process demo)."""

    domain: str
    sent: int
    statuses: dict[str, int]
    replies: dict[str, int]
    send_seconds: float
    process_seconds: float
    interesting: dict[str, UUID]
    trails: dict[str, list[AuditEvent]] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.sent / self.process_seconds if self.process_seconds else 0.0


@dataclass
class _World:
    """The demo's "external systems": whether the operator fixed the bad receipt."""

    fixed: set[UUID] = field(default_factory=set)
    slow: bool = True


def build_registry(domain: str, world: _World) -> HandlerRegistry:
    registry = HandlerRegistry()

    async def io(ms_low: int, ms_high: int) -> None:
        if world.slow:
            await asyncio.sleep(random.uniform(ms_low, ms_high) / 1000)

    @registry.handler(domain, "ChargeCard")
    async def charge_card(command: Command, ctx: HandlerContext) -> JsonObject:
        await io(20, 160)
        if command.data.get("simulate") == "gateway_timeout" and ctx.attempt == 1:
            raise TransientCommandError("GATEWAY_TIMEOUT", "payment gateway did not answer in 5s")
        return {"charge_id": f"ch_{command.data['order']:05d}", "amount": command.data["amount"]}

    @registry.handler(domain, "ReserveStock")
    async def reserve_stock(command: Command, ctx: HandlerContext) -> JsonObject:
        await io(20, 160)
        if command.data.get("simulate") == "out_of_stock":
            raise BusinessRuleException(
                "OUT_OF_STOCK",
                f"only 0 left of {command.data['sku']}",
                {"sku": command.data["sku"]},
            )
        return {"reserved": command.data["qty"], "sku": command.data["sku"]}

    @registry.handler(domain, "SendReceipt")
    async def send_receipt(command: Command, ctx: HandlerContext) -> JsonObject:
        await io(20, 160)
        if command.data.get("simulate") == "bad_address" and command.command_id not in world.fixed:
            raise PermanentCommandError(
                "INVALID_EMAIL", f"mail server rejected {command.data['email']!r}"
            )
        return {"sent_to": command.data["email"]}

    return registry


def _requests(domain: str, count: int, reply_to: str) -> tuple[list[SendRequest], dict[str, UUID]]:
    rng = random.Random(7)
    requests: list[SendRequest] = []
    for n in range(count):
        kind = COMMAND_TYPES[n % len(COMMAND_TYPES)]
        data: JsonObject
        if kind == "ChargeCard":
            data = {"order": n, "amount": rng.randint(5, 500)}
        elif kind == "ReserveStock":
            data = {"order": n, "sku": f"SKU-{rng.randint(1, 99)}", "qty": rng.randint(1, 5)}
        else:
            data = {"order": n, "email": f"customer{n}@example.com"}
        requests.append(SendRequest(domain, kind, uuid4(), data, reply_to=reply_to))
    # The three interesting ones go early in the queue, so their story unfolds while the
    # rest is processed.
    special = {
        "transient failure, then success": (
            3,
            "ChargeCard",
            {"order": 3, "amount": 42, "simulate": "gateway_timeout"},
        ),
        "troubleshooting queue, operator retry": (
            8,
            "SendReceipt",
            {"order": 8, "email": "bob@invalid", "simulate": "bad_address"},
        ),
        "business rule failure": (
            13,
            "ReserveStock",
            {"order": 13, "sku": "SKU-42", "qty": 3, "simulate": "out_of_stock"},
        ),
    }
    interesting: dict[str, UUID] = {}
    for label, (index, kind, data) in special.items():
        if index < len(requests):
            request = SendRequest(domain, kind, uuid4(), data, reply_to=reply_to)
            requests[index] = request
            interesting[label] = request.command_id
    return requests, interesting


async def run_command_demo(
    backend: Any,
    console: Console,
    *,
    commands: int = 300,
    concurrency: int = 20,
    domain: str | None = None,
    slow_handlers: bool = True,
) -> DemoOutcome:
    """Run the command-bus part of the demo on ``backend`` (a ``Backend`` or a psycopg
    pool; for PostgreSQL the schema must be applied)."""
    domain = domain or "demo_" + datetime.now().strftime("%Y%m%d_%H%M%S")
    reply_queue = f"{domain}__replies"
    world = _World(slow=slow_handlers)
    registry = build_registry(domain, world)
    policy = RetryPolicy(max_attempts=3, backoff_schedule=(0.2,))
    bus = CommandBus(backend, retry_policy=policy)
    tsq = TroubleshootingQueue(bus.backend)

    console.rule(f"[bold]1. Send {commands} commands[/] to domain [cyan]{domain}[/]")
    requests, interesting = _requests(domain, commands, reply_queue)
    started = time.perf_counter()
    await bus.send_batch(requests)
    send_seconds = time.perf_counter() - started
    kinds = Counter(r.command_type for r in requests)
    console.print(
        f"Sent {len(requests)} commands ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f") in one send_batch: {send_seconds * 1000:.0f} ms. "
        f"Replies go to queue [cyan]{reply_queue}[/]."
    )

    console.rule(f"[bold]2. Process them[/] (worker, concurrency {concurrency})")
    worker = Worker(bus.backend, domain, registry, visibility_timeout=30, retry_policy=policy)
    runner = asyncio.create_task(worker.run(concurrency=concurrency, poll_interval=0.1))
    started = time.perf_counter()
    try:
        await _progress(console, worker, len(requests), runner)
        process_seconds = time.perf_counter() - started
        s = worker.stats
        console.print(
            f"Settled {len(requests)} commands in {process_seconds:.1f} s: "
            f"[green]{s.completed} completed[/], [yellow]{s.retried} retried[/], "
            f"[magenta]{s.to_troubleshooting} sent to the troubleshooting queue[/], "
            f"[red]{s.business_failures} failed a business rule[/]."
        )

        tsq_label = "troubleshooting queue, operator retry"
        if tsq_label in interesting:
            await _operator_story(console, tsq, bus, world, domain, interesting[tsq_label])
    finally:
        await worker.stop(timeout=10)
        await runner

    statuses = await _count_statuses(bus, domain)
    replies = await _drain_replies(bus, reply_queue)
    trails = {label: await bus.get_audit_trail(cid, domain) for label, cid in interesting.items()}
    outcome = DemoOutcome(
        domain=domain,
        sent=len(requests),
        statuses=statuses,
        replies=replies,
        send_seconds=send_seconds,
        process_seconds=process_seconds,
        interesting=interesting,
        trails=trails,
    )
    _summary(console, outcome)
    return outcome


async def _progress(
    console: Console, worker: Worker, total: int, runner: asyncio.Task[None]
) -> None:
    """Show a live bar until every command is settled (completed, TSQ or failed)."""
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    deadline = time.monotonic() + 60
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("processing", total=total, detail="")
        while True:
            s = worker.stats
            settled = s.completed + s.to_troubleshooting + s.business_failures
            progress.update(
                task,
                completed=min(settled, total),
                detail=(
                    f"[green]✓ {s.completed}[/] [yellow]↻ {s.retried}[/] "
                    f"[magenta]⚠ {s.to_troubleshooting}[/] [red]✗ {s.business_failures}[/]"
                ),
            )
            if settled >= total:
                break
            if runner.done():
                runner.result()  # re-raise what stopped the worker
                raise RuntimeError("the worker stopped before all commands were processed")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {settled} of {total} commands settled after 60 s")
            await asyncio.sleep(0.05)


async def _operator_story(
    console: Console,
    tsq: TroubleshootingQueue,
    bus: CommandBus,
    world: _World,
    domain: str,
    command_id: UUID,
) -> None:
    console.rule("[bold]3. An operator resolves the troubleshooting queue[/]")
    items = await tsq.list_troubleshooting(domain)
    table = Table(title=f"commandbus tsq list --domain {domain}", title_justify="left")
    table.add_column("command id", no_wrap=True)
    table.add_column("type")
    table.add_column("error", overflow="fold")
    for item in items:
        table.add_row(
            str(item.command_id),
            item.command_type,
            f"{item.last_error_code}: {item.last_error_msg}",
        )
    console.print(table)
    console.print(
        "The operator corrects the customer's e-mail address and retries the command "
        f"([dim]commandbus tsq retry --domain {domain} {command_id}[/]) …"
    )
    world.fixed.add(command_id)
    await tsq.operator_retry(domain, command_id, operator="demo-operator")
    deadline = time.monotonic() + 15
    while True:
        meta = await bus.get_command(domain, command_id)
        if meta is not None and meta.status is CommandStatus.COMPLETED:
            break
        if time.monotonic() > deadline:
            status = meta.status.value if meta else "missing"
            raise RuntimeError(f"the retried command is still {status} after 15 s")
        await asyncio.sleep(0.05)
    console.print(f"… and the worker completes it: [green]{CommandStatus.COMPLETED.value}[/].")


async def _count_statuses(bus: CommandBus, domain: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in CommandStatus:
        rows = await bus.query_commands(status=status, domain=domain, limit=10_000)
        if rows:
            counts[status.value] = len(rows)
    return counts


async def _drain_replies(bus: CommandBus, queue: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    while True:
        batch = await bus.read_replies(queue, limit=500, visibility_timeout=30)
        if not batch:
            break
        counts.update(r.reply.outcome.value for r in batch)
        await bus.backend.queue.delete(queue, [r.msg_id for r in batch])
    return {
        outcome.value: counts[outcome.value] for outcome in ReplyOutcome if counts[outcome.value]
    }


def _summary(console: Console, outcome: DemoOutcome) -> None:
    from commandbus.cli.command import audit_table

    console.rule("[bold]4. Summary[/]")
    table = Table(title=f"Domain {outcome.domain}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("[bold]commands by status[/]", "")
    for status, count in outcome.statuses.items():
        table.add_row(f"  {status}", str(count))
    table.add_row("  total", str(sum(outcome.statuses.values())))
    table.add_section()
    table.add_row(f"[bold]replies on {outcome.domain}__replies[/]", "")
    for name, count in outcome.replies.items():
        table.add_row(f"  {name}", str(count))
    table.add_section()
    table.add_row("[bold]throughput[/]", "")
    table.add_row(
        "  send_batch", f"{outcome.sent / max(outcome.send_seconds, 1e-9):,.0f} commands/s"
    )
    table.add_row(
        "  processing (handlers sleep 20-160 ms)", f"{outcome.throughput:,.0f} commands/s"
    )
    console.print(table)
    for label, trail in outcome.trails.items():
        cid = outcome.interesting[label]
        console.print(audit_table(trail, title=f"Audit trail: {label}\n{cid}", time_only=True))
    example = next(iter(outcome.interesting.values()), "COMMAND_ID")
    console.print(
        Panel.fit(
            "Explore the data with the CLI (same database):\n"
            f"  commandbus command list -d {outcome.domain} --status FAILED\n"
            f"  commandbus tsq list -d {outcome.domain}\n"
            f"  commandbus command show -d {outcome.domain} \\\n      {example}",
            title="Next",
        )
    )


# -- entry point ---------------------------------------------------------------------------


def _process_demos() -> list[Callable[[Any, Console], Awaitable[None]]]:
    found: list[Callable[[Any, Console], Awaitable[None]]] = []
    for module_name in PROCESS_DEMOS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        runner = getattr(module, "run_process_demo", None)
        if runner is not None:
            found.append(runner)
    return found


async def main(
    database_url: str | None = None,
    *,
    commands: int = 300,
    concurrency: int = 20,
    process_demo: bool = True,
    console: Console | None = None,
) -> DemoOutcome:
    """The whole demo: schema, the command demo, then the process demo if available."""
    from commandbus.cli._common import connect
    from commandbus.postgres import apply_schema

    console = console or Console(highlight=False)
    started = time.perf_counter()
    if database_url is None:
        from commandbus.embedded import database_url as embedded_url

        with console.status("Starting the embedded PostgreSQL (first run: a few seconds) …"):
            database_url = embedded_url()
        where = "the embedded PostgreSQL in .commandbus/pgdata"
    else:
        from commandbus.cli._common import redact

        where = redact(database_url)
    console.print(
        Panel.fit(
            f"[bold]commandbus demo[/] on {where}\n"
            "Reliable commands on PostgreSQL: send, retry, troubleshoot, audit.",
        )
    )
    async with connect(database_url, max_size=concurrency + 4) as backend:
        await apply_schema(backend.pool)
        console.print("Schema applied ([dim]commandbus schema apply[/]).")
        outcome = await run_command_demo(
            backend, console, commands=commands, concurrency=concurrency
        )
        for runner in _process_demos() if process_demo else []:
            await runner(backend, console)
    console.print(f"[bold green]Demo finished[/] in {time.perf_counter() - started:.1f} s.")
    return outcome


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar=["COMMANDBUS_DATABASE_URL", "DATABASE_URL"],
    show_envvar=True,
    help="PostgreSQL URL; without one the embedded PostgreSQL is used.",
)
@click.option(
    "--commands",
    envvar="COMMANDBUS_DEMO_COMMANDS",
    show_envvar=True,
    type=click.IntRange(20, 100_000),
    default=300,
    show_default=True,
    help="How many commands to send.",
)
@click.option(
    "--concurrency",
    envvar="COMMANDBUS_CONCURRENCY",
    show_envvar=True,
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Handlers running at once.",
)
@click.option(
    "--process-demo/--no-process-demo",
    envvar="COMMANDBUS_DEMO_PROCESS",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Also run the process manager demo when it is available.",
)
def cli(database_url: str | None, commands: int, concurrency: int, process_demo: bool) -> None:
    """Run the commandbus demo (a few seconds)."""
    from commandbus.cli._common import run

    run(
        main(
            database_url or None,
            commands=commands,
            concurrency=concurrency,
            process_demo=process_demo,
        )
    )


if __name__ == "__main__":
    cli()
