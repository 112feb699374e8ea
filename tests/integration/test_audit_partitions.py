"""The audit trail partitioned by week (011_audit_partitions.sql): the upgrade of a
database with history, where new rows go, and the upkeep of the weekly partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest_asyncio

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.handler import HandlerContext
from commandbus.models import AuditEventType, Command, PrunedHistory
from commandbus.postgres import PostgresBackend, apply_schema, migrations, verify_schema
from commandbus.postgres.queries import read_sql_file
from commandbus.testing.pg import TemplateDatabase

A = AuditEventType


@pytest_asyncio.fixture
async def empty_dsn(pg_template: TemplateDatabase) -> AsyncIterator[str]:
    dsn = await pg_template.create_empty()
    try:
        yield dsn
    finally:
        await pg_template.drop(dsn)


async def fetch(dsn: str, query: str, params: Any = None) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


def noop_worker(backend: PostgresBackend, domain: str) -> Worker:
    registry = HandlerRegistry()

    @registry.handler(domain, "Noop")
    async def noop(command: Command, ctx: HandlerContext) -> None:
        return None

    return Worker(backend, domain, registry)


async def test_upgrade_keeps_the_history_and_writes_new_rows_to_this_week(
    empty_dsn: str,
) -> None:
    # A database as it was before 011, with history
    async with await psycopg.AsyncConnection.connect(empty_dsn) as conn:
        await conn.execute(read_sql_file("ledger.sql").encode())
        for migration in migrations():
            if migration.version < 11:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO commandbus.schema_migrations (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
        # This version's settle statement needs 016's function: lent to the old database
        # while its history is made, then taken away again.
        [settle_rows] = [m for m in migrations() if m.version == 16]
        await conn.execute(settle_rows.sql.encode())
        await conn.commit()
    backend = await PostgresBackend.connect(empty_dsn, min_size=1, max_size=4)
    try:
        bus = CommandBus(backend)
        old = [uuid4() for _ in range(3)]
        for command_id in old:
            await bus.send("billing", "Noop", command_id, {"n": 1})
        assert await noop_worker(backend, "billing").drain() == 3
        async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
            await conn.execute("DROP FUNCTION commandbus.settle_command_rows")
        before = {cid: await bus.get_audit_trail(cid) for cid in old}

        assert await apply_schema(empty_dsn) == [
            "011_audit_partitions.sql",
            "012_relay_ledgers.sql",
            "013_event_reads.sql",
            "014_process_audit_unchecked.sql",
            "015_outbox_parking.sql",
            "016_settle_rows.sql",
        ]
        assert await verify_schema(empty_dsn) == []

        # the old rows are where they were, found as before
        assert {cid: await bus.get_audit_trail(cid) for cid in old} == before
        [(initial,)] = await fetch(empty_dsn, "SELECT count(*) FROM commandbus.audit_initial")
        assert initial == 9
        # new rows: ids go on, into this week's partition
        new = uuid4()
        await bus.send("billing", "Noop", new, {"n": 2})
        assert await noop_worker(backend, "billing").drain() == 1
        assert [e.event_type for e in await bus.get_audit_trail(new)] == [
            A.SENT,
            A.RECEIVED,
            A.COMPLETED,
        ]
        rows = await fetch(
            empty_dsn,
            "SELECT tableoid::regclass::text, id FROM commandbus.audit ORDER BY id",
        )
        assert [name for name, _ in rows[:9]] == ["commandbus.audit_initial"] * 9
        week = (
            await fetch(
                empty_dsn,
                "SELECT to_char(date_trunc('week', now() AT TIME ZONE 'UTC'), 'YYYYMMDD')",
            )
        )[0][0]
        assert {name for name, _ in rows[9:]} == {f"commandbus.audit_{week}"}
        ids = [i for _, i in rows]
        assert ids == sorted(set(ids)) and ids[9] > ids[8]
    finally:
        await backend.close()


async def test_weekly_partitions_are_kept_ahead_and_dropped_when_empty(
    pg_dsn: str, pg_backend: PostgresBackend
) -> None:
    weekly = (
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'commandbus.audit'::regclass AND c.relname ~ '^audit_[0-9]{8}$'"
    )
    [(count,)] = await fetch(pg_dsn, weekly)
    assert count == 9  # this week and 8 ahead
    assert await fetch(pg_dsn, "SELECT commandbus.ensure_audit_partitions(8)") == [(0,)]
    assert await fetch(pg_dsn, "SELECT commandbus.ensure_audit_partitions(10)") == [(2,)]

    bus = CommandBus(pg_backend)
    command_id = uuid4()
    await bus.send("billing", "Noop", command_id, {"n": 1})
    assert await noop_worker(pg_backend, "billing").drain() == 1
    far = "SELECT commandbus.drop_empty_audit_partitions(now() + interval '30 weeks')"
    # every week but this one (which has the command's events) is empty
    assert await fetch(pg_dsn, far) == [(10,)]
    pruned = await pg_backend.commands.prune_finished(
        pg_backend.clock.now() + timedelta(seconds=60)
    )
    assert pruned == PrunedHistory(1, 3, 0)
    # the prune created the coming weeks again; this week ends after its cutoff: kept
    [(count,)] = await fetch(pg_dsn, weekly)
    assert count == 9
    assert await fetch(pg_dsn, far) == [(9,)]
    # with no partition left, rows go to audit_default, and nothing is lost
    await bus.send("billing", "Noop", uuid4(), {"n": 2})
    [(where,)] = await fetch(
        pg_dsn, "SELECT DISTINCT tableoid::regclass::text FROM commandbus.audit"
    )
    assert where == "commandbus.audit_default"
    # a week the default partition has rows of stays with it
    assert await fetch(pg_dsn, "SELECT commandbus.ensure_audit_partitions(8)") == [(8,)]
