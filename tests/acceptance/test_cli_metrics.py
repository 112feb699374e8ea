"""``commandbus worker run --metrics-port``: a real worker process serving /metrics."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from uuid import uuid4

from tests.cli_support import cli_environment

from commandbus import CommandBus
from commandbus.postgres import PostgresBackend

APP = textwrap.dedent(
    """
    from commandbus import HandlerRegistry

    registry = HandlerRegistry()


    @registry.handler("shop", "Pay")
    async def pay(command, ctx):
        return {"paid": True}
    """
)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


async def test_worker_run_serves_prometheus_metrics_on_the_given_port(
    pg_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "payapp.py").write_text(APP)
    environ = cli_environment()
    environ["DATABASE_URL"] = pg_dsn
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commandbus",
        "worker",
        "run",
        "--app",
        "payapp:registry",
        "--poll-interval",
        "0.2",
        "--metrics-port",
        "0",
        "--no-progress",
        cwd=tmp_path,
        env=environ,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None:
            assert time.monotonic() < deadline, "no metrics address announced"
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "the worker exited early"
            found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
            port = int(found.group(1)) if found else None
        backend = await PostgresBackend.connect(pg_dsn, min_size=1, max_size=2)
        try:
            bus = CommandBus(backend)
            for _ in range(3):
                await bus.send("shop", "Pay", uuid4(), {})
        finally:
            await backend.close()
        url = f"http://127.0.0.1:{port}/metrics"
        wanted = 'commandbus_commands_completed_total{command_type="Pay",domain="shop"} 3.0'
        deadline = time.monotonic() + 30
        while wanted not in (text := await asyncio.to_thread(fetch, url)):
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.2)
        assert "commandbus_handler_duration_seconds_bucket" in text
        assert 'commandbus_queue_depth{queue="shop__commands"}' in text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
