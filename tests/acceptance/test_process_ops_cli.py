"""Operating processes from the command line, as a user does: ``process cancel``,
``retry-step``, ``complete-step``, ``process list --attention``, ``process parked``,
``router run`` and ``run``, each in a ``python -m commandbus`` subprocess against a fresh
database.

This module is also the ``--app`` those commands load (``MANAGERS``, ``REGISTRY``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any
from uuid import UUID

import pytest
from examples.statement_report import StatementReportProcess
from examples.statement_report import StatementReportStep as Step
from examples.statement_report.handlers import register_statement_handlers
from psycopg_pool import AsyncConnectionPool
from tests.acceptance.test_process_cli import REPO_ROOT, cli

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.models import CommandStatus
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus

pytestmark = pytest.mark.acceptance

APP = "tests.acceptance.test_process_ops_cli"
DOMAIN = "reporting"
REPLIES = "reporting__process_replies"
REQUEST = {
    "from_date": "2025-01-01",
    "to_date": "2025-01-31",
    "account_list": ["A-1"],
    "output_type": "csv",
}


class TimedReport(StatementReportProcess):
    """The example with a 60 s timeout on its query step (default action: an operator)."""

    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return 60.0 if step is Step.QUERY else None


MANAGERS = [TimedReport]
REGISTRY = HandlerRegistry()
register_statement_handlers(REGISTRY)


def assert_ok(result: Any) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


async def timed_out(pool: AsyncConnectionPool[Any]) -> tuple[TimedReport, UUID]:
    """A process whose query step timed out (its timer made due by hand)."""
    backend = PostgresBackend(pool)
    manager = TimedReport(CommandBus(backend))
    pid = await manager.start(REQUEST)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE commandbus.queue_message SET vt = now() WHERE queue_name = %s", (REPLIES,)
        )
    await ProcessReplyRouter(backend, managers=[manager]).drain()
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.WAITING_FOR_OPERATOR
    return manager, pid


async def test_cancel_withdraws_the_waiting_command(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    backend = PostgresBackend(pg_pool)
    manager = StatementReportProcess(CommandBus(backend))
    pid = await manager.start(REQUEST)
    result = await asyncio.to_thread(
        cli, "process", "cancel", "-d", DOMAIN, str(pid), "--app", f"{APP}:MANAGERS",
        "--reason", "typo", dsn=pg_dsn,
    )  # fmt: skip
    assert_ok(result)
    assert "now CANCELED" in result.stdout
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.CANCELED
    [command] = await CommandBus(backend).query_commands(domain=DOMAIN)
    assert command.status is CommandStatus.CANCELED  # withdrawn: it will never run
    again = await asyncio.to_thread(
        cli, "process", "cancel", "-d", DOMAIN, str(pid), "--app", f"{APP}:MANAGERS", dsn=pg_dsn
    )
    assert again.returncode == 1 and "it has finished (CANCELED)" in again.stderr
    assert "Traceback" not in again.stderr


async def test_timed_out_steps_show_in_list_and_an_operator_acts(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    manager, pid = await timed_out(pg_pool)
    healthy = await manager.start(REQUEST)
    listed = await asyncio.to_thread(cli, "process", "list", "--json", dsn=pg_dsn)
    assert_ok(listed)
    attention = {row["process_id"]: row["attention"] for row in json.loads(listed.stdout)}
    assert attention[str(healthy)] is None
    assert "a step timed out" in attention[str(pid)]
    only = await asyncio.to_thread(cli, "process", "list", "--attention", dsn=pg_dsn)
    assert_ok(only)
    assert str(pid) in only.stdout and str(healthy) not in only.stdout

    retried = await asyncio.to_thread(
        cli, "process", "retry-step", "-d", DOMAIN, str(pid), "--app", f"{APP}:MANAGERS",
        "--operator", "alice", dsn=pg_dsn,
    )  # fmt: skip
    assert_ok(retried)
    assert "now WAITING" in retried.stdout
    trail = await manager.get_audit_trail(pid)
    assert [e.error_code for e in trail] == ["OPERATOR_RETRY", None]

    wrong = await asyncio.to_thread(
        cli, "process", "complete-step", "-d", DOMAIN, str(pid), "--app", f"{APP}:MANAGERS",
        "--result", '{"result_path": "s3://by-hand"}', dsn=pg_dsn,
    )  # fmt: skip
    assert wrong.returncode == 1 and "not waiting for an operator" in wrong.stderr
    _, second = await timed_out_again(pg_pool, manager, pid)
    completed = await asyncio.to_thread(
        cli, "process", "complete-step", "-d", DOMAIN, str(pid), "--app", f"{APP}:MANAGERS",
        "--result", '{"result_path": "s3://by-hand"}', dsn=pg_dsn,
    )  # fmt: skip
    assert_ok(completed)
    process = await manager.get(pid)
    assert process is not None and process.current_step is Step.AGGREGATE
    assert process.state.query_result_path == "s3://by-hand"
    assert second is not None


async def timed_out_again(
    pool: AsyncConnectionPool[Any], manager: TimedReport, pid: UUID
) -> tuple[TimedReport, UUID | None]:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE commandbus.queue_message SET vt = now() WHERE queue_name = %s", (REPLIES,)
        )
    await ProcessReplyRouter(manager.backend, managers=[manager]).drain()
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.WAITING_FOR_OPERATOR
    return manager, process.awaiting_command_id


async def test_parked_messages_are_listed_and_replayed(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    backend = PostgresBackend(pg_pool)
    manager = StatementReportProcess(CommandBus(backend))
    await backend.queue.enqueue(REPLIES, [{"not": "a reply"}])
    await ProcessReplyRouter(backend, managers=[manager]).drain()
    listed = await asyncio.to_thread(cli, "process", "parked", "list", "--json", dsn=pg_dsn)
    assert_ok(listed)
    [record] = json.loads(listed.stdout)
    assert record["reason"].startswith("malformed") and record["message"] == {"not": "a reply"}
    replayed = await asyncio.to_thread(
        cli, "process", "parked", "replay", str(record["id"]), dsn=pg_dsn
    )
    assert_ok(replayed)
    assert await backend.queue.depth(REPLIES) == 1
    missing = await asyncio.to_thread(
        cli, "process", "parked", "replay", str(record["id"]), dsn=pg_dsn
    )
    assert missing.returncode == 1 and "no parked message" in missing.stderr


def test_a_target_of_the_wrong_kind_gets_a_clear_error(pg_dsn: str) -> None:
    worker = cli("worker", "run", "--app", f"{APP}:MANAGERS", dsn=pg_dsn)
    assert worker.returncode == 2 and "Traceback" not in worker.stderr
    assert "process managers" in worker.stderr and "router run" in worker.stderr
    router = cli("router", "run", "--app", f"{APP}:REGISTRY", dsn=pg_dsn)
    assert router.returncode == 2 and "Traceback" not in router.stderr
    assert "HandlerRegistry" in router.stderr and "worker run" in router.stderr


async def run_until(pg_pool: AsyncConnectionPool[Any], pg_dsn: str, *args: str) -> str:
    """Start ``python -m commandbus *args``, wait for one process to complete, SIGTERM."""
    manager = StatementReportProcess(CommandBus(PostgresBackend(pg_pool)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMMANDBUS_")}
    environ.update(DATABASE_URL=pg_dsn, COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "commandbus", *args, "--poll-interval", "0.2",
        cwd=REPO_ROOT, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        pid = await manager.start(REQUEST)
        deadline = time.monotonic() + 60
        while True:
            process = await manager.get(pid)
            assert process is not None
            if process.status is ProcessStatus.COMPLETED:
                break
            assert proc.returncode is None, "exited early"
            assert time.monotonic() < deadline, process
            # Without a separate worker (router run), do the commands' work here.
            if args[0] == "router":
                worker = Worker(PostgresBackend(pg_pool), DOMAIN, REGISTRY)
                await worker.drain()
            await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr and "Traceback" not in stderr
    return stderr


async def test_router_run_drives_processes_until_sigterm(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    app = "examples.statement_report:StatementReportProcess"
    stderr = await run_until(pg_pool, pg_dsn, "router", "run", "--app", app, "--progress")
    summary = stderr[stderr.index("Router stopped") :]
    assert REPLIES in summary
    assert "Router running" in stderr  # the live counters (--progress off a terminal)


async def test_run_runs_workers_and_routers_together(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    stderr = await run_until(
        pg_pool, pg_dsn, "run", "--handlers", f"{APP}:REGISTRY",
        "--processes", "examples.statement_report:StatementReportProcess",
    )  # fmt: skip
    assert "Worker stopped" in stderr and "Router stopped" in stderr
    assert "Worker running" not in stderr  # no live counters off a terminal by default
