"""``commandbus process diagram``: a process definition, or one live process, as a picture.

Without a process id it draws the definition of a manager from ``--app`` (no database:
the managers are built on an in-memory bus). With one it loads the process and its audit
trail and highlights the path it took and where it is now — on its manager's definition
when ``--app`` is given, else on the steps of its audit trail alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import click

from commandbus.cli._common import (
    UUID_PARAM,
    connect,
    domain_option,
    err_console,
    option,
    run,
    state,
)
from commandbus.cli.process import build_managers, load_app, process_group
from commandbus.errors import ProcessNotFoundError

#: File extensions and the format they are written in.
FORMATS_BY_EXTENSION = {
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
}
FORMATS = ("mermaid", "dot", "svg", "png")


@process_group.command("diagram")
@click.argument("process_id", type=UUID_PARAM, required=False)
@option(
    "--app",
    "-a",
    envvar="COMMANDBUS_APP",
    metavar="MODULE:ATTRIBUTE",
    help="Where your process managers are (as for `process replay`), e.g. "
    "'myapp.processes:StatementReportSteps'. Required without PROCESS_ID; with it, the "
    "path is drawn on the definition.",
)
@option(
    "--process-type",
    "-t",
    envvar="COMMANDBUS_PROCESS_TYPE",
    help="Which manager of --app to draw, when it has several.",
)
@domain_option(required=False)
@option(
    "--format",
    "-f",
    "diagram_format",
    envvar="COMMANDBUS_DIAGRAM_FORMAT",
    type=click.Choice(FORMATS, case_sensitive=False),
    default="mermaid",
    show_default=True,
    help="What to write: Mermaid or Graphviz DOT text, or SVG/PNG rendered by Graphviz "
    "(needs its dot program: apt-get install graphviz).",
)
@option(
    "--output",
    "-o",
    "outputs",
    envvar="COMMANDBUS_DIAGRAM_OUTPUT",
    multiple=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of standard output; its extension chooses the "
    "format (.mmd, .dot, .svg, .png; others use --format). Repeat for several.",
)
@click.pass_context
def process_diagram_cmd(
    ctx: click.Context,
    process_id: UUID | None,
    app: str | None,
    process_type: str | None,
    domain: str | None,
    diagram_format: str,
    outputs: tuple[Path, ...],
) -> None:
    """Draw a process definition (--app), or one process (PROCESS_ID, with --domain)
    with the path it took and its current step highlighted.

    \b
    Examples:
      commandbus process diagram --app examples.statement_report.steps:StatementReportSteps
      commandbus process diagram --app myapp.processes:managers -t Payment -o payment.svg
      commandbus process diagram --domain reporting 0b6f… -o now.png
    """
    from commandbus.bus import CommandBus
    from commandbus.process.diagram import process_graph, trace_process

    if process_id is None and app is None:
        raise click.UsageError("give --app to draw a definition, or a PROCESS_ID (with --domain)")
    if process_id is not None and domain is None:
        raise click.UsageError("drawing a process needs its --domain")
    # The hooks are pure: an in-memory bus is all a manager needs to describe itself.
    managers = build_managers(load_app(app), CommandBus.in_memory(), app) if app else []

    if process_id is None:
        graph = process_graph(_choose(managers, process_type, app))
        highlight = None
    else:
        assert domain is not None
        url = state(ctx).database_url()

        async def fetch() -> tuple[Any, Any]:
            async with connect(url, max_size=1) as backend:
                stored = await backend.processes.get_by_id(domain, process_id)
                if stored is None:
                    raise ProcessNotFoundError(domain, process_id)
                trail = await backend.processes.get_audit_trail(domain, process_id)
                return stored, trail

        process, audit = run(fetch())
        manager = None
        if managers:
            manager = _choose(managers, process_type or process.process_type, app)
        definition = process_graph(manager) if manager is not None else _empty(process)
        graph, highlight = trace_process(definition, process, audit, manager)
    _write(graph, highlight, diagram_format, outputs)


def _choose(managers: list[Any], process_type: str | None, app: str | None) -> Any:
    if process_type is not None:
        for manager in managers:
            if manager.process_type == process_type:
                return manager
        raise click.BadParameter(
            f"{app} has no manager for process type {process_type!r}; it has "
            f"{sorted(m.process_type for m in managers)}",
            param_hint="--process-type",
        )
    if len(managers) > 1:
        raise click.BadParameter(
            f"{app} has several managers: choose one with --process-type "
            f"({', '.join(sorted(m.process_type for m in managers))})",
            param_hint="--process-type",
        )
    return managers[0]


def _empty(process: Any) -> Any:
    from commandbus.process.graph import ProcessGraph

    return ProcessGraph(process.process_type, (), (), "steps from the audit trail (no --app)")


def _write(graph: Any, highlight: Any, diagram_format: str, outputs: tuple[Path, ...]) -> None:
    targets: list[tuple[Path | None, str]] = [
        (path, FORMATS_BY_EXTENSION.get(path.suffix.lower(), diagram_format.lower()))
        for path in outputs
    ] or [(None, diagram_format.lower())]
    for path, chosen in targets:
        content = _render(graph, highlight, chosen)
        if path is None:
            sys.stdout.buffer.write(content)
            sys.stdout.buffer.flush()
        else:
            path.write_bytes(content)
            err_console().print(f"wrote {path} ({chosen})")


def _render(graph: Any, highlight: Any, chosen: str) -> bytes:
    from commandbus.errors import CommandBusError
    from commandbus.process.diagram import render_graphviz, to_dot, to_mermaid

    if chosen == "mermaid":
        return to_mermaid(graph, highlight).encode()
    dot = to_dot(graph, highlight)
    if chosen == "dot":
        return dot.encode()
    try:
        return render_graphviz(dot, chosen)
    except CommandBusError as exc:
        raise click.ClickException(str(exc)) from None
