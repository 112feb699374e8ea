"""Server settings that slow the queues down over time are named when a worker or a
router starts: with autovacuum off nothing vacuums the queue tables (the soak of
docs/performance.md: the server's CPU per command 3.7x after 1,000,000 commands). A
throw-away cluster of its own, whose autovacuum the test turns off and on again."""

from __future__ import annotations

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


def set_autovacuum(url: str, on: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER SYSTEM SET autovacuum = on" if on else "ALTER SYSTEM SET autovacuum = off"
        )
        conn.execute("SELECT pg_reload_conf()")


async def test_autovacuum_off_is_named_when_a_consumer_starts(
    server: PgCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    set_autovacuum(server.url, True)
    backend = await PostgresBackend.connect(server.url, min_size=1, max_size=2)
    try:
        assert await server_warnings(backend.pool) == []
        set_autovacuum(server.url, False)
        await backend.pool.check()  # connections that see the reloaded setting
        [warning] = await server_warnings(backend.pool)
        assert "autovacuum is off" in warning and "queue" in warning
        await refuse_stale_schema(backend)  # the schema is current: it only warns
        assert "warning: autovacuum is off" in capsys.readouterr().err
        set_autovacuum(server.url, True)
        await backend.pool.check()
        assert await server_warnings(backend.pool) == []
    finally:
        await backend.close()
