"""Helpers shared by the ``commandbus`` sub-commands.

- ``option``: a ``click.option`` that also reads ``COMMANDBUS_*`` and shows it in ``--help``;
- ``CliState``: what the root group resolved (database URL, lazily: ``schema sql`` never
  connects and never boots the embedded server);
- ``run``: run a coroutine, translating library and driver errors into one clear line;
- ``connect``: a ``PostgresBackend`` on a pool on the resolved database (fails fast with a
  readable error);
- param types for UUIDs and JSON objects, and rich rendering helpers.
"""

from __future__ import annotations

import asyncio
import getpass
import importlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from commandbus.errors import CommandBusError
from commandbus.models import CommandStatus

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "COMMANDBUS_"


def option(*param_decls: str, envvar: str | Sequence[str], **attrs: Any) -> Callable[[F], F]:
    """``click.option`` whose value may also come from ``envvar`` (shown in ``--help``)."""
    names = [envvar] if isinstance(envvar, str) else list(envvar)
    for name in names:
        if not name.startswith(ENV_PREFIX) and name != "DATABASE_URL":
            raise ValueError(f"environment variables of options start with {ENV_PREFIX}")
    attrs.setdefault("show_envvar", True)
    decorator: Callable[[F], F] = click.option(*param_decls, envvar=names, **attrs)
    return decorator


def domain_option(required: bool = True) -> Callable[[F], F]:
    return option(
        "--domain",
        "-d",
        envvar="COMMANDBUS_DOMAIN",
        required=required,
        help="Command domain (e.g. 'payments').",
    )


def operator_option() -> Callable[[F], F]:
    return option(
        "--operator",
        envvar="COMMANDBUS_OPERATOR",
        default=_default_operator,
        show_default="current user",
        help="Who performs the action (recorded in the audit trail).",
    )


def json_option() -> Callable[[F], F]:
    return option(
        "--json",
        "as_json",
        envvar="COMMANDBUS_JSON",
        is_flag=True,
        help="Print JSON instead of a table (for scripts).",
    )


def _default_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "cli"


# -- context -------------------------------------------------------------------------------


#: Where the embedded server this command uses keeps its data (set when it is booted).
_EMBEDDED_IN: list[Path] = []


@dataclass
class CliState:
    """Resolved global options, stored as ``ctx.obj`` by the root group."""

    database_url_option: str | None = None
    data_dir: str | None = None
    #: ``--topology``: the file mapping domains to their clusters' DSNs.
    topology_file: str | None = None
    _resolved: str | None = None
    _topology: Any = None

    def topology(self) -> Any:
        """The ``Topology`` of ``--topology``, or None without one."""
        if self.topology_file is None:
            return None
        if self._topology is None:
            from commandbus.cli._topology import load_topology

            self._topology = load_topology(self.topology_file)
        return self._topology

    def database_url_for(self, domain: str | None) -> str:
        """The database of ``domain``: its cluster in ``--topology`` if it names it, else
        ``database_url()``."""
        topology = self.topology()
        if topology is not None and domain is not None and domain in topology.domains:
            dsn: str = topology.dsn_of(domain)
            return dsn
        return self.database_url()

    def database_url_of(self, domains: Sequence[str]) -> str:
        """The one database of all ``domains`` (a command serving several must find them
        on one cluster of ``--topology``: else a ``UsageError`` says to run one per
        cluster)."""
        urls = {self.database_url_for(d) for d in domains}
        if len(urls) > 1:
            topology = self.topology()
            by_cluster = sorted(
                ",".join(d for d in domains if self.database_url_for(d) == url) for url in urls
            )
            raise click.UsageError(
                f"the domains live on {len(urls)} clusters of {self.topology_file} "
                f"({'; '.join(by_cluster)}): run one per cluster (--domain)"
                if topology is not None
                else "the domains live on different databases"
            )
        return urls.pop() if urls else self.database_url()

    def database_url(self) -> str:
        """The database to use: ``--database-url`` / ``COMMANDBUS_DATABASE_URL`` /
        ``DATABASE_URL``, else the embedded server (booted on first use)."""
        if self._resolved is None:
            if self.database_url_option:
                self._resolved = self.database_url_option
            else:
                from commandbus.embedded import DEFAULT_DATA_DIR, configured_url, database_url

                try:
                    self._resolved = database_url(self.data_dir)
                except CommandBusError as exc:  # could not boot it: say why, and what to do
                    raise click.ClickException(str(exc)) from None
                if configured_url() is None:
                    where = Path(self.data_dir or Path.cwd() / DEFAULT_DATA_DIR).resolve()
                    _EMBEDDED_IN[:] = [where]
                    err_console().print(
                        f"[dim]No DATABASE_URL given: using the embedded PostgreSQL in {where} "
                        "(--database-url / DATABASE_URL, or --data-dir, to use another)[/]"
                    )
        return self._resolved


