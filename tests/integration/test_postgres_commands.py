"""PostgresCommandStore and PostgresMessageQueue beyond the shared contract suite:
what only a real database shows (row locks between connections, HOT updates, one
round trip per batch, SKIP LOCKED between concurrent claimers, wire format)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from commandbus.errors import DuplicateCommandError
from commandbus.models import (
    AuditEventType,
    CommandStatus,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SendRequest,
    SettleAction,
    Settlement,
)
from commandbus.postgres import PostgresBackend
from commandbus.postgres.queries import load_queries
from commandbus.testing.pg import shift_stored_times

DOMAIN = "payments"
COMMANDS = "payments__commands"
REPLIES = "payments__replies"
A = AuditEventType


def req(data: dict[str, Any] | None = None, **kw: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "command_type": "Debit",
        "command_id": uuid4(),
        "data": {"amount": 1} if data is None else data,
        "correlation_id": uuid4(),
        "reply_to": REPLIES,
    }
    fields.update(kw)
    return SendRequest(**fields)


async def fetchall(pool: AsyncConnectionPool[Any], query: bytes, params: Any = None) -> list[Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def wait_until_blocked(pool: AsyncConnectionPool[Any], pid: int) -> None:
    """Poll pg_stat_activity until backend ``pid`` waits for a lock (max 10 s)."""
    for _ in range(1000):
        rows = await fetchall(
            pool, b"SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        )
        if rows and rows[0][0] == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never blocked on a lock")


def settlement(
    r: SendRequest, msg_id: int, action: SettleAction, status: CommandStatus, **kw: Any
) -> Settlement:
    fields: dict[str, Any] = {
        "domain": r.domain,
        "command_id": r.command_id,
        "msg_id": msg_id,
        "action": action,
        "status": status,
        "attempts": 1,
        "audit": ((A.COMPLETED, None),),
    }
    fields.update(kw)
    return Settlement(**fields)


# -- wire format -------------------------------------------------------------------------


async def test_command_message_wire_format(pg_backend: PostgresBackend) -> None:
    r = req({"amount": 5, "tags": ["a"]})
    [sent] = await pg_backend.commands.insert([r], 3)
    [(message, headers, read_ct, queue)] = await fetchall(
        pg_backend.pool,
        b"SELECT message, headers, read_ct, queue_name FROM commandbus.queue_message"
        b" WHERE msg_id = %s",
        (sent.msg_id,),
    )
    assert message == {
        "domain": DOMAIN,
        "command_type": "Debit",
        "command_id": str(r.command_id),
        "correlation_id": str(r.correlation_id),
        "reply_to": REPLIES,
        "data": {"amount": 5, "tags": ["a"]},
    }
    assert (headers, read_ct, queue) == (None, 0, COMMANDS)


async def test_one_command_is_stored_as_in_a_batch(pg_backend: PostgresBackend) -> None:
    """A send of one command has a statement of its own (scalar parameters): it writes
    the same message, command row and SENT event as a batch does."""
    options: dict[str, Any] = {
        "data": {"amount": 5},
        "max_attempts": 7,
        "delay": 30.0,
        "headers": {"traceparent": "00-abc-def-01"},
    }
    alone = req(**options)
    in_batch = req(**options)
    [one] = await pg_backend.commands.insert([alone], 3)
    [batched, _] = await pg_backend.commands.insert([in_batch, req()], 3)
    query = (
        b"SELECT m.message - 'command_id' - 'correlation_id',"
        b" round(extract(epoch FROM m.vt - m.enqueued_at)), c.status, c.attempts,"
        b" c.max_attempts, c.reply_to, c.msg_id = m.msg_id, a.event_type,"
        b" a.details = jsonb_build_object('msg_id', m.msg_id)"
        b" FROM commandbus.queue_message m"
        b" JOIN commandbus.command c ON c.msg_id = m.msg_id"
        b" JOIN commandbus.audit a ON a.command_id = c.command_id"
        b" WHERE m.msg_id = %s"
    )
    [stored_alone] = await fetchall(pg_backend.pool, query, (one.msg_id,))
    [stored_in_batch] = await fetchall(pg_backend.pool, query, (batched.msg_id,))
    assert stored_alone == stored_in_batch
    assert stored_alone[0]["headers"] == {"traceparent": "00-abc-def-01"}
    assert stored_alone[1:] == (30, "PENDING", 0, 7, REPLIES, True, "SENT", True)


# -- duplicates --------------------------------------------------------------------------


async def test_duplicate_in_callers_transaction_keeps_that_transaction_usable(
    pg_backend: PostgresBackend,
) -> None:
    existing = req()
    await pg_backend.commands.insert([existing], 3)
    fresh, later = req(), req()
    async with pg_backend.transaction() as conn:
        await pg_backend.commands.insert([fresh], 3, conn=conn)
        with pytest.raises(DuplicateCommandError) as raised:
            await pg_backend.commands.insert(
                [req(), req(command_id=existing.command_id)], 3, conn=conn
            )
        assert raised.value.command_ids == [existing.command_id]
        # a send of one command has its own statement: the same savepoint
        with pytest.raises(DuplicateCommandError) as raised:
            await pg_backend.commands.insert([req(command_id=existing.command_id)], 3, conn=conn)
        assert raised.value.command_ids == [existing.command_id]
        # only the failed call was undone (a savepoint); the transaction goes on
        await pg_backend.commands.insert([later], 3, conn=conn)
    assert await pg_backend.queue.depth(COMMANDS) == 3
    rows = await fetchall(pg_backend.pool, b"SELECT count(*) FROM commandbus.audit")
    assert rows == [(3,)]
    with pytest.raises(DuplicateCommandError) as raised:
        await pg_backend.commands.insert([req(command_id=later.command_id)], 3)
    assert raised.value.command_ids == [later.command_id]


async def test_concurrent_senders_race_on_the_unique_key(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    """Sender B starts while sender A's transaction (same id) is open: B blocks on the
    primary key, and raises once A commits, with nothing of B's call written."""
    dup = req(data={"from": "A"})
    b_only = req(data={"from": "B"})
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn) as conn_a,
        await psycopg.AsyncConnection.connect(pg_dsn) as conn_b,
    ):
        async with conn_a.transaction():
            await pg_backend.commands.insert([dup], 3, conn=conn_a)
            racer = asyncio.ensure_future(
                pg_backend.commands.insert(
                    [b_only, req(data={"from": "B"}, command_id=dup.command_id)],
                    3,
                    conn=conn_b,
                )
            )
            await wait_until_blocked(pg_backend.pool, conn_b.info.backend_pid)
            assert not racer.done()
        with pytest.raises(DuplicateCommandError) as raised:
            await racer
        assert raised.value.command_ids == [dup.command_id]
        await conn_b.commit()
    assert await pg_backend.commands.get(DOMAIN, b_only.command_id) is None
    assert await pg_backend.queue.depth(COMMANDS) == 1
    [claimed] = await pg_backend.commands.claim(DOMAIN, 10, 30)
    assert claimed.command.data == {"from": "A"}
    trail = await pg_backend.commands.audit_trail(dup.command_id)
    assert [e.event_type for e in trail] == [A.SENT, A.RECEIVED]


