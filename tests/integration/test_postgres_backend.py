"""PostgresBackend: transactions, the LISTEN connection (wake-ups, reconnect, degraded
mode) and the pool it may own."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from commandbus.models import SendRequest
from commandbus.postgres import PostgresBackend

COMMANDS = "payments__commands"
REPLIES = "payments__replies"


def send_request() -> SendRequest:
    return SendRequest(domain="payments", command_type="Debit", command_id=uuid4(), data={})


async def listener_pids(pool: AsyncConnectionPool[Any]) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            b"SELECT pid FROM pg_stat_activity"
            b" WHERE datname = current_database() AND query = 'LISTEN commandbus'"
        )
        return [row[0] for row in await cur.fetchall()]


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_one_listen_connection_serves_every_waiter(pg_backend: PostgresBackend) -> None:
    async with (
        pg_backend.listen([COMMANDS]) as commands,
        pg_backend.listen([REPLIES]) as replies,
        pg_backend.listen([COMMANDS, REPLIES]) as both,
    ):
        assert pg_backend.listening
        assert len(await listener_pids(pg_backend.pool)) == 1

        await pg_backend.commands.insert([send_request()], 3)
        assert await commands.wait(5) is True
        assert await both.wait(5) is True
        assert await replies.wait(0.1) is False

        await pg_backend.queue.enqueue(REPLIES, [{"x": 1}])
        assert await replies.wait(5) is True
        assert await both.wait(5) is True
        assert await commands.wait(0.1) is False


async def test_waiter_after_exit_no_longer_receives(pg_backend: PostgresBackend) -> None:
    async with pg_backend.listen([REPLIES]) as waiter:
        pass
    await pg_backend.queue.enqueue(REPLIES, [{"x": 1}])
    assert await waiter.wait(0.1) is False


async def test_listener_reconnects_after_its_connection_is_killed(
    pg_backend: PostgresBackend,
) -> None:
    async with pg_backend.listen([REPLIES]) as waiter:
        [pid] = await listener_pids(pg_backend.pool)
        async with pg_backend.pool.connection() as conn:
            await conn.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
        # the failure wakes waiters (they poll while the listener is away)...
        assert await waiter.wait(5) is True

        async def reconnected() -> bool:
            pids = await listener_pids(pg_backend.pool)
            return pg_backend.listening and len(pids) == 1 and pids != [pid]

        await eventually(reconnected)
        await asyncio.sleep(0)
        while await waiter.wait(0):  # drain the wake-up of the reconnection
            pass
        # ...and notifications flow again once it is back
        await pg_backend.queue.enqueue(REPLIES, [{"x": 1}])
        assert await waiter.wait(5) is True


async def test_the_listen_connection_closes_when_nobody_listens(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    """A backend nobody closes (e.g. one wrapped around a pool) must not keep a LISTEN
    connection, or keep reconnecting to a dropped database, once its consumers stopped."""

    async def listeners() -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = 'LISTEN commandbus'"
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async with pg_backend.listen([REPLIES]) as first, pg_backend.listen([REPLIES]):
        assert pg_backend.listening and await listeners() == 1
    assert await first.wait(0) is False
    for _ in range(100):  # the task closes its connection as it is cancelled
        if await listeners() == 0:
            break
        await asyncio.sleep(0.02)
    assert await listeners() == 0 and not pg_backend.listening
    async with pg_backend.listen([REPLIES]) as again:  # and comes back when needed
        assert pg_backend.listening
        await pg_backend.queue.enqueue(REPLIES, [{"n": 1}])
        assert await again.wait(5) is True


async def test_listen_degrades_to_timeouts_when_it_cannot_connect() -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", min_size=0, max_size=1, open=False
    )
    backend = PostgresBackend(pool)
    try:
        async with backend.listen([REPLIES]) as waiter:
            assert backend.listening is False
            # a failed connection attempt wakes waiters so consumers poll at once
            assert await waiter.wait(0.5) is True
            assert await waiter.wait(0.05) is False
    finally:
        await backend.close()
        await pool.close()


async def test_transaction_commits_and_rolls_back(pg_backend: PostgresBackend) -> None:
    async with pg_backend.transaction() as conn:
        await pg_backend.queue.enqueue(REPLIES, [{"kept": True}], conn=conn)
    with pytest.raises(RuntimeError):
        async with pg_backend.transaction() as conn:
            await pg_backend.queue.enqueue(REPLIES, [{"kept": False}], conn=conn)
            raise RuntimeError("boom")
    assert [m.message for m in await pg_backend.queue.read(REPLIES, 10, 30)] == [{"kept": True}]


async def test_transaction_joins_a_callers_connection_with_a_savepoint(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await conn.execute(b"CREATE TABLE app_orders (id int)")
        await conn.execute(b"INSERT INTO app_orders VALUES (1)")
        with pytest.raises(RuntimeError):
            async with pg_backend.transaction(conn) as joined:
                assert joined is conn
                await pg_backend.queue.enqueue(REPLIES, [{"n": 1}], conn=joined)
                raise RuntimeError("undo only this part")
        await pg_backend.queue.enqueue(REPLIES, [{"n": 2}], conn=conn)
        await conn.commit()
        cur = await conn.execute(b"SELECT count(*) FROM app_orders")
        assert await cur.fetchone() == (1,)
    assert [m.message for m in await pg_backend.queue.read(REPLIES, 10, 30)] == [{"n": 2}]


async def test_single_statements_restore_the_pool_connections_mode(
    pg_backend: PostgresBackend,
) -> None:
    await pg_backend.queue.enqueue(REPLIES, [{"n": 1}])
    async with pg_backend.pool.connection() as conn:
        assert conn.autocommit is False


async def test_connect_owns_its_pool(pg_dsn: str) -> None:
    backend = await PostgresBackend.connect(pg_dsn, min_size=1, max_size=2)
    async with backend.listen([REPLIES]) as waiter:
        await backend.queue.enqueue(REPLIES, [{"n": 1}])
        assert await waiter.wait(5) is True
    await backend.close()
    assert backend.pool.closed
    assert PostgresBackend.from_dsn == PostgresBackend.connect


async def test_a_read_in_the_callers_transaction_keeps_its_commit_synchronous(
    pg_backend: PostgresBackend,
) -> None:
    # A read of its own commits without waiting for the disk; inside a caller's
    # transaction it must not change how the caller's own writes commit.
    await pg_backend.queue.enqueue("sync_q", [{"n": 1}, {"n": 2}])
    async with pg_backend.transaction() as tx:
        before = await (await tx.execute("SHOW synchronous_commit")).fetchone()
        [message] = await pg_backend.queue.read("sync_q", 1, 30, conn=tx)
        after = await (await tx.execute("SHOW synchronous_commit")).fetchone()
    assert before == after == ("on",)
    [own] = await pg_backend.queue.read("sync_q", 1, 30)  # its own transaction
    assert (message.read_count, own.read_count) == (1, 1)
    async with pg_backend.transaction() as tx:  # the setting did not leak to the session
        assert await (await tx.execute("SHOW synchronous_commit")).fetchone() == ("on",)
