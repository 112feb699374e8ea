"""``commandbus tsq list|retry|cancel|complete``: the troubleshooting queue."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import click
from rich.text import Text

from commandbus.cli._common import (
    JSON_OBJECT,
    UUID_PARAM,
    Column,
    compact_json,
    connect,
    console,
    domain_option,
    fmt_short_time,
    json_option,
    listing,
    operator_option,
    option,
    print_json,
    run,
    state,
)
from commandbus.models import TroubleshootingItem


@click.group("tsq")
def tsq_group() -> None:
    """The troubleshooting queue: commands that need an operator.

    A command lands here when its handler raised PermanentCommandError or it ran out of
    retries. Retry it (after fixing the cause), cancel it, or complete it by hand.
    """


@tsq_group.command("list")
@domain_option()
@option("--type", "-t", "command_type", envvar="COMMANDBUS_COMMAND_TYPE", help="Command type.")
@option(
    "--limit",
    "-n",
    envvar="COMMANDBUS_LIMIT",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Show at most this many (oldest first).",
)
@json_option()
@click.pass_context
def tsq_list_cmd(
    ctx: click.Context, domain: str, command_type: str | None, limit: int, as_json: bool
) -> None:
    """List commands waiting in the troubleshooting queue of a domain."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> tuple[list[TroubleshootingItem], int]:
        from commandbus.ops.troubleshooting import TroubleshootingQueue

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            tsq = TroubleshootingQueue(backend)
            items = await tsq.list_troubleshooting(domain, command_type, limit=limit)
            total = await tsq.count_troubleshooting(domain, command_type)
            return items, total

    items, total = run(fetch())
    if as_json:
        print_json({"total": total, "items": items})
        return
    out = console()
    if not items:
        out.print(f"The troubleshooting queue of domain {domain!r} is empty.")
        return
    errors: list[str | Text] = []
    for item in items:
        error = item.last_error_code or item.last_error_type or ""
        if item.last_error_msg:
            error = f"{error}: {item.last_error_msg}" if error else item.last_error_msg
        errors.append(error)
    columns = [
        Column("command id", [str(i.command_id) for i in items]),
        Column("type", [i.command_type for i in items], drop=1),
        Column("tries", [f"{i.attempts}/{i.max_attempts}" for i in items], 4, "right"),
        Column("error", errors, drop=2),
        Column("since", [fmt_short_time(i.updated_at) for i in items], drop=5),
        Column("data", [compact_json(i.data, limit=60) for i in items], drop=3),
    ]
    title = f"Troubleshooting queue of {domain!r}: {total} command(s)" + (
        f", {len(items)} shown" if len(items) < total else ""
    )
    table = listing(title, columns, out.width)
    out.print(table)
    out.print(
        f"Resolve with: commandbus tsq retry|cancel|complete --domain {domain} COMMAND_ID",
        style="dim",
    )


@tsq_group.command("retry")
@domain_option()
@click.argument("command_id", type=UUID_PARAM)
@operator_option()
@click.pass_context
def tsq_retry_cmd(ctx: click.Context, domain: str, command_id: UUID, operator: str) -> None:
    """Put a command back on its queue with its original payload and fresh attempts."""
    _act(ctx, "retry", domain, command_id, operator=operator)
    console().print(
        f"[cyan]Retrying[/] command {command_id}: back on the {domain!r} queue "
        f"(operator {operator})."
    )


@tsq_group.command("cancel")
@domain_option()
@click.argument("command_id", type=UUID_PARAM)
@option(
    "--reason",
    "-r",
    envvar="COMMANDBUS_REASON",
    default="canceled by operator",
    show_default=True,
    help="Why (recorded in the audit trail and sent in the CANCELED reply).",
)
@operator_option()
@click.pass_context
def tsq_cancel_cmd(
    ctx: click.Context, domain: str, command_id: UUID, reason: str, operator: str
) -> None:
    """End a command as CANCELED (its reply_to gets a CANCELED reply)."""
    _act(ctx, "cancel", domain, command_id, operator=operator, reason=reason)
    console().print(f"[yellow]Canceled[/] command {command_id} (operator {operator}): {reason}")


@tsq_group.command("complete")
@domain_option()
@click.argument("command_id", type=UUID_PARAM)
@option(
    "--result",
    envvar="COMMANDBUS_RESULT",
    type=JSON_OBJECT,
    help='Result sent in the SUCCESS reply, a JSON object, e.g. \'{"receipt": "R-1"}\'.',
)
@operator_option()
@click.pass_context
def tsq_complete_cmd(
    ctx: click.Context,
    domain: str,
    command_id: UUID,
    result: dict[str, Any] | None,
    operator: str,
) -> None:
    """End a command as COMPLETED by hand (its reply_to gets a SUCCESS reply)."""
    _act(ctx, "complete", domain, command_id, operator=operator, result=result)
    console().print(f"[green]Completed[/] command {command_id} (operator {operator}).")


def _act(
    ctx: click.Context,
    action: str,
    domain: str,
    command_id: UUID,
    *,
    operator: str,
    reason: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    url = state(ctx).database_url_for(domain)

    async def apply() -> None:
        from commandbus.ops.troubleshooting import TroubleshootingQueue

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            tsq = TroubleshootingQueue(backend)
            if action == "retry":
                await tsq.operator_retry(domain, command_id, operator=operator)
            elif action == "cancel":
                await tsq.operator_cancel(domain, command_id, reason or "", operator=operator)
            else:
                await tsq.operator_complete(domain, command_id, result, operator=operator)

    run(apply())
