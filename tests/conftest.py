"""Shared fixtures. The real-database ones are lazy: unit tests never touch a server.

- ``pg_template`` (session): a template database with the schema applied, built once.
- ``pg_dsn``: a fresh database cloned from the template for one test, dropped after.
- ``pg_pool``: an open ``psycopg_pool.AsyncConnectionPool`` on ``pg_dsn``.
- ``pg_backend``: a ``PostgresBackend`` on ``pg_pool``.

Server: ``COMMANDBUS_DATABASE_URL`` / ``DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import TemplateDatabase, resolve_server_dsn

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture(scope="session")
async def pg_template() -> AsyncIterator[TemplateDatabase]:
    template = await TemplateDatabase.create(
        resolve_server_dsn(REPO_ROOT / ".commandbus" / "pgdata")
    )
    try:
        yield template
    finally:
        await template.close()


@pytest_asyncio.fixture
async def pg_dsn(pg_template: TemplateDatabase) -> AsyncIterator[str]:
    async with pg_template.database() as dsn:
        yield dsn


@pytest_asyncio.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_dsn, min_size=1, max_size=8, open=False)
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def pg_backend(pg_pool: AsyncConnectionPool[Any]) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(pg_pool)
    try:
        yield backend
    finally:
        await backend.close()
