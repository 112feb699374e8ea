"""``commandbus process list|show|replay``: look at processes and check replays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import click
from rich.text import Text

from commandbus.cli._branches import branch_lanes, branches_table
from commandbus.cli._common import (
    UUID_PARAM,
    compact_json,
    connect,
    console,
    domain_option,
    err_console,
    fmt_time,
    import_target,
    json_option,
    new_table,
    option,
    print_json,
    run,
    state,
    to_jsonable,
)
from commandbus.cli._process_view import (
    message_table,
    process_audit_table,
    process_status_text,
    process_table,
)
from commandbus.cli._progress import progress_bar, progress_console, progress_option
from commandbus.errors import ProcessNotFoundError
from commandbus.events import EventStore, RecordedEvent
from commandbus.process.engine import STATE_LOAD_FAILED
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessStatus,
)

#: Exit code of ``replay --check`` when processes could not be replayed at all.
EXIT_NOT_REPLAYABLE = 2

# Constant, parameterless: the domains that have processes (for `list` without --domain).
_DOMAINS_SQL = "SELECT DISTINCT domain FROM commandbus.process ORDER BY domain"

PROCESS_STATUS_CHOICE = click.Choice(
    sorted({s.value for s in ProcessStatus} | {s.name for s in ProcessStatus}),
    case_sensitive=False,
)


def _status(value: str) -> ProcessStatus:
    try:
        return ProcessStatus(value.upper())
    except ValueError:
        return ProcessStatus[value.upper()]


@click.group("process")
def process_group() -> None:
    """Inspect process managers' processes and check that the current code replays them."""


@process_group.command("list")
@domain_option(required=False)
@option(
    "--status",
    "-s",
    "statuses",
    envvar="COMMANDBUS_PROCESS_STATUS",
    type=PROCESS_STATUS_CHOICE,
    multiple=True,
    help="Only processes in this status (repeat for several).",
)
@option("--type", "-t", "process_type", envvar="COMMANDBUS_PROCESS_TYPE", help="Process type.")
@option(
    "--limit",
    "-n",
    envvar="COMMANDBUS_LIMIT",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Show at most this many per domain (oldest first).",
)
@option(
    "--attention",
    envvar="COMMANDBUS_ATTENTION",
    is_flag=True,
    help="Only processes that need a person: a step timed out, a command in the "
    "troubleshooting queue, a state that does not load, or parked messages.",
)
@json_option()
@click.pass_context
def process_list_cmd(
    ctx: click.Context,
    domain: str | None,
    statuses: tuple[str, ...],
    process_type: str | None,
    limit: int,
    attention: bool,
    as_json: bool,
) -> None:
    """List processes, oldest first; those that need attention say why."""
    url = state(ctx).database_url_for(domain)
    wanted = [_status(s) for s in statuses] or list(ProcessStatus)

    async def fetch() -> tuple[list[ProcessMetadata[Any, Any]], dict[UUID, int]]:
        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            domains = [domain] if domain else await _domains(backend)
            found: list[ProcessMetadata[Any, Any]] = []
            parked: dict[UUID, int] = {}
            for name in domains:
                for record in await backend.processes.list_messages(
                    domain=name, disposition=ProcessMessageDisposition.PARKED, limit=100_000
                ):
                    if record.process_id is not None:
                        parked[record.process_id] = parked.get(record.process_id, 0) + 1
                # With --type or --attention the repository cannot limit for us.
                cut_here = process_type is None and not attention
                batch = await backend.processes.find_by_status(
                    name, wanted, limit=limit if cut_here else None
                )
                matching = [
                    p
                    for p in batch
                    if (process_type is None or p.process_type == process_type)
                    and (not attention or needs_attention(p, parked.get(p.process_id, 0)))
                ]
                found.extend(matching[:limit])
            return found, parked

    processes, parked = run(fetch())
    if as_json:
        print_json(
            [
                {
                    **to_jsonable(p),
                    "attention": needs_attention(p, parked.get(p.process_id, 0)),
                }
                for p in processes
            ]
        )
        return
    out = console()
    if not processes:
        out.print("No processes match.")
        return
    table = new_table(f"Processes ({len(processes)} shown, oldest first)")
    table.add_column("process id", no_wrap=True, min_width=36)
    if domain is None:
        table.add_column("domain")
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("step")
    table.add_column("updated", no_wrap=True)
    table.add_column("error", overflow="fold")
    table.add_column("needs attention", overflow="fold", style="bold red")
    for p in processes:
        cells: list[str | Text] = [str(p.process_id)]
        if domain is None:
            cells.append(p.domain)
        cells.extend(
            [
                p.process_type,
                process_status_text(p.status),
                str(p.current_step or ""),
                fmt_time(p.updated_at),
                p.error_code or "",
                needs_attention(p, parked.get(p.process_id, 0)) or "",
            ]
        )
        table.add_row(*cells)
    out.print(table)


