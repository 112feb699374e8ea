"""The ``commandbus`` command line: nouns, then verbs (``commandbus tsq list``).

Each noun lives in its own module (``schema``, ``worker``, ``tsq``, ``command``) and exports
one ``click.Group``. A noun whose module may not be there (``process``, added with the
process manager) is registered only when it imports: see ``OPTIONAL_NOUNS``.

Every option can also be given as a ``COMMANDBUS_*`` environment variable, shown in
``--help``. The database is ``--database-url`` / ``COMMANDBUS_DATABASE_URL`` /
``DATABASE_URL``; with none of them, an embedded PostgreSQL is booted in
``.commandbus/pgdata`` (``schema sql`` never connects).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

import click

from commandbus import __version__
from commandbus.cli._common import CliState, option, windows_event_loop_policy
from commandbus.cli.batch import batch_group
from commandbus.cli.command import command_group
from commandbus.cli.history import history_group
from commandbus.cli.relay import relay_group
from commandbus.cli.schema import schema_group
from commandbus.cli.tsq import tsq_group
from commandbus.cli.worker import worker_group
from commandbus.logs import JsonLogFormatter

#: ``(module, attribute)`` of sub-command groups registered when their module imports.
OPTIONAL_NOUNS: tuple[tuple[str, str], ...] = (
    ("commandbus.cli.process_ops", "process_group"),
    ("commandbus.cli.process_diagram", "process_group"),
    ("commandbus.cli.router", "router_group"),
    ("commandbus.cli.router", "run_cmd"),
    ("commandbus.cli.events", "events_group"),
    ("commandbus.cli.events", "subscription_group"),
    ("commandbus.cli.console", "console_cmd"),
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@option(
    "--database-url",
    envvar=["COMMANDBUS_DATABASE_URL", "DATABASE_URL"],
    metavar="URL",
    help="PostgreSQL URL, e.g. postgresql://user@host:5432/db. "
    "Without one, an embedded PostgreSQL is started in .commandbus/pgdata.",
)
@option(
    "--data-dir",
    envvar="COMMANDBUS_DATA_DIR",
    metavar="DIR",
    help="Data directory of the embedded PostgreSQL (when no database URL is given).",
)
@option(
    "--topology",
    envvar="COMMANDBUS_TOPOLOGY",
    metavar="FILE",
    help="Domains on separate clusters: a TOML (or .json) file whose [domains] table maps "
    "each domain to its cluster's DSN. Commands that name a domain use its cluster; "
    "`relay` needs it.",
)
@option(
    "--log-level",
    envvar="COMMANDBUS_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="Logging level of the library's loggers.",
)
@option(
    "--log-format",
    envvar="COMMANDBUS_LOG_FORMAT",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line (for log shippers).",
)
@click.version_option(__version__, "--version", "-V", prog_name="commandbus")
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str | None,
    data_dir: str | None,
    log_level: str,
    log_format: str = "text",
    topology: str | None = None,
) -> None:
    """commandbus: reliable commands and long-running processes on PostgreSQL.

    \b
    Examples:
      commandbus schema apply
      commandbus worker run --app myapp.handlers:registry --domain payments
      commandbus tsq list --domain payments
      commandbus tsq retry --domain payments 0b6f…
      commandbus command show --domain payments 0b6f…
      commandbus batch list --domain payments
      commandbus --topology clusters.toml relay run
    """
    configure_logging(log_level, log_format)
    ctx.obj = CliState(
        database_url_option=database_url or None, data_dir=data_dir, topology_file=topology
    )


def configure_logging(level: str, log_format: str) -> None:
    """The root logger at ``level``, writing text or JSON lines to standard error."""
    handler = logging.StreamHandler()
    if log_format.lower() == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


cli.add_command(schema_group)
cli.add_command(worker_group)
cli.add_command(tsq_group)
cli.add_command(command_group)
cli.add_command(batch_group)
cli.add_command(history_group)
cli.add_command(relay_group)


def _add_optional_nouns() -> None:
    for module_name, attribute in OPTIONAL_NOUNS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module exists but one of its imports is broken
                raise
            continue
        group = getattr(module, attribute)
        if isinstance(group, click.Command):
            cli.add_command(group)


_add_optional_nouns()


#: The root group's options that take a value: accepted anywhere on the command line.
GLOBAL_OPTIONS = ("--database-url", "--data-dir", "--topology", "--log-level", "--log-format")


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """``args`` with the global options moved before the sub-command, so that
    ``commandbus tsq list -d payments --database-url URL`` works like
    ``commandbus --database-url URL tsq list -d payments``. Everything after ``--`` is
    left alone."""
    head: list[str] = []
    rest: list[str] = []
    items = list(args)
    index = 0
    while index < len(items):
        arg = items[index]
        if arg == "--":
            rest.extend(items[index:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg:
                head.append(arg)
            elif index + 1 < len(items):
                head.extend(items[index : index + 2])
                index += 1
            else:
                head.append(arg)  # missing value: let click say so
        else:
            rest.append(arg)
        index += 1
    return head + rest


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``commandbus`` script and ``python -m commandbus``."""
    windows_event_loop_policy()
    args = list(argv) if argv is not None else sys.argv[1:]
    cli.main(args=hoist_global_options(args), prog_name="commandbus")


if __name__ == "__main__":  # pragma: no cover
    main()
