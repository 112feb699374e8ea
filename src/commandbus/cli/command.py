"""``commandbus command list|show``: look at commands and their audit trails."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import click
from rich.table import Table
from rich.text import Text

from commandbus.cli._common import (
    STATUS_CHOICE,
    UUID_PARAM,
    Column,
    compact_json,
    connect,
    console,
    domain_option,
    event_text,
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
from commandbus.errors import CommandNotFoundError
from commandbus.models import AuditEvent, CommandMetadata


@click.group("command")
def command_group() -> None:
    """Inspect commands: their status, attempts, errors and audit trail."""


@command_group.command("list")
@option(
    "--status",
    "-s",
    envvar="COMMANDBUS_STATUS",
    type=STATUS_CHOICE,
    help="Only commands in this status.",
)
@domain_option(required=False)
@option("--type", "-t", "command_type", envvar="COMMANDBUS_COMMAND_TYPE", help="Command type.")
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
def command_list_cmd(
    ctx: click.Context,
    status: str | None,
    domain: str | None,
    command_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List commands, newest first."""
    url = state(ctx).database_url_for(domain)

    async def query() -> list[CommandMetadata]:
        from commandbus.bus import CommandBus

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            bus = CommandBus(backend)
            return await bus.query_commands(
                status=status.upper() if status else None,
                domain=domain,
                command_type=command_type,
                limit=limit,
            )

    commands = run(query())
    if as_json:
        print_json(commands)
        return
    out = console()
    if not commands:
        out.print("No commands match.")
        return
    columns = [
        Column("command id", [str(m.command_id) for m in commands]),
        Column("type", [m.command_type for m in commands], drop=1),
        Column("status", [status_text(m.status) for m in commands]),
        Column("tries", [f"{m.attempts}/{m.max_attempts}" for m in commands], 4, "right"),
        Column("updated", [fmt_short_time(m.updated_at) for m in commands], drop=6),
        Column("error", [m.last_error_code or m.last_error_type or "" for m in commands], 3),
    ]
    if domain is None:
        columns.insert(1, Column("domain", [m.domain for m in commands], drop=5))
    table = listing(f"Commands ({len(commands)} shown, newest first)", columns, out.width)
    out.print(table)


@command_group.command("show")
@domain_option()
@click.argument("command_id", type=UUID_PARAM)
@json_option()
@click.pass_context
def command_show_cmd(ctx: click.Context, domain: str, command_id: UUID, as_json: bool) -> None:
    """Show one command's metadata and its audit trail."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> tuple[CommandMetadata, list[AuditEvent]]:
        from commandbus.bus import CommandBus

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            bus = CommandBus(backend)
            meta = await bus.get_command(domain, command_id)
            if meta is None:
                raise CommandNotFoundError(domain, command_id)
            trail = await bus.get_audit_trail(command_id, domain)
            return meta, trail

    meta, trail = run(fetch())
    if as_json:
        print_json({"command": meta, "audit_trail": trail})
        return
    out = console()
    out.print(metadata_table(meta))
    out.print(audit_table(trail))


def metadata_table(meta: CommandMetadata) -> Table:
    table = new_table(f"Command {meta.command_id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("domain", meta.domain),
        ("type", meta.command_type),
        ("status", status_text(meta.status)),
        ("attempts", f"{meta.attempts} of {meta.max_attempts}"),
        ("correlation id", str(meta.correlation_id or "")),
        ("reply to", meta.reply_to or ""),
        ("batch id", str(meta.batch_id or "")),
        ("created", fmt_time(meta.created_at)),
        ("updated", fmt_time(meta.updated_at)),
    ]
    if meta.last_error_type or meta.last_error_code or meta.last_error_msg:
        rows.append(("last error", _error_summary(meta)))
    for name, value in rows:
        table.add_row(name, value)
    return table


def audit_table(
    trail: list[AuditEvent], title: str = "Audit trail", *, time_only: bool = False
) -> Table:
    table = new_table(f"{title} ({len(trail)} events)")
    table.add_column("#", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("details", overflow="fold")
    for index, event in enumerate(trail, start=1):
        stamp = fmt_time(event.timestamp)
        table.add_row(
            str(index),
            stamp[11:] if time_only else stamp,
            event_text(event.event_type),
            details_text(event.details),
        )
    return table


_PLAIN = re.compile(r"[\w.:@/+-]+")


def details_text(details: dict[str, Any] | None) -> str:
    """Audit details as ``key=value`` pairs (strings quoted only when they need it)."""
    if not details:
        return ""
    parts = []
    for key, value in details.items():
        if value is None:
            continue
        plain = isinstance(value, str) and _PLAIN.fullmatch(value) is not None
        parts.append(f"{key}={value if plain else compact_json(value)}")
    return "  ".join(parts)


def _error_summary(meta: CommandMetadata) -> str:
    parts = [p for p in (meta.last_error_type, meta.last_error_code) if p]
    head = "/".join(parts)
    if meta.last_error_msg:
        return f"{head}: {meta.last_error_msg}" if head else meta.last_error_msg
    return head
