"""``commandbus process cancel|retry-step|complete-step|parked``: act on processes.

Cancel and the step actions run the process's own hooks (compensation, the next step's
command), so they load the managers from ``--app`` like ``process replay`` does. Parked
messages need no managers: listing them reads the message log, and replaying one puts it
back on its reply queue for the routers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

import click

from commandbus.cli._common import (
    JSON_OBJECT,
    UUID_PARAM,
    compact_json,
    connect,
    console,
    domain_option,
    fmt_time,
    json_option,
    new_table,
    operator_option,
    option,
    print_json,
    run,
    state,
)
from commandbus.cli.process import build_managers, load_app, process_group
from commandbus.errors import ProcessNotFoundError
from commandbus.process.models import ProcessMessageDisposition, ProcessMessageRecord

F = TypeVar("F", bound=Callable[..., Any])

APP_HELP = (
    "Where your process managers are, e.g. 'myapp.processes:managers' (as for "
    "`process replay`): the action runs their hooks."
)


def app_option() -> Callable[[F], F]:
    return option(
        "--app",
        "-a",
        envvar="COMMANDBUS_APP",
        required=True,
        metavar="MODULE:ATTRIBUTE",
        help=APP_HELP,
    )


async def _manager_for(backend: Any, target: Any, app: str, domain: str, process_id: UUID) -> Any:
    """The manager of the stored process's type (a clear error when --app has none)."""
    from commandbus.bus import CommandBus

    stored = await backend.processes.get_by_id(domain, process_id)
    if stored is None:
        raise ProcessNotFoundError(domain, process_id)
    managers = build_managers(target, CommandBus(backend), app)
    for manager in managers:
        if manager.process_type == stored.process_type and manager.domain == domain:
            return manager
    raise click.BadParameter(
        f"{app} has no manager for process type {stored.process_type!r} in domain "
        f"{domain!r}; it has {sorted((m.domain, m.process_type) for m in managers)}",
        param_hint="--app",
    )


def _act(ctx: click.Context, app: str, domain: str, process_id: UUID, action: Any) -> Any:
    url = state(ctx).database_url_for(domain)
    target = load_app(app)

    async def apply() -> Any:
        async with connect(url, topology=state(ctx).topology(), max_size=2) as backend:
            manager = await _manager_for(backend, target, app, domain, process_id)
            return await action(manager)

    return run(apply())


def _report(verb: str, process: Any) -> None:
    step = f", step {process.current_step}" if process.current_step is not None else ""
    console().print(f"{verb} process {process.process_id}: now {process.status.value}{step}.")


@process_group.command("cancel")
@domain_option()
@click.argument("process_id", type=UUID_PARAM)
@app_option()
@option(
    "--reason",
    "-r",
    envvar="COMMANDBUS_REASON",
    default="canceled by operator",
    show_default=True,
    help="Why (stored with the process).",
)
@click.pass_context
def process_cancel_cmd(
    ctx: click.Context, domain: str, process_id: UUID, app: str, reason: str
) -> None:
    """Cancel a process: withdraw (or wait for) its awaited command, compensate its
    completed steps, then end CANCELED."""
    process = _act(ctx, app, domain, process_id, lambda m: m.cancel(process_id, reason))
    _report("[yellow]Canceled[/]", process)


@process_group.command("retry-step")
@domain_option()
@click.argument("process_id", type=UUID_PARAM)
@app_option()
@operator_option()
@click.pass_context
def process_retry_step_cmd(
    ctx: click.Context, domain: str, process_id: UUID, app: str, operator: str
) -> None:
    """Send the awaited step of a process that waits for an operator again (after a step
    timeout, or with its command in the troubleshooting queue)."""
    process = _act(
        ctx, app, domain, process_id, lambda m: m.retry_step(process_id, operator=operator)
    )
    _report("[cyan]Retried the step of[/]", process)


@process_group.command("complete-step")
@domain_option()
@click.argument("process_id", type=UUID_PARAM)
@app_option()
@option(
    "--result",
    envvar="COMMANDBUS_RESULT",
    type=JSON_OBJECT,
    help="What the step produced, a JSON object (update_state sees it as the SUCCESS "
    'reply\'s data), e.g. \'{"receipt": "R-1"}\'.',
)
@operator_option()
@click.pass_context
def process_complete_step_cmd(
    ctx: click.Context,
    domain: str,
    process_id: UUID,
    app: str,
    result: dict[str, Any] | None,
    operator: str,
) -> None:
    """Complete the awaited step of a process that waits for an operator, by hand."""
    process = _act(
        ctx,
        app,
        domain,
        process_id,
        lambda m: m.complete_step(process_id, result or {}, operator=operator),
    )
    _report("[green]Completed the step of[/]", process)


@process_group.group("parked")
def parked_group() -> None:
    """Reply-queue messages a router could not handle (kept whole, to replay)."""


@parked_group.command("list")
@domain_option(required=False)
@option(
    "--limit",
    "-n",
    envvar="COMMANDBUS_LIMIT",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Show at most this many (oldest first).",
)
@json_option()
@click.pass_context
def parked_list_cmd(ctx: click.Context, domain: str | None, limit: int, as_json: bool) -> None:
    """List parked messages, oldest first, with why each was parked."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> list[ProcessMessageRecord]:
        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            return list(
                await backend.processes.list_messages(
                    domain=domain, disposition=ProcessMessageDisposition.PARKED, limit=limit
                )
            )

    records = run(fetch())
    if as_json:
        print_json(records)
        return
    out = console()
    if not records:
        out.print("No parked messages.")
        return
    table = new_table(f"Parked messages ({len(records)} shown, oldest first)")
    for header in ("id", "queue", "process id", "recorded", "reason", "message"):
        table.add_column(header, overflow="fold", no_wrap=header in ("id", "process id"))
    for r in records:
        table.add_row(
            str(r.id),
            r.queue_name or "",
            str(r.process_id or ""),
            fmt_time(r.recorded_at) if r.recorded_at else "",
            r.reason,
            compact_json(r.message, 80),
        )
    out.print(table)


@parked_group.command("replay")
@click.argument("record_id", type=click.IntRange(1))
@click.pass_context
def parked_replay_cmd(ctx: click.Context, record_id: int) -> None:
    """Put a parked message back on its reply queue (after fixing what parked it); a
    router handles it like any other message."""
    url = state(ctx).database_url()

    async def replay() -> bool:
        from commandbus.process.parked import replay_parked

        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            return await replay_parked(backend, record_id)

    if not run(replay()):
        raise click.ClickException(f"no parked message with id {record_id}")
    console().print(f"[green]Replayed[/] parked message {record_id}: back on its reply queue.")
