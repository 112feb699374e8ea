"""``commandbus batch list|show`` run as a user runs it, on batches made through the API."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from tests.acceptance.test_cli import DOMAIN, assert_user_error, cli, shop_registry

from commandbus import BatchCommand, CommandBus, Worker
from commandbus.postgres import PostgresBackend

pytestmark = pytest.mark.acceptance


async def test_batch_list_and_show(pg_dsn: str, pg_backend: PostgresBackend) -> None:
    bus = CommandBus(pg_backend)
    done = await bus.create_batch(
        DOMAIN,
        [BatchCommand("Pay", {"mode": m}) for m in ("ok", "ok", "business", "permanent")],
        name="march",
        reply_to="shop__batches",
    )
    waiting = await bus.create_batch(
        DOMAIN, [BatchCommand("Pay", {"mode": "ok"})], name="april", keep_open=True
    )
    assert await Worker(pg_backend, DOMAIN, shop_registry()).drain() == 5

    listed = cli("batch", "list", "--domain", DOMAIN, dsn=pg_dsn)
    assert listed.returncode == 0, listed.stderr
    assert str(done.batch_id) in listed.stdout and "march" in listed.stdout
    assert "IN_PROGRESS" in listed.stdout  # one in the TSQ, and april is open
    assert "1/1 open" in listed.stdout

    as_json = cli("batch", "list", "--json", "--status", "in_progress", dsn=pg_dsn)
    assert as_json.returncode == 0, as_json.stderr
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert set(rows) == {"march", "april"}
    march = rows["march"]
    assert (march["total"], march["completed"], march["failed"]) == (4, 2, 1)
    assert (march["in_troubleshooting"], march["kind"]) == (1, "COMMANDS")

    shown = cli("batch", "show", "--domain", DOMAIN, str(done.batch_id), dsn=pg_dsn)
    assert shown.returncode == 0, shown.stderr
    assert "in the TSQ" in shown.stdout and "shop__batches" in shown.stdout
    assert "Commands of the batch (4 of 4 shown" in shown.stdout
    assert shown.stdout.count("Pay") == 4

    detail = cli("batch", "show", "-d", DOMAIN, str(waiting.batch_id), "--json", dsn=pg_dsn)
    parsed = json.loads(detail.stdout)
    assert parsed["batch"]["is_open"] is True
    assert [c["status"] for c in parsed["commands"]] == ["COMPLETED"]

    missing = cli("batch", "show", "-d", DOMAIN, str(uuid4()), dsn=pg_dsn)
    assert_user_error(missing, 1, "no batch")
    bad = cli("batch", "list", "--status", "DONE", dsn=pg_dsn)
    assert_user_error(bad, 2, "DONE")
