"""``commandbus history prune``, run as a user runs it, against a fresh database."""

from __future__ import annotations

import json
from uuid import uuid4

import psycopg
import pytest
from tests.acceptance.test_cli import DOMAIN, REPLIES, assert_user_error, cli, shop_registry

from commandbus import CommandBus, Worker
from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import shift_stored_times

pytestmark = pytest.mark.acceptance

FORTY_DAYS = 40 * 24 * 3600


async def test_prune_deletes_old_finished_commands_only(
    pg_dsn: str, pg_backend: PostgresBackend
) -> None:
    bus = CommandBus(pg_backend)
    old = {mode: uuid4() for mode in ("ok", "permanent", "business")}
    for mode, command_id in old.items():
        await bus.send(DOMAIN, "Pay", command_id, {"mode": mode}, reply_to=REPLIES)
    worker = Worker(pg_backend, DOMAIN, shop_registry())
    assert await worker.drain() == 3
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await shift_stored_times(conn, FORTY_DAYS)
        cur = await conn.execute(
            "SELECT count(*) FROM commandbus.audit WHERE command_id = ANY(%s)",
            ([old["ok"], old["business"]],),
        )
        row = await cur.fetchone()
        assert row is not None
        old_events = row[0]
    recent = uuid4()
    await bus.send(DOMAIN, "Pay", recent, {"mode": "ok"}, reply_to=REPLIES)
    assert await worker.drain() == 1

    result = cli("history", "prune", "--older-than", "30d", "--json", dsn=pg_dsn)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "commands": 2,
        "audit_events": old_events,
        "archived_messages": 1,  # the business failure's message
    }
    assert await bus.get_command(DOMAIN, old["ok"]) is None
    assert await bus.get_command(DOMAIN, old["business"]) is None
    assert await bus.get_audit_trail(old["ok"]) == []
    # the troubleshooting queue and recent history stay
    parked = await bus.get_command(DOMAIN, old["permanent"])
    assert parked is not None and parked.status.value == "IN_TROUBLESHOOTING_QUEUE"
    listed = cli("tsq", "list", "--domain", DOMAIN, "--json", dsn=pg_dsn)
    assert [i["command_id"] for i in json.loads(listed.stdout)["items"]] == [str(old["permanent"])]
    assert await bus.get_command(DOMAIN, recent) is not None

    again = cli("history", "prune", "--older-than", "30d", dsn=pg_dsn)
    assert again.returncode == 0, again.stderr
    assert "Pruned 0 finished commands" in again.stdout


def test_prune_refuses_bad_input(pg_dsn: str) -> None:
    for bad in ("30", "thirty days", "0d", "-5d", "1y"):
        result = cli("history", "prune", "--older-than", bad, dsn=pg_dsn)
        assert_user_error(result, 2, "--older-than", "invalid duration")
    missing = cli("history", "prune", dsn=pg_dsn)
    assert_user_error(missing, 2, "--older-than")
    domain = cli("history", "prune", "--older-than", "30d", "--domain", "Not A Domain", dsn=pg_dsn)
    assert_user_error(domain, 1, "invalid domain")
    batch = cli("history", "prune", "--older-than", "30d", "--batch-size", "0", dsn=pg_dsn)
    assert_user_error(batch, 2, "--batch-size")
