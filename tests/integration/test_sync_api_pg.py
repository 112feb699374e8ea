"""The sync API on a real PostgreSQL: every call joins the caller's transaction on a
synchronous psycopg connection, commits with it, rolls back with it, and a refused call
leaves the caller's transaction usable."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest

from commandbus import (
    BatchCommand,
    CommandBus,
    CommandStatus,
    DuplicateCommandError,
    HandlerRegistry,
    PermanentCommandError,
    ValidationError,
    Worker,
)
from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessStatus
from commandbus.sync import SyncCommandBus, SyncProcesses, SyncTroubleshootingQueue

pytestmark = pytest.mark.integration


class Rollback(Exception):
    pass


def rows(dsn: str, query: str, *params: Any) -> list[Any]:
    """Read with a connection of its own (sees committed rows only)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


async def test_a_command_commits_and_rolls_back_with_the_callers_transaction(
    pg_dsn: str,
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.commit()
        bus = SyncCommandBus(conn)
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            kept = bus.send("shop", "ShipOrder", data={"order": 1})
            assert rows(pg_dsn, "SELECT count(*) FROM commandbus.command") == [(0,)]
        with pytest.raises(Rollback), conn.transaction():
            conn.execute("INSERT INTO orders VALUES (2)")
            lost = bus.send("shop", "ShipOrder", data={"order": 2})
            raise Rollback
    assert rows(pg_dsn, "SELECT id FROM orders") == [(1,)]
    assert rows(pg_dsn, "SELECT command_id FROM commandbus.command") == [(kept.command_id,)]
    assert rows(pg_dsn, "SELECT count(*) FROM commandbus.queue_message") == [(1,)]
    assert lost.command_id != kept.command_id


async def test_a_refused_call_leaves_the_callers_transaction_usable(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        bus = SyncCommandBus(conn)
        command_id = uuid4()
        with conn.transaction():
            bus.send("shop", "ShipOrder", command_id, {"order": 1})
            with pytest.raises(DuplicateCommandError):
                bus.send("shop", "ShipOrder", command_id, {"order": 1})
            with pytest.raises(ValidationError):
                bus.send("Shop!", "ShipOrder", data={})
            second = bus.send("shop", "ShipOrder", data={"order": 2})
        meta = bus.get_command("shop", second.command_id)
        assert meta is not None and meta.status is CommandStatus.PENDING
    assert rows(pg_dsn, "SELECT count(*) FROM commandbus.command") == [(2,)]


async def test_batches_from_sync_code(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        bus = SyncCommandBus(conn)
        with conn.transaction():
            created = bus.create_batch(
                "shop",
                [BatchCommand("ShipOrder", {"order": n}) for n in range(3)],
                name="evening",
                keep_open=True,
            )
            bus.send("shop", "ShipOrder", data={"order": 3}, batch_id=created.batch_id)
        batch = bus.get_batch("shop", created.batch_id)
        assert batch is not None and (batch.total, batch.is_open) == (4, True)
        assert len(bus.query_commands(batch_id=created.batch_id)) == 4
        closed = bus.close_batch("shop", created.batch_id)
        assert not closed.is_open
        assert [b.batch_id for b in bus.list_batches("shop")] == [created.batch_id]


async def test_operator_actions_from_sync_code(pg_dsn: str, pg_backend: PostgresBackend) -> None:
    registry = HandlerRegistry()

    @registry.handler("shop", "ShipOrder")
    async def ship(command: Any, context: Any) -> None:
        raise PermanentCommandError("NO_COURIER", "no courier today")

    parked = await CommandBus(pg_backend).send("shop", "ShipOrder", data={"order": 1})
    assert await Worker(pg_backend, "shop", registry).drain() == 1
    with psycopg.connect(pg_dsn) as conn:
        tsq = SyncTroubleshootingQueue(conn)
        [item] = tsq.list_troubleshooting("shop")
        assert (item.command_id, tsq.count_troubleshooting("shop")) == (parked.command_id, 1)
        with pytest.raises(Rollback), conn.transaction():
            tsq.operator_retry("shop", parked.command_id, operator="alice")
            raise Rollback
        assert tsq.count_troubleshooting("shop") == 1  # rolled back with the caller
        with conn.transaction():
            tsq.operator_cancel("shop", parked.command_id, "customer left", operator="alice")
    meta = await CommandBus(pg_backend).get_command("shop", parked.command_id)
    assert meta is not None and meta.status is CommandStatus.CANCELED


async def test_a_process_starts_in_the_callers_transaction(pg_dsn: str) -> None:
    from examples.statement_report import StatementReportProcess

    data = {
        "from_date": "2024-01-01",
        "to_date": "2024-03-31",
        "account_list": ["ACC-1"],
        "output_type": "pdf",
    }
    with psycopg.connect(pg_dsn) as conn:
        manager = StatementReportProcess(SyncCommandBus(conn).bus)
        processes = SyncProcesses(conn, manager)
        with pytest.raises(Rollback), conn.transaction():
            processes.start(data)
            raise Rollback
        assert rows(pg_dsn, "SELECT count(*) FROM commandbus.process") == [(0,)]
        with conn.transaction():
            process_id = processes.start(data)
            [again] = processes.start_many([(process_id, data)])  # idempotent
        assert again == process_id
    [(status,)] = rows(pg_dsn, "SELECT status FROM commandbus.process")
    assert status == ProcessStatus.WAITING_FOR_REPLY.value
    [(command_type,)] = rows(pg_dsn, "SELECT command_type FROM commandbus.command")
    assert command_type == "StatementQuery"
