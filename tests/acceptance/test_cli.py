"""The ``commandbus`` command line, run as a user runs it: ``python -m commandbus …`` in a
subprocess, against a fresh database of the test server.

Data is set up through the public API (send, then a worker drains the queue), then
inspected and changed with the CLI, and the effects are checked through the API again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import pytest_asyncio
from tests.cli_support import cli_environment

from commandbus import (
    BusinessRuleException,
    Command,
    CommandBus,
    HandlerContext,
    HandlerRegistry,
    PermanentCommandError,
    Worker,
)
from commandbus.postgres import PostgresBackend

pytestmark = pytest.mark.acceptance

DOMAIN = "shop"
REPLIES = "shop__replies"
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=2"


def cli(
    *args: str,
    dsn: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m commandbus ARGS`` with DATABASE_URL=dsn; never inherit ours."""
    environ = cli_environment()
    environ["COLUMNS"] = "200"
    if dsn is not None:
        environ["DATABASE_URL"] = dsn
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "commandbus", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """A user error: the given exit code, a readable message, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


# -- data set up through the API -----------------------------------------------------------


def shop_registry() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Pay")
    async def pay(command: Command, ctx: HandlerContext) -> dict[str, Any]:
        mode = command.data.get("mode")
        if mode == "permanent":
            raise PermanentCommandError("CARD_EXPIRED", "the card expired in 2020")
        if mode == "business":
            raise BusinessRuleException("OVER_LIMIT", "amount over the daily limit")
        return {"paid": True}

    return registry


@dataclass
class Shop:
    dsn: str
    completed: UUID
    in_tsq: list[UUID]
    failed: UUID


@pytest_asyncio.fixture
async def shop(pg_dsn: str, pg_backend: PostgresBackend) -> AsyncIterator[Shop]:
    """Six commands processed: one COMPLETED, three in the TSQ, one FAILED, one more OK."""
    bus = CommandBus(pg_backend)
    ids = {mode: [] for mode in ("ok", "permanent", "business")}  # type: dict[str, list[UUID]]
    for mode in ("ok", "permanent", "permanent", "permanent", "business", "ok"):
        cid = uuid4()
        await bus.send(DOMAIN, "Pay", cid, {"mode": mode}, reply_to=REPLIES)
        ids[mode].append(cid)
    worker = Worker(pg_backend, DOMAIN, shop_registry())
    assert await worker.drain() == 6
    # Leave the reply queue empty: tests look for the replies that operator actions send.
    for received in await bus.read_replies(REPLIES, limit=100):
        await bus.ack_reply(REPLIES, received.msg_id)
    yield Shop(pg_dsn, ids["ok"][0], ids["permanent"], ids["business"][0])


async def replies_for(dsn: str, command_id: UUID) -> list[Any]:
    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    try:
        bus = CommandBus(backend)
        received = await bus.read_replies(REPLIES, limit=100)
        return [r.reply for r in received if r.reply.command_id == command_id]
    finally:
        await backend.close()


def show_json(shop: Shop, command_id: UUID) -> dict[str, Any]:
    result = cli("command", "show", "--domain", DOMAIN, str(command_id), "--json", dsn=shop.dsn)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def events(shown: dict[str, Any]) -> list[str]:
    return [e["event_type"] for e in shown["audit_trail"]]


# -- help and schema -----------------------------------------------------------------------


def test_help_lists_nouns_and_environment_variables() -> None:
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    for noun in ("schema", "worker", "tsq", "command"):
        assert noun in result.stdout
    assert "COMMANDBUS_DATABASE_URL" in result.stdout
    assert "DATABASE_URL" in result.stdout

    listing = cli("tsq", "list", "--help")
    assert listing.returncode == 0
    assert "COMMANDBUS_DOMAIN" in listing.stdout
    assert "COMMANDBUS_LIMIT" in listing.stdout

    worker = cli("worker", "run", "--help")
    assert "COMMANDBUS_CONCURRENCY" in worker.stdout
    assert "COMMANDBUS_VISIBILITY_TIMEOUT" in worker.stdout


def test_entry_point_script_is_installed() -> None:
    script = Path(sys.executable).with_name("commandbus")
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0
    assert "commandbus" in result.stdout


def test_schema_sql_prints_ddl_without_connecting(tmp_path: Path) -> None:
    # An unreachable server, and a working directory where an embedded server would
    # leave its data directory: neither is touched.
    result = cli("schema", "sql", dsn=UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE commandbus.command" in result.stdout
    assert "schema_migrations" in result.stdout
    no_url = cli("schema", "sql", cwd=tmp_path)
    assert no_url.returncode == 0, no_url.stderr
    assert no_url.stdout == result.stdout
    assert not (tmp_path / ".commandbus").exists()


def test_without_a_url_or_the_embedded_extra_one_line_says_what_to_do(tmp_path: Path) -> None:
    # pgserver made unimportable, as on an install without the [embedded] extra.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['pgserver'] = None\n")
    result = cli("schema", "apply", cwd=tmp_path, env={"PYTHONPATH": str(hide)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "embedded PostgreSQL is not installed" in lines[0]
    assert "DATABASE_URL" in lines[0] and "commandbus[embedded]" in lines[0]


def test_a_server_that_is_down_is_reported_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli("tsq", "list", "--domain", DOMAIN, dsn=UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 20


async def test_schema_verify_apply_on_an_empty_database(pg_template: Any) -> None:
    dsn = await pg_template.create_empty()
    try:
        before = await _to_thread(cli, "schema", "verify", dsn=dsn)
        assert_user_error(before, 1, "not installed", "commandbus schema apply")

        missing = await _to_thread(cli, "tsq", "list", "--domain", DOMAIN, dsn=dsn)
        assert_user_error(missing, 1, "schema apply")

        applied = await _to_thread(cli, "schema", "apply", "--progress", dsn=dsn)
        assert applied.returncode == 0, applied.stderr
        assert "Schema applied" in applied.stdout
        assert "001_" in applied.stdout
        assert "applying 001_commands.sql" in applied.stderr  # each migration as it starts

        again = await _to_thread(cli, "schema", "apply", dsn=dsn)
        assert again.returncode == 0, again.stderr
        assert "already up to date" in again.stdout

        verified = await _to_thread(cli, "schema", "verify", dsn=dsn)
        assert verified.returncode == 0, verified.stderr
        assert "Schema OK" in verified.stdout

        # The ledger still says current, but a table is gone: verify says so.
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("DROP TABLE commandbus.audit")
        broken = await _to_thread(cli, "schema", "verify", dsn=dsn)
        assert_user_error(broken, 1, "table commandbus.audit is missing")
    finally:
        await pg_template.drop(dsn)


async def _to_thread(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cli`` off the event loop (this test is async for its async fixture)."""
    import asyncio
    import functools

    fn, *rest = args
    result: subprocess.CompletedProcess[str] = await asyncio.to_thread(
        functools.partial(fn, *rest, **kwargs)
    )
    return result