def state(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # invoked without the root group (tests calling a sub-command)
        obj = ctx.ensure_object(CliState)
    return obj


# -- running -------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; user-facing failures become a ``click.ClickException`` (exit 1)."""
    try:
        return asyncio.run(coro)
    except click.ClickException:
        raise
    except CommandBusError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        message = describe_database_error(exc)
        if message is None:
            raise
        raise click.ClickException(message) from None


def describe_database_error(exc: BaseException) -> str | None:
    """A one-line message for driver errors a user can cause (bad URL, missing schema)."""
    try:
        import psycopg
        from psycopg import errors as pg_errors
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        where = ""
        if _EMBEDDED_IN:  # most likely a new, empty embedded server in the wrong folder
            where = (
                f" (the embedded PostgreSQL in {_EMBEDDED_IN[0]}: if your data is elsewhere, "
                "run from that folder, pass --data-dir, or set DATABASE_URL)"
            )
        return (
            f"the commandbus schema is missing in this database{where} "
            f"({_first_line(exc)}); run `commandbus schema apply` first"
        )
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return f"cannot use the database: {_first_line(exc)}"
    if isinstance(exc, psycopg.ProgrammingError) and "invalid dsn" in str(exc).lower():
        return f"invalid database URL: {_first_line(exc)}"
    if isinstance(exc, psycopg.Error):
        return f"database error: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    from commandbus.postgres.connections import redact_dsn

    return redact_dsn(url)


@asynccontextmanager
async def connect(url: str, max_size: int = 4, topology: Any = None) -> AsyncIterator[Any]:
    """A ``PostgresBackend`` on an open pool on ``url`` (closed on exit, LISTEN connection
    included). Connection problems surface as one readable ``ClickException`` instead of
    a pool timeout. Pass it wherever the library takes a pool or a backend. With a
    ``topology`` that has ``url`` as a cluster, it is that cluster's backend: its sends to
    other clusters' domains go to its outbox."""
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from commandbus.postgres import PostgresBackend

    try:
        probe = await psycopg.AsyncConnection.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise click.ClickException(f"cannot connect to {redact(url)}: {_first_line(exc)}") from None
    await probe.close()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=max(max_size, 1), open=False
    )
    await pool.open(wait=True, timeout=30)
    if topology is not None and url in topology.clusters:
        from commandbus.postgres.outbox import cluster_backend

        backend = cluster_backend(pool, topology, url)
    else:
        backend = PostgresBackend(pool)
    try:
        yield backend
    finally:
        await backend.close()
        await pool.close()


@asynccontextmanager
async def connect_for(
    ctx: click.Context, domain: str | None, max_size: int = 4
) -> AsyncIterator[Any]:
    """``connect`` to the database of ``domain`` (``CliState.database_url_for``), as a
    cluster of ``--topology`` when one is given."""
    cli_state = state(ctx)
    async with connect(
        cli_state.database_url_for(domain), max_size, cli_state.topology()
    ) as backend:
        yield backend


# -- params --------------------------------------------------------------------------------


if TYPE_CHECKING:  # click >= 8.2 types ParamType generically; older versions do not
    _UUIDParamBase = click.ParamType[UUID, Any]
    _JsonParamBase = click.ParamType[dict[str, Any], Any]
else:
    _UUIDParamBase = _JsonParamBase = click.ParamType