async def test_batch_senders_with_overlapping_ids_do_not_deadlock(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    """Both batches hold the same ids in opposite orders; rows are inserted in key order,
    so one sender waits for the other instead of deadlocking."""
    shared = [req() for _ in range(20)]
    dsn = pg_dsn
    async with (
        await psycopg.AsyncConnection.connect(dsn) as conn_a,
        await psycopg.AsyncConnection.connect(dsn) as conn_b,
    ):
        async with conn_a.transaction():
            await pg_backend.commands.insert(shared, 3, conn=conn_a)
            racer = asyncio.ensure_future(
                pg_backend.commands.insert(list(reversed(shared)), 3, conn=conn_b)
            )
            await wait_until_blocked(pg_backend.pool, conn_b.info.backend_pid)
        with pytest.raises(DuplicateCommandError) as raised:
            await racer
        assert sorted(raised.value.command_ids) == sorted(r.command_id for r in shared)
    assert await pg_backend.queue.depth(COMMANDS) == 20


# -- claim -------------------------------------------------------------------------------


async def test_concurrent_claimers_never_share_a_message(pg_backend: PostgresBackend) -> None:
    reqs = [req({"n": i}) for i in range(200)]
    await pg_backend.commands.insert(reqs, 3)

    async def claimer() -> list[UUID]:
        got: list[UUID] = []
        while batch := await pg_backend.commands.claim(DOMAIN, 7, 60):
            got.extend(c.command.command_id for c in batch)
        return got

    results = await asyncio.gather(*(claimer() for _ in range(6)))
    claimed = [cid for r in results for cid in r]
    assert len(claimed) == 200
    assert set(claimed) == {r.command_id for r in reqs}
    rows = await fetchall(
        pg_backend.pool,
        b"SELECT count(*) FILTER (WHERE event_type = 'RECEIVED'),"
        b" count(DISTINCT command_id) FILTER (WHERE event_type = 'RECEIVED')"
        b" FROM commandbus.audit",
    )
    assert rows == [(200, 200)]


async def test_claim_in_a_transaction_locks_its_messages_from_other_claimers(
    pg_backend: PostgresBackend,
) -> None:
    a, b = req(), req()
    await pg_backend.commands.insert([a, b], 3)
    async with pg_backend.transaction() as conn:
        [first] = await pg_backend.commands.claim(DOMAIN, 1, 0, conn=conn)
        # vt 0: the message is visible again at once, but its row stays locked until
        # commit, so another claimer skips it instead of waiting
        others = await asyncio.wait_for(pg_backend.commands.claim(DOMAIN, 10, 30), 5)
        assert [c.command.command_id for c in others] == [b.command_id]
    assert first.command.command_id == a.command_id


async def test_claim_returns_deliveries_beyond_max_attempts(pg_backend: PostgresBackend) -> None:
    """A worker crashed on each delivery: the core decides what to do with attempt 4."""
    r = req(max_attempts=3)
    await pg_backend.commands.insert([r], 3)
    await pg_backend.commands.set_status(
        DOMAIN, r.command_id, CommandStatus.IN_PROGRESS, attempts=3
    )
    [claimed] = await pg_backend.commands.claim(DOMAIN, 1, 30)
    assert (claimed.attempt, claimed.max_attempts) == (4, 3)


async def test_visibility_expiry_redelivers_after_the_real_timeout(
    pg_backend: PostgresBackend,
) -> None:
    r = req()
    await pg_backend.commands.insert([r], 3)
    [first] = await pg_backend.commands.claim(DOMAIN, 1, 0.2)
    assert await pg_backend.commands.claim(DOMAIN, 1, 0.2) == []
    again: list[Any] = []
    for _ in range(100):  # the database clock decides; poll for up to 5 s
        await asyncio.sleep(0.05)
        again = await pg_backend.commands.claim(DOMAIN, 1, 30)
        if again:
            break
    assert [(c.msg_id, c.attempt) for c in again] == [(first.msg_id, 2)]


async def update_counts(conn: Any) -> tuple[int, int]:
    """(updates, HOT updates) of the command table counted by this backend so far and not
    yet flushed to the shared statistics (they include earlier transactions)."""
    cur = await conn.execute(
        b"SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
        b" WHERE schemaname = 'commandbus' AND relname = 'command'"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_claim_and_settle_update_command_rows_in_place(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    """No index covers a column that claim or settle changes, so both updates are HOT
    (no index writes): the point of the in_tsq generated column."""
    reqs = [req() for _ in range(5)]
    by_id = {r.command_id: r for r in reqs}
    await pg_backend.commands.insert(reqs, 3)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        async with conn.transaction():
            before = await update_counts(conn)
            claimed = await pg_backend.commands.claim(DOMAIN, 20, 30, conn=conn)
            after_claim = await update_counts(conn)
        async with conn.transaction():
            await pg_backend.commands.settle(
                [
                    settlement(
                        by_id[c.command.command_id],
                        c.msg_id,
                        SettleAction.DELETE,
                        CommandStatus.COMPLETED,
                    )
                    for c in claimed
                ],
                conn=conn,
            )
            after_settle = await update_counts(conn)
    assert len(claimed) == 5
    assert (after_claim[0] - before[0], after_claim[1] - before[1]) == (5, 5)
    assert (after_settle[0] - after_claim[0], after_settle[1] - after_claim[1]) == (5, 5)


async def test_a_message_is_never_updated_then_deleted_in_one_settle(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    reqs = [req() for _ in range(10)]
    await pg_backend.commands.insert(reqs, 3)
    claimed = await pg_backend.commands.claim(DOMAIN, 10, 30)
    by_id = {r.command_id: r for r in reqs}
    query = (
        b"SELECT n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"
        b" WHERE schemaname = 'commandbus' AND relname = 'queue_message'"
    )
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn, conn.transaction():
        before = await (await conn.execute(query)).fetchone()
        await pg_backend.commands.settle(
            [
                settlement(
                    by_id[c.command.command_id],
                    c.msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                )
                for c in claimed
            ],
            conn=conn,
        )
        after = await (await conn.execute(query)).fetchone()
    assert before is not None and after is not None
    assert (after[0] - before[0], after[1] - before[1]) == (0, 10)


# -- settle ------------------------------------------------------------------------------


async def test_settle_writes_audit_in_given_order_across_settlements(
    pg_backend: PostgresBackend,
) -> None:
    reqs = [req() for _ in range(3)]
    await pg_backend.commands.insert(reqs, 3)
    claimed = await pg_backend.commands.claim(DOMAIN, 3, 30)
    by_id = {r.command_id: r for r in reqs}
    settles = [
        settlement(
            by_id[c.command.command_id],
            c.msg_id,
            SettleAction.RETRY,
            CommandStatus.PENDING,
            retry_delay=60,
            audit=tuple((A.FAILED, {"i": i, "k": k}) for k in range(3)),
        )
        for i, c in enumerate(claimed)
    ]
    await pg_backend.commands.settle(settles)
    rows = await fetchall(
        pg_backend.pool,
        b"SELECT details FROM commandbus.audit WHERE event_type = 'FAILED' ORDER BY id",
    )
    assert [r[0] for r in rows] == [{"i": i, "k": k} for i in range(3) for k in range(3)]
    # RETRY with a delay: invisible for about the delay, measured on the database clock
    [(remaining,)] = await fetchall(
        pg_backend.pool,
        b"SELECT min(extract(epoch FROM vt - now())) FROM commandbus.queue_message",
    )
    assert 55 < float(remaining) <= 60


async def test_settle_notifies_each_reply_queue_once_at_commit(
    pg_backend: PostgresBackend, pg_dsn: str
) -> None:
    reqs = [req(reply_to=REPLIES) for _ in range(5)] + [req(reply_to="audit__replies")]
    await pg_backend.commands.insert(reqs, 3)
    claimed = await pg_backend.commands.claim(DOMAIN, 10, 30)
    by_id = {r.command_id: r for r in reqs}
    dsn = pg_dsn
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(b"LISTEN commandbus")
        settles = []
        for c in claimed:
            r = by_id[c.command.command_id]
            assert r.reply_to is not None
            reply = Reply(r.command_id, r.correlation_id, ReplyOutcome.SUCCESS, {"ok": True})
            settles.append(
                settlement(
                    r,
                    c.msg_id,
                    SettleAction.DELETE,
                    CommandStatus.COMPLETED,
                    reply=QueuedReply(r.reply_to, reply),
                )
            )
        await pg_backend.commands.settle(settles)
        payloads = [n.payload async for n in listener.notifies(timeout=0.5)]
    assert sorted(payloads) == ["audit__replies", REPLIES]
    assert await pg_backend.queue.depth(REPLIES) == 5
    assert await pg_backend.queue.depth("audit__replies") == 1


async def test_insert_notifies_once_per_queue(pg_backend: PostgresBackend, pg_dsn: str) -> None:
    dsn = pg_dsn
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(b"LISTEN commandbus")
        await pg_backend.commands.insert(
            [req() for _ in range(10)] + [req(domain="reports") for _ in range(3)], 3
        )
        await pg_backend.queue.enqueue(REPLIES, [{"n": i} for i in range(4)])
        payloads = [n.payload async for n in listener.notifies(timeout=0.5)]
    assert sorted(payloads) == [COMMANDS, REPLIES, "reports__commands"]


# -- time --------------------------------------------------------------------------------


async def test_shift_stored_times_moves_deadlines_and_history(pg_backend: PostgresBackend) -> None:
    r = req(delay=100)
    await pg_backend.commands.insert([r], 3)
    before = await pg_backend.commands.get(DOMAIN, r.command_id)
    assert before is not None
    assert await pg_backend.commands.claim(DOMAIN, 1, 30) == []
    async with pg_backend.transaction() as conn:
        await shift_stored_times(conn, 101)
    after = await pg_backend.commands.get(DOMAIN, r.command_id)
    assert after is not None
    assert (before.created_at - after.created_at).total_seconds() == pytest.approx(101)
    [claimed] = await pg_backend.commands.claim(DOMAIN, 1, 30)
    assert claimed.command.command_id == r.command_id


# -- plans -------------------------------------------------------------------------------


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found.extend(_plan_nodes(child))
    return found


async def test_claim_cost_does_not_grow_with_the_backlog(pg_backend: PostgresBackend) -> None:
    """With 10,000 commands queued in fresh (never analysed) tables, one claim of 50 still
    walks the queue index in order and probes command rows by key: it neither reads every
    visible message (bitmap scan + sort) nor every command of the domain."""
    for _ in range(20):
        await pg_backend.commands.insert([req({"pad": "x" * 100}) for _ in range(500)], 3)
    params = {"queue": COMMANDS, "domain": DOMAIN, "limit": 50, "vt": 30.0}
    async with pg_backend.transaction() as conn:
        cur = await conn.execute(
            b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + load_queries()["claim_commands"],
            params,
        )
        row = await cur.fetchone()
    assert row is not None
    nodes = _plan_nodes(row[0][0]["Plan"])
    [pick] = [n for n in nodes if n.get("Function Name") == "pick_messages"]
    assert pick["Actual Rows"] == 50
    # measured: the ordered index walk touches ~60 buffers (with the function's own
    # planning); the planner's unpinned choice, a bitmap scan of the backlog, ~580
    assert pick["Shared Hit Blocks"] + pick.get("Shared Read Blocks", 0) < 200
    for node in nodes:
        if node.get("Relation Name") == "command":
            assert node["Actual Rows"] * node["Actual Loops"] <= 50, node["Node Type"]
