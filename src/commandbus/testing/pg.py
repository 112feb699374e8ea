"""Fast real-database tests: one template database per session, one clone per test.

The template gets the commandbus schema once (``apply_schema``); each test then gets its
own database with ``CREATE DATABASE … TEMPLATE …`` (a copy of a few megabytes, tens of
milliseconds), dropped afterwards. Which server: ``COMMANDBUS_DATABASE_URL`` /
``DATABASE_URL`` if set, else the embedded server (``commandbus.embedded``).

In a ``conftest.py``::

    @pytest_asyncio.fixture(scope="session")
    async def pg_template():
        template = await TemplateDatabase.create(resolve_server_dsn())
        yield template
        await template.close()

    @pytest_asyncio.fixture
    async def pg_dsn(pg_template):
        async with pg_template.database() as dsn:
            yield dsn

or simply ``async with fresh_backend() as backend:`` (a process-wide template, dropped
at exit). Database names are generated here, never taken from input.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from commandbus.embedded import configured_url, start_embedded
from commandbus.postgres.backend import PostgresBackend
from commandbus.postgres.schema import apply_schema


def server_reachable(dsn: str, timeout: float = 2.0) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))):
            return True
    except psycopg.Error:
        return False


def resolve_server_dsn(data_dir: Path | None = None) -> str:
    """The server tests run against (see the module docstring)."""
    # No probing for a "usual" local server: without a URL the suite must not create
    # databases on whatever happens to listen on 5432. Explicit, or embedded.
    url = configured_url()
    if url is not None:
        return url
    return start_embedded(data_dir).uri


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    return make_conninfo(dsn, dbname=dbname)


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("dbname") or "")


class TemplateDatabase:
    """A template database with the schema applied, and the clones made from it.

    Each administrative statement uses a short-lived connection to the server's own
    database, so one instance works from any event loop.
    """

    def __init__(self, server_dsn: str, name: str) -> None:
        self.server_dsn = server_dsn
        self.name = name
        self.dsn = with_dbname(server_dsn, name)
        self._clones: set[str] = set()

    @classmethod
    async def create(cls, server_dsn: str, prefix: str = "cbtest") -> TemplateDatabase:
        """Create the template (unique name) on the server and apply the schema to it."""
        template = cls(server_dsn, f"{prefix}_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        await template._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template.name)))
        try:
            await apply_schema(template.dsn)
        except BaseException:
            await template.close()
            raise
        return template

    async def _admin(self, statement: sql.Composed) -> None:
        async with await psycopg.AsyncConnection.connect(self.server_dsn, autocommit=True) as conn:
            await conn.execute(statement)

    def _new_name(self, kind: str) -> str:
        return f"{self.name.replace('_tpl_', f'_{kind}_')}_{uuid.uuid4().hex[:8]}"

    async def clone(self) -> str:
        """A new database copied from the template; returns its DSN."""
        name = self._new_name("db")
        await self._admin(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.name)
            )
        )
        self._clones.add(name)
        return with_dbname(self.server_dsn, name)

    async def create_empty(self) -> str:
        """A new database without the schema (for migration tests); returns its DSN."""
        name = self._new_name("empty")
        await self._admin(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        )
        self._clones.add(name)
        return with_dbname(self.server_dsn, name)

    async def drop(self, dsn: str) -> None:
        """Drop a database made by this template, closing connections a test left open."""
        name = dbname_of(dsn)
        if name not in self._clones:
            raise ValueError(f"database {name!r} was not created by this template")
        self._clones.discard(name)
        await self._drop(name)

    async def _drop(self, name: str) -> None:
        await self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    @asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A clone for the length of the block."""
        dsn = await self.clone()
        try:
            yield dsn
        finally:
            await self.drop(dsn)

    async def close(self) -> None:
        """Drop the remaining clones and the template."""
        for name in list(self._clones):
            await self._drop(name)
        self._clones.clear()
        await self._drop(self.name)

    def close_sync(self) -> None:
        """``close()`` without an event loop (for ``atexit``)."""
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            for name in [*self._clones, self.name]:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        self._clones.clear()


_shared_template: TemplateDatabase | None = None


async def shared_template() -> TemplateDatabase:
    """A template for this process, built on first use and dropped at exit."""
    global _shared_template
    if _shared_template is None:
        template = await TemplateDatabase.create(resolve_server_dsn())
        atexit.register(template.close_sync)
        _shared_template = template
    return _shared_template


@asynccontextmanager
async def fresh_backend(min_size: int = 1, max_size: int = 8) -> AsyncIterator[PostgresBackend]:
    """A ``PostgresBackend`` (owning its pool) on a new database cloned from the
    process-wide template; the database is dropped afterwards."""
    template = await shared_template()
    async with template.database() as dsn:
        backend = await PostgresBackend.connect(dsn, min_size=min_size, max_size=max_size)
        try:
            yield backend
        finally:
            await backend.close()


async def make_due(backend: PostgresBackend, seconds: float) -> None:
    """Move every queue message's visibility deadline ``seconds`` back: to workers,
    routers and timers that is what the passing of ``seconds`` means (the database keeps
    time with its own clock, which tests cannot move)."""
    async with backend.pool.connection() as conn:
        await conn.execute(
            b"UPDATE commandbus.queue_message SET vt = vt - make_interval(secs => %s)",
            (float(seconds),),
        )


async def shift_stored_times(conn: psycopg.AsyncConnection[Any], seconds: float) -> None:
    """Move every timestamp stored in the ``commandbus`` schema ``seconds`` into the
    past, which to the queues and stores looks exactly like ``seconds`` passing (the
    database keeps time with its own clock, which tests cannot move).

    Table and column names come from the catalog, not from input.
    """
    cur = await conn.execute(
        b"SELECT table_name, array_agg(column_name::text ORDER BY column_name)"
        b" FROM information_schema.columns"
        b" WHERE table_schema = 'commandbus' AND data_type = 'timestamp with time zone'"
        b" AND table_name <> 'schema_migrations' AND is_generated = 'NEVER'"
        # a partition's rows are moved through its parent (the audit trail's weeks)
        b" AND NOT EXISTS (SELECT 1 FROM pg_inherits i"
        b" WHERE i.inhrelid = ('commandbus.' || quote_ident(table_name))::regclass)"
        b" GROUP BY table_name ORDER BY table_name"
    )
    for table, columns in await cur.fetchall():
        assignments = sql.SQL(", ").join(
            sql.SQL("{col} = {col} - make_interval(secs => {secs})").format(
                col=sql.Identifier(column), secs=sql.Placeholder("secs")
            )
            for column in columns
        )
        await conn.execute(
            sql.SQL("UPDATE {table} SET {assignments}").format(
                table=sql.Identifier("commandbus", table), assignments=assignments
            ),
            {"secs": float(seconds)},
        )
