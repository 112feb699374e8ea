"""Server settings that slow the queues down over time are named when a worker or a
router starts: with autovacuum off nothing vacuums the queue tables (the soak of
docs/performance.md: the server's CPU per command 3.7x after 1,000,000 commands). A
throw-away cluster of its own, whose autovacuum the test turns off and on again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from chaos.pgcluster import PgCluster

from commandbus.cli._running import refuse_stale_schema
from commandbus.postgres import PostgresBackend, apply_schema
from commandbus.postgres.schema import server_warnings

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        await apply_schema(cluster.url)
        yield cluster
    finally:
        cluster.teardown()


async def set_autovacuum(url: str, backend: PostgresBackend, on: bool) -> None:
    """Turn autovacuum on or off, and wait until the backend's connection sees it: a
    reload reaches the server's processes asynchronously."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER SYSTEM SET autovacuum = on" if on else "ALTER SYSTEM SET autovacuum = off"
        )
        conn.execute("SELECT pg_reload_conf()")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        async with backend.pool.connection() as conn:
            cur = await conn.execute("SELECT current_setting('autovacuum')")
            row = await cur.fetchone()
        if row is not None and row[0] == ("on" if on else "off"):
            return
        assert loop.time() < deadline, "the server's processes did not reload"
        await asyncio.sleep(0.02)  # the reload is the server's: real time


async def test_autovacuum_off_is_named_when_a_consumer_starts(
    server: PgCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # One connection: the one whose view of the setting the test waits for.
    backend = await PostgresBackend.connect(server.url, min_size=1, max_size=1)
    try:
        await set_autovacuum(server.url, backend, True)
        assert await server_warnings(backend.pool) == []
        await set_autovacuum(server.url, backend, False)
        [warning] = await server_warnings(backend.pool)
        assert "autovacuum is off" in warning and "queue" in warning
        await refuse_stale_schema(backend)  # the schema is current: it only warns
        assert "warning: autovacuum is off" in capsys.readouterr().err
        await set_autovacuum(server.url, backend, True)
        assert await server_warnings(backend.pool) == []
    finally:
        await backend.close()
