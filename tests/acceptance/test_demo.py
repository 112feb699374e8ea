"""The demo (``make demo`` = ``python -m commandbus.demo``) runs as a user runs it."""

from __future__ import annotations

import asyncio
import io
import sys
import time

import pytest
from rich.console import Console
from tests.cli_support import cli_environment

from commandbus.demo import run_command_demo
from commandbus.memory import InMemoryBackend

pytestmark = pytest.mark.acceptance


async def test_demo_runs_to_the_end_on_a_fresh_database(pg_dsn: str) -> None:
    environ = cli_environment()
    environ.update(DATABASE_URL=pg_dsn, COLUMNS="100")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commandbus.demo",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    elapsed = time.monotonic() - started
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    # The story: a retry, the TSQ and an operator, a business-rule failure, a summary.
    for text in (
        "Send 300 commands",
        "processing",
        "300/300",
        "RETRY_SCHEDULED",
        "MOVED_TO_TSQ",
        "OPERATOR_RETRY",
        "BUSINESS_RULE_FAILED",
        "OUT_OF_STOCK",
        "commands by status",
        "throughput",
        "Demo finished",
    ):
        assert text in stdout, text
    # Readable in a terminal in well under half a minute (generous for a loaded CI box).
    assert elapsed < 60, elapsed


async def test_the_command_demo_tells_the_story_it_claims() -> None:
    """The demo's outcome, checked through its return value (in memory, fast handlers)."""
    output = io.StringIO()
    outcome = await run_command_demo(
        InMemoryBackend(),
        Console(file=output, width=100),
        commands=30,
        concurrency=5,
        slow_handlers=False,
    )
    assert outcome.sent == 30
    assert outcome.statuses == {"COMPLETED": 29, "FAILED": 1}
    # One reply per command, plus the TSQ notice of the command an operator retried.
    assert outcome.replies == {"SUCCESS": 29, "FAILED": 1, "IN_TROUBLESHOOTING_QUEUE": 1}

    def events(label: str) -> list[str]:
        return [e.event_type.value for e in outcome.trails[label]]

    assert events("transient failure, then success") == [
        "SENT",
        "RECEIVED",
        "FAILED",
        "RETRY_SCHEDULED",
        "RECEIVED",
        "COMPLETED",
    ]
    assert events("troubleshooting queue, operator retry") == [
        "SENT",
        "RECEIVED",
        "FAILED",
        "MOVED_TO_TSQ",
        "OPERATOR_RETRY",
        "RECEIVED",
        "COMPLETED",
    ]
    assert events("business rule failure") == ["SENT", "RECEIVED", "BUSINESS_RULE_FAILED"]
    printed = output.getvalue()
    assert "Summary" in printed
    for cid in outcome.interesting.values():
        assert str(cid) in printed