# -- the troubleshooting queue -------------------------------------------------------------


def test_tsq_list_shows_the_parked_commands(shop: Shop) -> None:
    result = cli("tsq", "list", "--domain", DOMAIN, dsn=shop.dsn)
    assert result.returncode == 0, result.stderr
    for cid in shop.in_tsq:
        assert str(cid) in result.stdout
    assert str(shop.completed) not in result.stdout
    assert "CARD_EXPIRED" in result.stdout
    assert "3 command(s)" in result.stdout

    limited = cli("tsq", "list", "--domain", DOMAIN, "--limit", "2", "--json", dsn=shop.dsn)
    parsed = json.loads(limited.stdout)
    assert parsed["total"] == 3
    assert len(parsed["items"]) == 2
    assert parsed["items"][0]["data"] == {"mode": "permanent"}

    other_type = cli("tsq", "list", "--domain", DOMAIN, "--type", "Refund", dsn=shop.dsn)
    assert other_type.returncode == 0
    assert "empty" in other_type.stdout


def test_domain_can_come_from_the_environment(shop: Shop) -> None:
    result = cli("tsq", "list", "--json", dsn=shop.dsn, env={"COMMANDBUS_DOMAIN": DOMAIN})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 3
    # COMMANDBUS_DATABASE_URL wins over DATABASE_URL.
    preferred = cli(
        "tsq",
        "list",
        "--domain",
        DOMAIN,
        dsn=UNREACHABLE,
        env={"COMMANDBUS_DATABASE_URL": shop.dsn},
    )
    assert preferred.returncode == 0, preferred.stderr


