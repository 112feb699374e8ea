"""The embedded PostgreSQL (``pgserver``): boots a real server in a local directory, also
as root, and the URL resolution around it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_console_stopped_by_a_signal_exits_cleanly_and_stops_its_embedded_server(
    own_tmp_dir: Path, stop: signal.Signals
) -> None:
    # uvicorn re-raises the SIGTERM it shut down on; with the default action the process
    # died there, skipping the exit hooks that stop the embedded server (a worker or a
    # router exits normally on SIGTERM and stops it).
    data_dir = own_tmp_dir / "pgdata"
    env = {k: v for k, v in os.environ.items() if k not in embedded.URL_VARIABLES}
    env["COMMANDBUS_CONSOLE_TOKEN"] = "a-token"
    argv = [sys.executable, "-m", "commandbus", "--data-dir", str(data_dir), "console"]
    with subprocess.Popen(
        [*argv, "--port", "0", "--domain", "payments"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as console:
        try:
            assert console.stderr is not None
            for line in console.stderr:  # the line printed once it serves
                if "commandbus console on" in line:
                    break
            else:
                pytest.fail(f"the console exited with {console.wait()} before serving")
            assert (data_dir / "postmaster.pid").exists()
            console.send_signal(stop)
            assert console.wait(timeout=60) == 0
        finally:
            if console.poll() is None:
                console.kill()
    assert not (data_dir / "postmaster.pid").exists()  # the server stopped
