"""The process part of ``make demo``: StatementReport processes after the command demo.

Run as a user runs it (``python -m commandbus.demo`` on a fresh database), checked in its
output and in the database; and once in memory, where its outcome is checked exactly.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from examples.statement_report.demo import TERMINAL, run_process_demo
from rich.console import Console
from tests.cli_support import cli_environment

from commandbus.memory import InMemoryBackend
from commandbus.postgres import PostgresBackend
from commandbus.process import AuditEntryKind, ProcessStatus
from commandbus.process.models import ProcessMetadata

pytestmark = pytest.mark.acceptance

REPO_ROOT = Path(__file__).resolve().parents[2]

PROCESSES = 240
#: What the seeded plan does to the 240 processes (see FAILURES in the demo).
EXPECTED = {"COMPLETED": 223, "FAILED": 14, "COMPENSATED": 3}


async def _run_demo(dsn: str) -> tuple[str, float]:
    environ = cli_environment()
    environ.update(DATABASE_URL=dsn, COLUMNS="100")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commandbus.demo",
        cwd=REPO_ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    elapsed = time.monotonic() - started
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stdout, elapsed


def _section(stdout: str, title: str) -> str:
    assert title in stdout, stdout
    return stdout[stdout.index(title) :]


async def _processes(backend: PostgresBackend) -> list[ProcessMetadata[Any, Any]]:
    return await backend.processes.find_by_status("reporting", list(ProcessStatus))


async def test_make_demo_runs_the_process_demo_on_a_fresh_database(
    pg_dsn: str, pg_backend: PostgresBackend
) -> None:
    stdout, elapsed = await _run_demo(pg_dsn)

    # The live view, the operator's TSQ actions, the table by status, one audit trail.
    assert f"Run {PROCESSES} StatementReport processes" in stdout
    assert f"{PROCESSES}/{PROCESSES} started, {PROCESSES} finished" in stdout
    operator = _section(stdout, "An operator works the troubleshooting queue")
    for text in ("MISSING_FX_RATE", "ARCHIVE_OFFLINE", "TEMPLATE_MISSING"):
        assert text in operator, text
    assert "retried 4 commands" in operator
    assert "completed 2 by hand" in operator
    assert "canceled 3" in operator
    table = _section(stdout, "Processes by status")
    for status, count in EXPECTED.items():
        assert re.search(rf"│ {status}\s+│\s+{count} │", table), (status, table)
    assert re.search(rf"│ total\s+│\s+{PROCESSES} │", table), table
    assert "Expected" not in table  # the demo's own check of its plan
    trail = _section(stdout, "Audit trail of a compensated process")
    assert "status COMPENSATED" in trail
    rows = [line for line in trail.splitlines() if re.match(r"│ \d+ │", line)]
    commands = [re.split(r"\s*│\s*", row)[3] for row in rows]
    assert commands == [
        "StatementQuery",
        "StatementDataAggregation",
        "StatementRender",
        "DeleteAggregatedData",
        "DeleteQueryResult",
    ], trail
    assert "CANCELED" in rows[2]
    assert "compensation" in trail
    assert "Demo finished" in stdout
    # The command part and the process part together, readable in a terminal.
    assert elapsed < 60, elapsed

    # In the database: the demo's processes, all finished, as the output says.
    processes = await _processes(pg_backend)
    assert len(processes) == PROCESSES
    assert {p.status for p in processes} <= TERMINAL
    assert Counter(p.status.value for p in processes) == EXPECTED
    compensated = [p for p in processes if p.status is ProcessStatus.COMPENSATED]
    shown = trail.split("\n", 1)[0].strip().rsplit(" ", 1)[-1]
    assert shown in {str(p.process_id) for p in compensated}
    audit = await pg_backend.processes.get_audit_trail("reporting", compensated[0].process_id)
    assert [e.kind for e in audit][-2:] == [AuditEntryKind.COMPENSATION] * 2
    assert await pg_backend.commands.count_troubleshooting("reporting", None) == 0


async def test_a_second_run_counts_only_its_own_processes(
    pg_dsn: str, pg_backend: PostgresBackend
) -> None:
    """The process domain is fixed: a rerun on the same database tells the same story."""
    output = io.StringIO()
    console = Console(file=output, width=100)
    first = await run_process_demo(pg_backend, console, wave_interval=0, slow_handlers=False)
    second = await run_process_demo(pg_backend, console, wave_interval=0, slow_handlers=False)
    assert first.statuses == second.statuses == EXPECTED
    assert not set(first.process_ids) & set(second.process_ids)
    processes = await _processes(pg_backend)
    assert len(processes) == 2 * PROCESSES
    assert {p.status for p in processes} <= TERMINAL


async def test_the_process_demo_tells_the_story_it_claims() -> None:
    output = io.StringIO()
    outcome = await run_process_demo(
        InMemoryBackend(),
        Console(file=output, width=100),
        processes=60,
        wave_interval=0,
        slow_handlers=False,
    )
    assert outcome.statuses == outcome.expected == {"COMPLETED": 43, "FAILED": 14, "COMPENSATED": 3}
    assert outcome.operator_actions == {"tsq_retry": 4, "tsq_complete": 2, "tsq_cancel": 3}
    assert [(e.command_type, e.reply_outcome and e.reply_outcome.value) for e in outcome.trail] == [
        ("StatementQuery", "SUCCESS"),
        ("StatementDataAggregation", "SUCCESS"),
        ("StatementRender", "CANCELED"),
        ("DeleteAggregatedData", "SUCCESS"),
        ("DeleteQueryResult", "SUCCESS"),
    ]