def test_tsq_retry_requeues_the_command(shop: Shop) -> None:
    target = shop.in_tsq[0]
    result = cli(
        "tsq", "retry", "--domain", DOMAIN, str(target), "--operator", "ops-anna", dsn=shop.dsn
    )
    assert result.returncode == 0, result.stderr
    assert "Retrying" in result.stdout

    shown = show_json(shop, target)
    assert shown["command"]["status"] == "PENDING"
    assert shown["command"]["attempts"] == 0
    retry = [e for e in shown["audit_trail"] if e["event_type"] == "OPERATOR_RETRY"]
    assert retry and retry[0]["details"]["operator"] == "ops-anna"
    listed = json.loads(cli("tsq", "list", "-d", DOMAIN, "--json", dsn=shop.dsn).stdout)
    assert listed["total"] == 2

    # It is no longer in the TSQ: a second retry is refused, clearly.
    again = cli("tsq", "retry", "--domain", DOMAIN, str(target), dsn=shop.dsn)
    assert_user_error(again, 1, "PENDING", "not in the troubleshooting queue")


async def test_tsq_cancel_replies_canceled(shop: Shop) -> None:
    target = shop.in_tsq[1]
    result = await _to_thread(
        cli, "tsq", "cancel", "-d", DOMAIN, str(target), "--reason", "customer left", dsn=shop.dsn
    )
    assert result.returncode == 0, result.stderr
    shown = await _to_thread(show_json, shop, target)
    assert shown["command"]["status"] == "CANCELED"
    assert events(shown)[-1] == "OPERATOR_CANCEL"
    assert shown["audit_trail"][-1]["details"]["reason"] == "customer left"
    [reply] = await replies_for(shop.dsn, target)
    assert reply.outcome.value == "CANCELED"
    assert reply.error_message == "customer left"


async def test_tsq_complete_replies_success_with_the_result(shop: Shop) -> None:
    target = shop.in_tsq[2]
    result = await _to_thread(
        cli,
        "tsq",
        "complete",
        "--domain",
        DOMAIN,
        str(target),
        "--result",
        '{"receipt": "R-17", "manual": true}',
        dsn=shop.dsn,
        env={"COMMANDBUS_OPERATOR": "ops-ben"},
    )
    assert result.returncode == 0, result.stderr
    assert "ops-ben" in result.stdout
    shown = await _to_thread(show_json, shop, target)
    assert shown["command"]["status"] == "COMPLETED"
    assert shown["audit_trail"][-1]["event_type"] == "OPERATOR_COMPLETE"
    assert shown["audit_trail"][-1]["details"]["operator"] == "ops-ben"
    [reply] = await replies_for(shop.dsn, target)
    assert reply.outcome.value == "SUCCESS"
    assert reply.data == {"receipt": "R-17", "manual": True}


# -- commands ------------------------------------------------------------------------------


def test_command_show_prints_metadata_and_audit_trail(shop: Shop) -> None:
    result = cli("command", "show", "--domain", DOMAIN, str(shop.failed), dsn=shop.dsn)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert str(shop.failed) in out
    assert "FAILED" in out
    assert "OVER_LIMIT" in out
    assert "amount over the daily limit" in out
    assert REPLIES in out
    for event in ("SENT", "RECEIVED", "BUSINESS_RULE_FAILED"):
        assert event in out
    assert out.index("SENT") < out.index("RECEIVED") < out.index("BUSINESS_RULE_FAILED")

    shown = show_json(shop, shop.in_tsq[0])
    assert shown["command"]["status"] == "IN_TROUBLESHOOTING_QUEUE"
    assert events(shown) == ["SENT", "RECEIVED", "FAILED", "MOVED_TO_TSQ"]


def test_command_list_filters(shop: Shop) -> None:
    everything = cli("command", "list", dsn=shop.dsn)
    assert everything.returncode == 0, everything.stderr
    assert "6 shown" in everything.stdout

    failed = json.loads(
        cli(
            "command", "list", "--status", "failed", "--domain", DOMAIN, "--json", dsn=shop.dsn
        ).stdout
    )
    assert [c["command_id"] for c in failed] == [str(shop.failed)]

    tsq = json.loads(
        cli("command", "list", "-s", "IN_TROUBLESHOOTING_QUEUE", "--json", dsn=shop.dsn).stdout
    )
    assert sorted(c["command_id"] for c in tsq) == sorted(str(c) for c in shop.in_tsq)

    by_type = json.loads(cli("command", "list", "--type", "Refund", "--json", dsn=shop.dsn).stdout)
    assert by_type == []
    limited = json.loads(cli("command", "list", "--limit", "2", "--json", dsn=shop.dsn).stdout)
    assert len(limited) == 2

    none = cli("command", "list", "--domain", "nothing_here", dsn=shop.dsn)
    assert none.returncode == 0
    assert "No commands match" in none.stdout


