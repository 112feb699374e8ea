"""The embedded PostgreSQL (``pgserver``): boots a real server in a local directory, also
as root, and the URL resolution around it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from commandbus import embedded
from commandbus.embedded import EmbeddedPostgresError, database_url, start_embedded
from commandbus.postgres import apply_schema, verify_schema

pytest.importorskip("pgserver", reason="the embedded extra (pgserver) is not installed")


@pytest.fixture
def own_tmp_dir() -> Iterator[Path]:
    """A temporary directory outside pytest's: a concurrently starting pytest session of
    the same user prunes old basetemp directories, which could pull the data directory
    away from under a server that is booting."""
    with tempfile.TemporaryDirectory(prefix="commandbus-embedded-") as name:
        yield Path(name)


async def test_embedded_server_boots_and_runs_the_schema(own_tmp_dir: Path) -> None:
    data_dir = own_tmp_dir / "pgdata"
    server = start_embedded(data_dir)
    try:
        assert (data_dir / "PG_VERSION").exists()
        assert start_embedded(data_dir) is server  # one server per directory
        async with await psycopg.AsyncConnection.connect(server.uri, autocommit=True) as conn:
            cur = await conn.execute(b"SELECT current_setting('server_version_num')::int")
            row = await cur.fetchone()
            assert row is not None and row[0] >= 140000
        assert await apply_schema(server.uri) != []
        assert await verify_schema(server.uri) == []
    finally:
        server.stop()
    # stopped: nothing answers on its socket any more
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.uri, connect_timeout=2).close()


def test_database_url_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://generic/db")
    monkeypatch.setenv("COMMANDBUS_DATABASE_URL", "postgresql://specific/db")
    assert database_url(tmp_path / "unused") == "postgresql://specific/db"
    monkeypatch.delenv("COMMANDBUS_DATABASE_URL")
    assert database_url(tmp_path / "unused") == "postgresql://generic/db"
    assert not (tmp_path / "unused").exists()


def test_missing_pgserver_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("COMMANDBUS_DATABASE_URL", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "pgserver", None)
    monkeypatch.setattr(embedded, "_servers", {})
    with pytest.raises(EmbeddedPostgresError, match=r"commandbus\[embedded\]"):
        database_url(tmp_path / "pgdata")