def needs_attention(process: ProcessMetadata[Any, Any], parked: int) -> str | None:
    """Why a person must look at ``process``, or None for a healthy one."""
    reasons = []
    if process.status is ProcessStatus.WAITING_FOR_OPERATOR:
        reasons.append("a step timed out: retry-step, complete-step or cancel")
    elif process.status is ProcessStatus.WAITING_FOR_TSQ:
        reasons.append("its command is in the troubleshooting queue")
    if process.error_code == STATE_LOAD_FAILED and not process.status.is_terminal:
        reasons.append("its state does not load")
    if parked:
        reasons.append(f"{parked} parked message(s)")
    return "; ".join(reasons) or None


async def _domains(backend: Any) -> list[str]:
    async with backend.transaction() as conn:
        cur = await conn.execute(_DOMAINS_SQL)
        rows = await cur.fetchall()
    return [row[0] for row in rows]


@process_group.command("show")
@domain_option()
@click.argument("process_id", type=UUID_PARAM)
@json_option()
@click.pass_context
def process_show_cmd(ctx: click.Context, domain: str, process_id: UUID, as_json: bool) -> None:
    """Show one process: its row, the commands it sent with their replies, and the
    messages it ignored."""
    url = state(ctx).database_url_for(domain)

    async def fetch() -> tuple[
        ProcessMetadata[Any, Any],
        list[ProcessAuditEntry],
        list[ProcessMessageRecord],
        list[RecordedEvent],
    ]:
        async with connect(url, topology=state(ctx).topology(), max_size=1) as backend:
            repo = backend.processes
            process = await repo.get_by_id(domain, process_id)
            if process is None:
                raise ProcessNotFoundError(domain, process_id)
            audit = await repo.get_audit_trail(domain, process_id)
            messages = await repo.list_messages(process_id=process_id, limit=1000)
            # An event-driven process has a stream of its own: its branches come from it.
            stream = f"{process.process_type}-{process_id}"
            history = [e async for e in EventStore(backend).iter_stream(stream)]
            return process, audit, messages, history

    process, audit, messages, history = run(fetch())
    if as_json:
        document = {"process": process, "audit_trail": audit, "message_log": messages}
        if history:
            document["branches"] = branch_lanes(history)
        print_json(document)
        return
    out = console()
    out.print(process_table(process))
    out.print(process_audit_table(process, audit))
    lanes = branches_table(history)
    if lanes is not None:
        out.print(lanes)
    if messages:
        out.print(message_table(messages))