# -- user errors: one line, non-zero, no traceback ------------------------------------------


def test_user_errors_are_one_clear_line(shop: Shop) -> None:
    bad_uuid = cli("tsq", "retry", "--domain", DOMAIN, "not-a-uuid", dsn=shop.dsn)
    assert_user_error(bad_uuid, 2, "not a valid UUID")

    unknown = str(uuid4())
    missing = cli("command", "show", "--domain", DOMAIN, unknown, dsn=shop.dsn)
    assert_user_error(missing, 1, f"no command {unknown}")
    missing_tsq = cli("tsq", "cancel", "--domain", DOMAIN, unknown, dsn=shop.dsn)
    assert_user_error(missing_tsq, 1, f"no command {unknown}")

    wrong_state = cli("tsq", "complete", "--domain", DOMAIN, str(shop.completed), dsn=shop.dsn)
    assert_user_error(wrong_state, 1, "COMPLETED", "not in the troubleshooting queue")

    target = str(shop.in_tsq[0])
    bad_json = cli("tsq", "complete", "-d", DOMAIN, target, "--result", "{oops", dsn=shop.dsn)
    assert_user_error(bad_json, 2, "not valid JSON")
    not_object = cli("tsq", "complete", "-d", DOMAIN, target, "--result", "[1, 2]", dsn=shop.dsn)
    assert_user_error(not_object, 2, "JSON object is required")
    # Nothing happened to the command.
    assert show_json(shop, shop.in_tsq[0])["command"]["status"] == "IN_TROUBLESHOOTING_QUEUE"

    bad_domain = cli("tsq", "list", "--domain", "Not A Domain", dsn=shop.dsn)
    assert_user_error(bad_domain, 1, "invalid domain")
    bad_status = cli("command", "list", "--status", "LOST", dsn=shop.dsn)
    assert_user_error(bad_status, 2, "LOST")
    no_domain = cli("tsq", "list", dsn=shop.dsn)
    assert_user_error(no_domain, 2, "--domain")

    for result in (bad_uuid, missing, wrong_state, bad_json, bad_domain):
        assert len(result.stderr.strip().splitlines()[-1]) > 10


def test_unreachable_database_is_a_clear_error() -> None:
    result = cli("command", "list", dsn=UNREACHABLE)
    assert_user_error(result, 1, "cannot connect to postgresql://nobody@127.0.0.1:1/nowhere")
    secret = cli("command", "list", dsn="postgresql://bob:s3cret@127.0.0.1:1/x?connect_timeout=2")
    assert_user_error(secret, 1, "cannot connect")
    assert "s3cret" not in secret.stderr


