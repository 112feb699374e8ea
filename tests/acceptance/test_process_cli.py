"""``commandbus process list|show|replay`` run as a user runs them: ``python -m commandbus``
in a subprocess, against a fresh database with StatementReport processes in it.

This module is also the ``--app`` the replay command loads: ``MANAGERS`` (the example as
it is) and ``CHANGED`` (a manager whose render step writes another state field).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from examples.statement_report import StatementReportProcess, StatementReportState
from examples.statement_report import StatementReportStep as Step
from examples.statement_report.handlers import register_statement_handlers
from psycopg_pool import AsyncConnectionPool
from tests.cli_support import cli_environment

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.models import Reply, ReplyOutcome
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter

pytestmark = pytest.mark.acceptance

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.test_process_cli"

MANAGERS = [StatementReportProcess]


class RenderWritesAnotherField(StatementReportProcess):
    def update_state(self, state: StatementReportState, step: Step, reply: Reply) -> None:
        # FAILED replies reach update_state too; a render result is a SUCCESS reply's.
        if step is Step.RENDER and reply.outcome is ReplyOutcome.SUCCESS:
            state.aggregated_data_path = (reply.data or {}).get("result_path")
            return
        super().update_state(state, step, reply)


def CHANGED(bus: CommandBus) -> dict[str, StatementReportProcess]:
    return {"StatementReport": RenderWritesAnotherField(bus)}


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    environ = cli_environment()
    environ["COLUMNS"] = "200"
    environ["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "commandbus", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


async def populate(pool: AsyncConnectionPool[Any]) -> list[UUID]:
    """Three reports: two complete, one stays waiting for its query."""
    backend = PostgresBackend(pool)
    bus = CommandBus(backend)
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    ids = []
    for accounts in (["A-1"], ["A-2", "A-3"]):
        ids.append(
            await manager.start(
                {
                    "from_date": "2025-01-01",
                    "to_date": "2025-01-31",
                    "account_list": accounts,
                    "output_type": "pdf",
                }
            )
        )
    worker = Worker(backend, "reporting", registry)
    router = ProcessReplyRouter(backend, managers=[manager])
    while await worker.drain() + await router.drain():
        pass
    ids.append(
        await manager.start(
            {
                "from_date": "2025-02-01",
                "to_date": "2025-02-28",
                "account_list": ["A-4"],
                "output_type": "csv",
            }
        )
    )
    return ids


async def test_list_and_show(pg_pool: AsyncConnectionPool[Any], pg_dsn: str) -> None:
    done, other, waiting = await populate(pg_pool)

    listed = cli("process", "list", dsn=pg_dsn)
    assert listed.returncode == 0, listed.stderr
    assert "Processes (3 shown" in listed.stdout
    for pid in (done, other, waiting):
        assert str(pid) in listed.stdout
    assert listed.stdout.count("COMPLETED") == 2

    only_waiting = cli(
        "process", "list", "--domain", "reporting", "--status", "waiting", "--json", dsn=pg_dsn
    )
    assert only_waiting.returncode == 0, only_waiting.stderr
    rows = json.loads(only_waiting.stdout)
    assert [r["process_id"] for r in rows] == [str(waiting)]
    assert rows[0]["current_step"] == "statement_query"

    none = cli("process", "list", "--type", "Nope", dsn=pg_dsn)
    assert none.returncode == 0 and "No processes match." in none.stdout

    shown = cli("process", "show", "--domain", "reporting", str(done), dsn=pg_dsn)
    assert shown.returncode == 0, shown.stderr
    for needle in (
        f"Process {done}",
        "COMPLETED",
        "Audit trail (3 commands)",
        "StatementQuery",
        "StatementDataAggregation",
        "StatementRender",
        "s3://statements",
    ):
        assert needle in shown.stdout, (needle, shown.stdout)

    missing = cli("process", "show", "--domain", "reporting", str(UUID(int=1)), dsn=pg_dsn)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert str(UUID(int=1)) in missing.stderr


async def test_replay_check(pg_pool: AsyncConnectionPool[Any], pg_dsn: str) -> None:
    done, other, waiting = await populate(pg_pool)

    same = cli("process", "replay", "--check", "--app", f"{APP}:MANAGERS", dsn=pg_dsn)
    changed = cli("process", "replay", "--check", "--app", f"{APP}:CHANGED", dsn=pg_dsn)
    waiting_only = cli(
        "process",
        "replay",
        "--check",
        "--app",
        f"{APP}:CHANGED",
        "--process-type",
        "StatementReport",
        "--status",
        "waiting",
        dsn=pg_dsn,
    )
    for result in (same, changed, waiting_only):
        assert "Traceback" not in result.stderr, result.stderr
        assert "Replayed" in result.stdout, result.stdout
    shown = cli("process", "replay", "--app", f"{APP}:MANAGERS", "--progress", dsn=pg_dsn)
    assert shown.returncode == 0, shown.stderr
    assert "Replaying processes" in shown.stderr and "3/3" in shown.stderr
    as_json = cli("process", "replay", "--app", f"{APP}:CHANGED", "--json", dsn=pg_dsn)
    assert as_json.returncode == 0, as_json.stderr  # without --check: a report, exit 0
    report = json.loads(as_json.stdout)
    assert report["replayed"] == 3
    assert report["not_replayable"] == []

    # The manager as it is reproduces every stored process, from its stored start input.
    assert same.returncode == 0, (same.stdout, same.stderr)
    assert "Replayed 3 process(es): 3 reproduced" in same.stdout
    assert "MISMATCH" not in same.stdout

    # The changed manager: the two completed processes differ at their render step.
    assert report["reproduced"] == 1
    assert {m["process_id"] for m in report["mismatches"]} == {str(done), str(other)}
    assert {m["field"] for m in report["mismatches"]} == {"state.aggregated_data_path"}
    assert changed.returncode == 1, (changed.stdout, changed.stderr)
    assert "2 process(es) the current code does not reproduce" in changed.stdout
    mismatch_lines = [line for line in changed.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatch_lines) == 2
    for pid, line in zip(sorted((done, other), key=str), sorted(mismatch_lines), strict=True):
        assert line.startswith(f"MISMATCH StatementReport process {pid}"), line
    assert all("at step statement_render" in line for line in mismatch_lines)
    assert all("state.aggregated_data_path" in line for line in mismatch_lines)
    assert str(waiting) not in "\n".join(mismatch_lines)

    # The waiting process never reached the changed step: the check passes for it.
    assert waiting_only.returncode == 0, (waiting_only.stdout, waiting_only.stderr)
    assert "Replayed 1 process(es): 1 reproduced" in waiting_only.stdout


async def test_replay_check_reports_processes_without_a_stored_start_input(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    done, _other, _waiting = await populate(pg_pool)
    # A process started before migration 003 has no start input stored.
    async with pg_pool.connection() as conn:
        await conn.execute(
            "UPDATE commandbus.process SET initial_data = NULL WHERE process_id = %s", (done,)
        )
    result = cli("process", "replay", "--check", "--app", f"{APP}:MANAGERS", dsn=pg_dsn)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "Replayed 3 process(es): 2 reproduced" in result.stdout
    assert "1 process(es) cannot be replayed" in result.stderr
    assert "initial_data" in result.stderr


def test_replay_needs_an_app() -> None:
    result = cli("process", "replay", "--app", "nowhere_module:managers", dsn="postgresql://x")
    assert result.returncode == 2
    assert "cannot import module 'nowhere_module'" in result.stderr
