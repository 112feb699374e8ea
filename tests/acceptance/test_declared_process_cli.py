"""Declared processes from the command line, as a user runs it: ``commandbus process
diagram`` of a definition from ``--app`` (no database) and of live StatementReport
processes — run by the step DSL form on PostgreSQL — with their paths highlighted; and
``process replay --check`` of processes the hand-written form stored, by the declared ones.

This module is also an ``--app``: ``MANAGERS`` (the three StatementReport forms would
clash on one process type, so two processes of different types)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import register_statement_handlers
from examples.statement_report.steps import StatementReportSteps
from psycopg_pool import AsyncConnectionPool
from tests.cli_support import cli_environment
from tests.declared_examples import Approval

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter
from commandbus.process.diagram import graphviz_available

pytestmark = pytest.mark.acceptance

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.test_declared_process_cli"
STEPS_APP = "examples.statement_report.steps:StatementReportSteps"
MANAGERS = [StatementReportSteps, Approval]


def _render_in_html(step: Any) -> Any:
    if step.name != "statement_render":
        return step
    return dataclasses.replace(
        step, data=lambda s: {**step.data(s).to_dict(), "output_type": "html"}
    )


class RenderAlwaysHtml(StatementReportSteps):
    """A changed definition: replay must tell that it would send other render commands."""

    flow = tuple(_render_in_html(s) for s in StatementReportSteps.flow)


REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["A-1"],
    "output_type": "pdf",
}


def cli(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = cli_environment()
    if dsn is not None:
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


def test_a_definition_as_mermaid_and_dot_without_a_database() -> None:
    drawn = cli(
        "process", "diagram", "--app", "examples.statement_report.machine:StatementReportMachine"
    )
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("---\ntitle: StatementReport\n---\nflowchart TD\n")
    assert '(["reported"])' in drawn.stdout
    assert '[/"delete_query_result<br/>DeleteQueryResult"/]' in drawn.stdout

    dot = cli("process", "diagram", "--app", STEPS_APP, "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith('digraph "StatementReport" {')

    by_hand = cli("process", "diagram", "--app", "examples.statement_report:StatementReportProcess")
    assert by_hand.returncode == 0, by_hand.stderr
    assert "the order is decided in code" in by_hand.stdout


def test_several_managers_need_a_process_type() -> None:
    app = f"{APP}:MANAGERS"
    unclear = cli("process", "diagram", "--app", app)
    assert unclear.returncode == 2
    assert "choose one with --process-type (Approval, StatementReport)" in unclear.stderr
    chosen = cli("process", "diagram", "--app", app, "-t", "Approval")
    assert chosen.returncode == 0, chosen.stderr
    assert "title: Approval" in chosen.stdout
    missing = cli("process", "diagram")
    assert missing.returncode == 2 and "give --app" in missing.stderr


@pytest.mark.skipif(
    not graphviz_available() and not os.environ.get("COMMANDBUS_REQUIRE_GRAPHVIZ"),
    reason="Graphviz's dot is not installed (CI installs it: make graphviz)",
)
def test_files_in_every_format(tmp_path: Path) -> None:
    outputs = [tmp_path / name for name in ("flow.mmd", "flow.dot", "flow.svg", "flow.png")]
    args = [a for path in outputs for a in ("-o", str(path))]
    written = cli("process", "diagram", "--app", STEPS_APP, *args)
    assert written.returncode == 0, written.stderr
    assert outputs[0].read_text().startswith("---\ntitle: StatementReport")
    assert outputs[1].read_text().startswith('digraph "StatementReport"')
    assert outputs[2].read_bytes().startswith(b"<?xml")
    assert outputs[3].read_bytes().startswith(b"\x89PNG")
    assert written.stderr.count("wrote ") == 4


async def run_reports(pool: AsyncConnectionPool[Any]) -> tuple[UUID, UUID]:
    """One report run to completion by the DSL manager, one waiting for its query."""
    backend = PostgresBackend(pool)
    manager = StatementReportSteps(CommandBus(backend))
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    done = await manager.start(REQUEST)
    worker = Worker(backend, "reporting", registry)
    router = ProcessReplyRouter(backend, managers=[manager])
    while await worker.drain() + await router.drain():
        pass
    waiting = await manager.start(REQUEST)
    return done, waiting


async def test_a_live_process_with_its_path(pg_pool: AsyncConnectionPool[Any], pg_dsn: str) -> None:
    done, waiting = await run_reports(pg_pool)

    now = cli("process", "diagram", "-d", "reporting", str(waiting), "-a", STEPS_APP, dsn=pg_dsn)
    assert now.returncode == 0, now.stderr
    assert f"title: StatementReport {waiting} (WAITING)" in now.stdout
    assert "    class n1 current\n" in now.stdout  # n1: the query step, awaited
    assert "linkStyle 0 " in now.stdout  # start -> query

    finished = cli("process", "diagram", "-d", "reporting", str(done), "-a", STEPS_APP, dsn=pg_dsn)
    assert finished.returncode == 0, finished.stderr
    assert "(COMPLETED)" in finished.stdout
    assert "class n1,n2,n3,n4 visited" in finished.stdout  # the three steps, completed
    assert "linkStyle 0,1,2,3 " in finished.stdout

    # Without --app: the steps of its audit trail alone.
    bare = cli("process", "diagram", "-d", "reporting", str(done), "-f", "dot", dsn=pg_dsn)
    assert bare.returncode == 0, bare.stderr
    assert 'label="statement_render\\nStatementRender"' in bare.stdout
    assert "steps from the audit trail (no --app)" in bare.stdout

    unknown = cli("process", "diagram", "-d", "reporting", str(UUID(int=1)), dsn=pg_dsn)
    assert unknown.returncode == 1 and "no process 00000000-" in unknown.stderr


async def test_replay_check_by_each_declared_form(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    backend = PostgresBackend(pg_pool)
    manager = StatementReportProcess(CommandBus(backend))
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    for accounts in (["A-1"], ["A-2", "A-3"]):
        await manager.start({**REQUEST, "account_list": accounts})
    worker = Worker(backend, "reporting", registry)
    router = ProcessReplyRouter(backend, managers=[manager])
    while await worker.drain() + await router.drain():
        pass
    await manager.start(REQUEST)  # and one still waiting

    for app in (STEPS_APP, "examples.statement_report.machine:StatementReportMachine"):
        checked = cli("process", "replay", "--check", "--app", app, dsn=pg_dsn)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Replayed 3 process(es): 3 reproduced by the current code." in checked.stdout
    changed = cli("process", "replay", "--check", "--app", f"{APP}:RenderAlwaysHtml", dsn=pg_dsn)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert changed.stdout.count("MISMATCH ") == 2  # the two that rendered