@process_group.command("replay")
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
    "--process-type",
    "-t",
    envvar="COMMANDBUS_PROCESS_TYPE",
    help="Only processes of this type.",
)
@option(
    "--status",
    "-s",
    "statuses",
    envvar="COMMANDBUS_PROCESS_STATUS",
    type=PROCESS_STATUS_CHOICE,
    multiple=True,
    help="Only processes in this status (repeat for several; default: all).",
)
@option(
    "--check",
    envvar="COMMANDBUS_CHECK",
    is_flag=True,
    help="Exit 1 when the current code does not reproduce a stored process "
    f"(and {EXIT_NOT_REPLAYABLE} when some cannot be replayed at all).",
)
@json_option()
@progress_option()
@click.pass_context
def process_replay_cmd(
    ctx: click.Context,
    app: str,
    process_type: str | None,
    statuses: tuple[str, ...],
    check: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Replay stored processes through the current manager code.

    Each process's history (start input, then the replies, timers and cancel it acted
    on) is folded through the pure kernel with the managers of --app; the result must
    equal the stored process (commands sent, status, state, error). A mismatch names
    the process, the step and the first differing field: deploying this code would
    change what such processes do. A state the current code reads the same (upgraded to
    a newer state_version, a field added with its default) is a compatible change: it
    is listed (COMPATIBLE …) and passes --check.
    """
    url = state(ctx).database_url()
    target = load_app(app)
    wanted = [_status(s) for s in statuses] or None
    shown = progress_console(progress)

    async def replay() -> list[Any]:
        from commandbus.bus import CommandBus
        from commandbus.process.replay import replay_all

        async with connect(url, topology=state(ctx).topology(), max_size=2) as backend:
            managers = build_managers(target, CommandBus(backend), app)
            if process_type is not None and process_type not in {m.process_type for m in managers}:
                raise click.BadParameter(
                    f"{app} has no manager for process type {process_type!r}; it has "
                    f"{sorted(m.process_type for m in managers)}",
                    param_hint="--process-type",
                )
            with progress_bar(shown, "Replaying processes") as tick:
                return await replay_all(
                    backend, managers, process_type, statuses=wanted, progress=tick
                )

    results = run(replay())
    mismatches = [r.mismatches[0] for r in results if r.mismatches]
    not_replayable = [m for m in mismatches if m.field == "initial_data" and m.stored is None]
    different = [m for m in mismatches if m not in not_replayable]
    # Reproduced, with differences the current code reads the same (an upgraded state).
    compatible = [
        {"process_id": str(r.process.process_id), "notes": r.compatible}
        for r in results
        if r.ok and r.compatible
    ]
    if as_json:
        print_json(
            {
                "replayed": len(results),
                "reproduced": len(results) - len(mismatches),
                "compatible": compatible,
                "mismatches": different,
                "not_replayable": not_replayable,
            }
        )
    else:
        _print_replay(len(results), different, not_replayable)
        for item in compatible:
            click.echo(f"COMPATIBLE {item['process_id']}: {'; '.join(item['notes'])}")
    if check and different:
        ctx.exit(1)
    if check and not_replayable:
        ctx.exit(EXIT_NOT_REPLAYABLE)


def _print_replay(total: int, different: Sequence[Any], not_replayable: Sequence[Any]) -> None:
    out = console()
    reproduced = total - len(different) - len(not_replayable)
    out.print(f"Replayed {total} process(es): {reproduced} reproduced by the current code.")
    if different:
        table = new_table(f"{len(different)} process(es) the current code does not reproduce")
        table.add_column("process id", no_wrap=True, min_width=36)
        table.add_column("type")
        table.add_column("step")
        table.add_column("field", overflow="fold")
        table.add_column("stored", overflow="fold")
        table.add_column("replayed", overflow="fold")
        for m in different:
            table.add_row(
                str(m.process_id),
                m.process_type,
                str(m.step or ""),
                m.field + (f" ({m.detail})" if m.detail else ""),
                compact_json(m.stored, 80),
                compact_json(m.replayed, 80),
            )
        out.print(table)
        for m in different:
            click.echo(f"MISMATCH {m}")
    if not_replayable:
        err_console().print(
            f"[yellow]{len(not_replayable)} process(es) cannot be replayed: their start input "
            "(initial_data) is not stored with the process.[/]"
        )


def load_app(app: str) -> Any:
    """Import ``module:attribute`` (the managers, or a factory of them)."""
    return import_target(app, "myapp.processes:managers")


def build_managers(target: Any, bus: Any, app: str = "--app") -> list[Any]:
    """Managers from what ``--app`` names: a manager, a manager class, a list or dict of
    them, or a function taking the ``CommandBus`` and returning one of those."""
    from commandbus.process.base import BaseProcessManager

    def one(item: Any) -> Any:
        if isinstance(item, BaseProcessManager):
            return item
        if isinstance(item, type) and issubclass(item, BaseProcessManager):
            return item(bus)
        raise click.BadParameter(
            f"{app} contains a {type(item).__name__}, not a process manager", param_hint="--app"
        )

    if isinstance(target, type) and issubclass(target, BaseProcessManager):
        return [target(bus)]
    if isinstance(target, BaseProcessManager):
        return [target]
    if callable(target) and not isinstance(target, Mapping | list | tuple):
        target = target(bus)
    if isinstance(target, Mapping):
        target = list(target.values())
    if isinstance(target, BaseProcessManager):
        return [target]
    if isinstance(target, list | tuple) and target:
        return [one(item) for item in target]
    raise click.BadParameter(
        f"{app} names a {type(target).__name__}; expected process managers", param_hint="--app"
    )