class UUIDParam(_UUIDParamBase):
    name = "uuid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> UUID:
        if isinstance(value, UUID):
            return value
        try:
            return UUID(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a valid UUID", param, ctx)


class JsonObjectParam(_JsonParamBase):
    name = "json"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc.msg} at position {exc.pos}): {value!r}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(
                f"a JSON object is required (e.g. '{{\"ok\": true}}'), got {value!r}", param, ctx
            )
        return parsed


UUID_PARAM = UUIDParam()
JSON_OBJECT = JsonObjectParam()
STATUS_CHOICE = click.Choice([s.value for s in CommandStatus], case_sensitive=False)


# -- output --------------------------------------------------------------------------------

_STATUS_STYLES = {
    "PENDING": "cyan",
    "IN_PROGRESS": "blue",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELED": "yellow",
    "IN_TROUBLESHOOTING_QUEUE": "magenta",
}

_EVENT_STYLES = {
    "COMPLETED": "green",
    "OPERATOR_COMPLETE": "green",
    "FAILED": "red",
    "BUSINESS_RULE_FAILED": "red",
    "RETRY_SCHEDULED": "yellow",
    "RETRY_EXHAUSTED": "magenta",
    "MOVED_TO_TSQ": "magenta",
    "OPERATOR_RETRY": "cyan",
    "OPERATOR_CANCEL": "yellow",
}


#: Width of output that does not go to a terminal (a pipe, a file, CI logs), unless
#: COLUMNS says otherwise: wide enough that tables of ids never wrap.
PIPE_WIDTH = 160


def _width(stream: Any) -> int | None:
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None  # rich finds the terminal's width (or uses COLUMNS)
    return PIPE_WIDTH


def console() -> Console:
    return Console(soft_wrap=True, highlight=False, width=_width(sys.stdout))


def err_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False, width=_width(sys.stderr))


def status_text(status: object) -> Text:
    value = getattr(status, "value", str(status))
    return Text(value, style=_STATUS_STYLES.get(value, ""))


def event_text(event: object) -> Text:
    value = getattr(event, "value", str(event))
    return Text(value, style=_EVENT_STYLES.get(value, ""))


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_short_time(value: datetime | None) -> str:
    """``MM-DD HH:MM:SS`` in local time, for listings."""
    if value is None:
        return ""
    return value.astimezone().strftime("%m-%d %H:%M:%S")


def compact_json(value: object, limit: int | None = None) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def new_table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", header_style="bold")


@dataclass
class Column:
    """A column of a listing: ``drop`` orders which go first when the terminal is narrow
    (higher goes first; 0 is never dropped)."""

    header: str
    cells: list[str | Text]
    drop: int = 0
    justify: Literal["left", "right"] = "left"

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(str(c)) for c in self.cells)])


def listing(title: str, columns: list[Column], width: int) -> Table:
    """A borderless table of ``columns`` that fits ``width``: optional columns are left
    out, least important first, until the rest fits (ids are never cut)."""
    shown = list(columns)
    for candidate in sorted((c for c in columns if c.drop), key=lambda c: -c.drop):
        if sum(c.width + 3 for c in shown) <= width:
            break
        shown.remove(candidate)
    table = Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for column in shown:
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=column.drop == 0,
            overflow="fold",
        )
    rows = len(columns[0].cells) if columns else 0
    for index in range(rows):
        table.add_row(*(c.cells[index] for c in shown))
    return table


def to_jsonable(value: Any) -> Any:
    """Dataclasses / enums / UUIDs / datetimes to plain JSON values."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def windows_event_loop_policy() -> None:
    """psycopg's async mode needs the selector event loop on Windows."""
    if sys.platform == "win32":  # pragma: no cover
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())


def import_target(app: str, example: str) -> Any:
    """Import ``MODULE:ATTRIBUTE`` (``--app``); the current directory is importable, as for
    ``python -m``. Errors are ``click.BadParameter`` naming what is wrong."""
    module_name, sep, attribute = app.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            f"{app!r}: use MODULE:ATTRIBUTE, e.g. {example!r}", param_hint="--app"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import module {module_name!r} (is it on PYTHONPATH?)", param_hint="--app"
            ) from None
        raise
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="--app"
            ) from None
    return target