# -- the worker ----------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    from commandbus import HandlerRegistry, PermanentCommandError

    registry = HandlerRegistry()
    not_a_registry = 42


    def make_registry():
        return registry


    @registry.handler("shop", "Pay")
    async def pay(command, ctx):
        if command.data.get("mode") == "permanent":
            raise PermanentCommandError("CARD_EXPIRED", "the card expired")
        return {"paid": command.data["n"]}
    """
)


async def _send(dsn: str, modes: list[str]) -> list[UUID]:
    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    try:
        bus = CommandBus(backend)
        ids = []
        for n, mode in enumerate(modes):
            cid = uuid4()
            await bus.send(DOMAIN, "Pay", cid, {"mode": mode, "n": n}, reply_to=REPLIES)
            ids.append(cid)
        return ids
    finally:
        await backend.close()


async def _statuses(dsn: str, ids: list[UUID]) -> list[str]:
    backend = await PostgresBackend.connect(dsn, min_size=1, max_size=2)
    try:
        bus = CommandBus(backend)
        statuses = []
        for cid in ids:
            meta = await bus.get_command(DOMAIN, cid)
            statuses.append(meta.status.value if meta else "MISSING")
        return statuses
    finally:
        await backend.close()


async def test_worker_run_processes_commands_and_stops_on_sigterm(
    pg_dsn: str, tmp_path: Path
) -> None:
    import asyncio

    (tmp_path / "shopapp.py").write_text(APP)
    ids = await _send(pg_dsn, ["ok"] * 5 + ["permanent"])
    environ = cli_environment()
    environ["DATABASE_URL"] = pg_dsn
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commandbus",
        "worker",
        "run",
        "--app",
        "shopapp:registry",
        "--domain",
        DOMAIN,
        "--concurrency",
        "4",
        "--poll-interval",
        "0.2",
        cwd=tmp_path,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            statuses = await _statuses(pg_dsn, ids)
            if statuses == ["COMPLETED"] * 5 + ["IN_TROUBLESHOOTING_QUEUE"]:
                break
            assert proc.returncode is None, "the worker exited early"
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.2)
        # A command sent while the worker idles is picked up too (NOTIFY or polling).
        [late] = await _send(pg_dsn, ["ok"])
        deadline = time.monotonic() + 15
        while (await _statuses(pg_dsn, [late])) != ["COMPLETED"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr
    assert "Worker stopped" in stderr
    assert "Traceback" not in stderr
    # The summary counts what this worker did: 6 + 1 claimed, 6 completed, 1 to the TSQ.
    summary = stderr[stderr.index("Worker stopped") :]
    assert "│ shop" in summary
    assert " 7 " in summary and " 6 " in summary


def test_worker_run_rejects_a_bad_app(tmp_path: Path, shop: Shop) -> None:
    (tmp_path / "shopapp.py").write_text(APP)
    no_colon = cli("worker", "run", "--app", "shopapp", dsn=shop.dsn, cwd=tmp_path)
    assert_user_error(no_colon, 2, "MODULE:ATTRIBUTE")
    no_module = cli("worker", "run", "--app", "nowhere_app:registry", dsn=shop.dsn, cwd=tmp_path)
    assert_user_error(no_module, 2, "cannot import module 'nowhere_app'")
    no_attr = cli("worker", "run", "--app", "shopapp:missing", dsn=shop.dsn, cwd=tmp_path)
    assert_user_error(no_attr, 2, "no attribute 'missing'")
    wrong_type = cli("worker", "run", "--app", "shopapp:not_a_registry", dsn=shop.dsn, cwd=tmp_path)
    assert_user_error(wrong_type, 2, "not a commandbus HandlerRegistry")
    other_domain = cli(
        "worker",
        "run",
        "--app",
        "shopapp:make_registry",
        "-d",
        "billing",
        dsn=shop.dsn,
        cwd=tmp_path,
    )
    assert_user_error(other_domain, 1, "no handler for domain 'billing'")


async def test_worker_run_refuses_a_database_without_the_schema(
    pg_template: Any, tmp_path: Path
) -> None:
    (tmp_path / "shopapp.py").write_text(APP)
    dsn = await pg_template.create_empty()
    try:
        result = await _to_thread(
            cli, "worker", "run", "--app", "shopapp:registry", dsn=dsn, cwd=tmp_path
        )
        assert_user_error(result, 1, "schema is not current", "commandbus schema apply")
    finally:
        await pg_template.drop(dsn)


def test_a_read_command_on_a_new_embedded_server_says_which_it_used(tmp_path: Path) -> None:
    # No DATABASE_URL, run from a folder that has no data: a new, empty embedded server.
    pytest.importorskip("pgserver", reason="the embedded extra (pgserver) is not installed")
    elsewhere = tmp_path / "not-my-project"
    elsewhere.mkdir()
    result = cli("tsq", "list", "--domain", "payments", cwd=elsewhere, timeout=120)
    where = str((elsewhere / ".commandbus" / "pgdata").resolve())
    assert_user_error(result, 1, "schema is missing", where, "--data-dir", "DATABASE_URL")
    assert f"using the embedded PostgreSQL in {where}" in result.stderr


def test_global_options_work_after_the_sub_command(shop: Shop) -> None:
    from commandbus.cli.main import hoist_global_options

    assert hoist_global_options(["tsq", "list", "-d", "p", "--database-url", "U"]) == [
        "--database-url", "U", "tsq", "list", "-d", "p",
    ]  # fmt: skip
    assert hoist_global_options(["x", "--log-level=debug", "--", "--data-dir", "D"]) == [
        "--log-level=debug", "x", "--", "--data-dir", "D",
    ]  # fmt: skip
    # No DATABASE_URL in the environment: the URL given after the noun is the one used.
    result = cli("tsq", "list", "--domain", DOMAIN, "--database-url", shop.dsn)
    assert result.returncode == 0, result.stderr
    assert "embedded" not in result.stderr
