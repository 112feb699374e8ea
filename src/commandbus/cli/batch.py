"""``commandbus batch list|show``: batches of commands or processes and their counters."""

from __future__ import annotations

from uuid import UUID

import click
from rich.table import Table
from rich.text import Text

from commandbus.batches.models import BatchKind, BatchMetadata, BatchStatus
from commandbus.cli._common import (
    UUID_PARAM,
    Column,
    connect,
    console,
    domain_option,
    fmt_short_time,
    fmt_time,
    json_option,
    listing,
    new_table,
    option,
    print_json,
    run,
    state,
    status_text,
)
from commandbus.errors import BatchNotFoundError
from commandbus.models import CommandMetadata

BATCH_STATUS = click.Choice([s.value for s in BatchStatus], case_sensitive=False)
_STYLES = {
    "PENDING": "",
    "IN_PROGRESS": "cyan",
    "COMPLETED": "green",
    "COMPLETED_WITH_FAILURES": "yellow",
}


@click.group("batch")
def batch_group() -> None:
    """Batches: commands (CommandBus.create_batch) or processes (start_many with a batch)
    counted together, with a completion notice when the last one ends."""


def _status(status: BatchStatus) -> Text:
    return Text(status.value, style=_STYLES.get(status.value, ""))


def _progress(batch: BatchMetadata) -> str:
    ended = batch.completed + batch.failed + batch.canceled
    return f"{ended}/{batch.total}" + (" open" if batch.is_open else "")


@batch_group.command("list")
@domain_option(required=False)
@option(
    "--status",
    "-s",
    envvar="COMMANDBUS_STATUS",
    type=BATCH_STATUS,
    help="Only batches in this status.",
)
@option(
    "--limit",
    "-n",
    envvar="COMMANDBUS_LIMIT",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Show at most this many (newest first).",
)
@json_option()
@click.pass_context
def batch_list_cmd(
    ctx: click.Context, domain: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List batches with their counters, newest first."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> list[BatchMetadata]:
        from commandbus.bus import CommandBus

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            bus = CommandBus(backend)
            return await bus.list_batches(
                domain=domain, status=status.upper() if status else None, limit=limit
            )

    batches = run(fetch())
    if as_json:
        print_json(batches)
        return
    out = console()
    if not batches:
        out.print("No batches match.")
        return
    columns = [
        Column("batch id", [str(b.batch_id) for b in batches]),
        Column("name", [b.name or "" for b in batches], drop=4),
        Column("kind", [b.kind.value.lower() for b in batches], drop=5),
        Column("status", [_status(b.status) for b in batches]),
        Column("ended", [_progress(b) for b in batches], justify="right"),
        Column("ok", [str(b.completed) for b in batches], drop=2, justify="right"),
        Column("failed", [str(b.failed) for b in batches], drop=2, justify="right"),
        Column("canceled", [str(b.canceled) for b in batches], drop=3, justify="right"),
        Column("tsq", [str(b.in_troubleshooting) for b in batches], drop=1, justify="right"),
        Column("created", [fmt_short_time(b.created_at) for b in batches], drop=6),
    ]
    if domain is None:
        columns.insert(1, Column("domain", [b.domain for b in batches], drop=7))
    out.print(listing(f"Batches ({len(batches)} shown, newest first)", columns, out.width))


@batch_group.command("show")
@domain_option()
@click.argument("batch_id", type=UUID_PARAM)
@option(
    "--limit",
    "-n",
    envvar="COMMANDBUS_LIMIT",
    type=click.IntRange(0, 10_000),
    default=20,
    show_default=True,
    help="Show at most this many of its commands (newest first; 0: none).",
)
@json_option()
@click.pass_context
def batch_show_cmd(
    ctx: click.Context, domain: str, batch_id: UUID, limit: int, as_json: bool
) -> None:
    """Show a batch's counters and (for a batch of commands) its newest commands."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> tuple[BatchMetadata, list[CommandMetadata]]:
        from commandbus.bus import CommandBus

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            bus = CommandBus(backend)
            batch = await bus.get_batch(domain, batch_id)
            if batch is None:
                raise BatchNotFoundError(domain, batch_id)
            members: list[CommandMetadata] = []
            if batch.kind is BatchKind.COMMANDS and limit > 0:
                members = await bus.query_commands(domain=domain, batch_id=batch_id, limit=limit)
            return batch, members

    batch, members = run(fetch())
    if as_json:
        print_json({"batch": batch, "commands": members})
        return
    out = console()
    out.print(batch_table(batch))
    if members:
        columns = [
            Column("command id", [str(m.command_id) for m in members]),
            Column("type", [m.command_type for m in members], drop=1),
            Column("status", [status_text(m.status) for m in members]),
            Column("tries", [f"{m.attempts}/{m.max_attempts}" for m in members], 4, "right"),
            Column("updated", [fmt_short_time(m.updated_at) for m in members], drop=2),
        ]
        shown = f"{len(members)} of {batch.total} shown, newest first"
        out.print(listing(f"Commands of the batch ({shown})", columns, out.width))


def batch_table(batch: BatchMetadata) -> Table:
    table = new_table(f"Batch {batch.batch_id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("domain", batch.domain),
        ("name", batch.name or ""),
        ("kind", batch.kind.value.lower()),
        ("status", _status(batch.status)),
        ("open", "yes: takes new members until closed" if batch.is_open else "no"),
        ("total", str(batch.total)),
        ("completed", str(batch.completed)),
        ("failed", str(batch.failed)),
        ("canceled", str(batch.canceled)),
        ("in the TSQ", str(batch.in_troubleshooting)),
        ("pending", str(batch.pending)),
        ("notice to", batch.reply_to or ""),
        ("created", fmt_time(batch.created_at)),
        ("finished", fmt_time(batch.completed_at) if batch.completed_at else ""),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
