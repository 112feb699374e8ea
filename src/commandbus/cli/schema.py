"""``commandbus schema sql|apply|verify``."""

from __future__ import annotations

import click

from commandbus.cli._common import connect, console, err_console, redact, run, state
from commandbus.cli._progress import progress_console, progress_option


@click.group("schema")
def schema_group() -> None:
    """Create and check the database schema (tables in schema ``commandbus``)."""


@schema_group.command("sql")
def schema_sql_cmd() -> None:
    """Print the DDL of the schema, without connecting to a database.

    Pipe it into psql or your migration tool: commandbus schema sql | psql "$DATABASE_URL".
    Like `schema apply` it is idempotent: each migration runs only if the database's
    ledger does not record it yet, so running it again changes nothing.
    """
    from commandbus.postgres.schema import schema_sql

    click.echo(schema_sql().rstrip("\n"))


@schema_group.command("apply")
@progress_option()
@click.pass_context
def schema_apply_cmd(ctx: click.Context, progress: bool | None) -> None:
    """Create or upgrade the schema (idempotent; safe to run from several machines)."""
    url = state(ctx).database_url()
    shown = progress_console(progress)

    def starting(filename: str) -> None:
        if shown is not None:  # a migration can take a while on a large database
            shown.print(f"applying {filename} …")

    async def apply() -> list[str]:
        from commandbus.postgres.schema import apply_schema

        async with connect(url, max_size=1) as backend, backend.pool.connection() as conn:
            return list(await apply_schema(conn, on_migration=starting))

    applied = run(apply())
    out = console()
    if applied:
        out.print(f"[green]Schema applied[/] on {redact(url)}: {', '.join(applied)}")
    else:
        out.print(f"[green]Schema already up to date[/] on {redact(url)}")


@schema_group.command("verify")
@click.pass_context
def schema_verify_cmd(ctx: click.Context) -> None:
    """Check that the schema is complete and current; exit 1 listing any problem."""
    url = state(ctx).database_url()

    async def verify() -> list[str]:
        from commandbus.postgres.schema import verify_schema

        async with connect(url, max_size=1) as backend, backend.pool.connection() as conn:
            return list(await verify_schema(conn))

    problems = run(verify())
    if problems:
        err = err_console()
        err.print(f"[red]Schema problems[/] on {redact(url)}:")
        for problem in problems:
            err.print(f"  - {problem}", markup=False)
        err.print("Run `commandbus schema apply` to create or upgrade the schema.")
        raise SystemExit(1)
    console().print(f"[green]Schema OK[/] on {redact(url)}")
