"""No handler outcome and no database refusal can stop a worker (memory and PostgreSQL).

Handlers raise errors full of what PostgreSQL cannot store (NUL, lone surrogates) and
details JSON cannot hold (sets, datetimes, objects); the database refuses one settlement;
the database becomes unreachable. Each time the other commands complete, the bad one ends
where it should, and ``stop()`` returns."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus import (
    BusinessRuleException,
    CommandBus,
    HandlerRegistry,
    PermanentCommandError,
    ReplyOutcome,
    RetryPolicy,
    TransientCommandError,
    TroubleshootingQueue,
    Worker,
)
from commandbus.errors import DatabaseUnavailableError, StorageError

DOMAIN = "payments"
REPLIES = "payments__replies"
NASTY = "bad\x00text\ud800end"
NASTY_DETAILS: dict[str, Any] = {
    "tags": {"a", "b"},
    "when": datetime(2026, 1, 1, tzinfo=UTC),
    "thing": object(),
    "text\x00": NASTY,
    "nan": float("nan"),
}
TERMINAL = {"COMPLETED", "FAILED", "CANCELED", "IN_TROUBLESHOOTING_QUEUE"}


@pytest.fixture
def bus(backend: Any) -> CommandBus:
    return CommandBus(backend, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=(0,)))


def raising(kind: str) -> BaseException:
    if kind == "transient":
        return TransientCommandError(NASTY, NASTY, NASTY_DETAILS)
    if kind == "permanent":
        return PermanentCommandError(NASTY, NASTY, {"set": {1, 2}})
    if kind == "business":
        return BusinessRuleException(NASTY, NASTY, NASTY_DETAILS)
    return ValueError(NASTY)


async def wait_until_terminal(bus: CommandBus, ids: list[UUID], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses = [(await bus.get_command(DOMAIN, i)) for i in ids]
        if all(m is not None and m.status.value in TERMINAL for m in statuses):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not terminal after {seconds} s: {statuses}")


@pytest.mark.parametrize("kind", ["transient", "permanent", "business", "unexpected"])
async def test_handler_errors_that_cannot_be_stored_as_given_never_stop_a_worker(
    bus: CommandBus, kind: str
) -> None:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Debit")
    async def debit(command: Any, context: Any) -> dict[str, Any]:
        if command.data.get("bad"):
            raise raising(kind)
        return {"ok": True}

    bad = uuid4()
    await bus.send(DOMAIN, "Debit", bad, {"bad": True}, reply_to=REPLIES)
    good = [uuid4() for _ in range(20)]
    for command_id in good:
        await bus.send(DOMAIN, "Debit", command_id, {}, reply_to=REPLIES)
    worker = Worker(bus.backend, DOMAIN, registry, retry_policy=bus.retry_policy)
    running = asyncio.create_task(worker.run(concurrency=5, poll_interval=0.05))
    await wait_until_terminal(bus, [bad, *good])
    await asyncio.wait_for(worker.stop(timeout=5), 10)
    await running

    for command_id in good:
        meta = await bus.get_command(DOMAIN, command_id)
        assert meta is not None and meta.status.value == "COMPLETED"
    meta = await bus.get_command(DOMAIN, bad)
    assert meta is not None
    expected = "FAILED" if kind == "business" else "IN_TROUBLESHOOTING_QUEUE"
    assert meta.status.value == expected
    assert meta.last_error_msg == "bad\\x00text\\ud800end"  # escaped, not lost
    if kind != "unexpected":
        assert meta.last_error_code == "bad\\x00text\\ud800end"
    trail = await bus.get_audit_trail(bad)
    failure = next(e for e in trail if e.event_type.value in {"FAILED", "BUSINESS_RULE_FAILED"})
    assert failure.details is not None
    if kind in {"transient", "business"}:
        details = failure.details["details"]
        assert details["tags"] == ["a", "b"]
        assert details["when"] == "2026-01-01T00:00:00+00:00"
        assert details["text\\x00"] == "bad\\x00text\\ud800end"
        assert details["nan"] == "nan"
    replies = {r.reply.command_id: r.reply for r in await bus.read_replies(REPLIES, limit=100)}
    assert replies[bad].outcome in {ReplyOutcome.FAILED, ReplyOutcome.IN_TROUBLESHOOTING_QUEUE}
    assert replies[bad].error_message == "bad\\x00text\\ud800end"
    assert sum(r.outcome is ReplyOutcome.SUCCESS for r in replies.values()) == 20


async def test_a_settlement_the_database_refuses_sends_only_that_command_to_the_tsq(
    bus: CommandBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Debit")
    async def debit(command: Any, context: Any) -> dict[str, Any]:
        return {"ok": True}

    refused = uuid4()
    store = bus.backend.commands
    real_settle = store.settle

    async def settle(settlements: Any, **kwargs: Any) -> int:
        # The database refuses the outcome of one command (as it would a value it cannot
        # store), not the move to the TSQ that replaces it.
        if any(s.command_id == refused and s.status.value == "COMPLETED" for s in settlements):
            raise StorageError("the database refused the request: DataError: injected")
        return await real_settle(settlements, **kwargs)

    monkeypatch.setattr(store, "settle", settle)
    ids = [uuid4() for _ in range(10)]
    for command_id in [*ids[:5], refused, *ids[5:]]:
        await bus.send(DOMAIN, "Debit", command_id, {}, reply_to=REPLIES)
    worker = Worker(bus.backend, DOMAIN, registry)
    assert await asyncio.wait_for(worker.drain(), 10) == 11
    for command_id in ids:
        meta = await bus.get_command(DOMAIN, command_id)
        assert meta is not None and meta.status.value == "COMPLETED"
    meta = await bus.get_command(DOMAIN, refused)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"
    assert meta.last_error_code == "SETTLEMENT_FAILED"
    assert meta.last_error_msg is not None and "injected" in meta.last_error_msg
    [item] = await TroubleshootingQueue(bus.backend).list_troubleshooting(DOMAIN)
    assert item.command_id == refused
    replies = {r.reply.command_id: r.reply for r in await bus.read_replies(REPLIES, limit=20)}
    assert replies[refused].outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
    assert worker.stats.completed == 10 and worker.stats.to_troubleshooting == 1


async def test_stop_returns_while_the_database_stays_unreachable(
    bus: CommandBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = HandlerRegistry()
    ran = asyncio.Event()

    @registry.handler(DOMAIN, "Debit")
    async def debit(command: Any, context: Any) -> dict[str, Any]:
        ran.set()
        return {"ok": True}

    async def unreachable(settlements: Any, **kwargs: Any) -> int:
        raise DatabaseUnavailableError("the database is unavailable: injected")

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {})
    monkeypatch.setattr(bus.backend.commands, "settle", unreachable)
    worker = Worker(bus.backend, DOMAIN, registry)
    running = asyncio.create_task(worker.run(poll_interval=0.05))
    await asyncio.wait_for(ran.wait(), 10)
    started = time.monotonic()
    await asyncio.wait_for(worker.stop(timeout=0.5), 10)
    await asyncio.wait_for(running, 5)
    assert time.monotonic() - started < 5
    assert not worker.is_running
    # Nothing was settled: the command is delivered again once its lease runs out.
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status.value == "IN_PROGRESS"
    assert worker.stats.settle_errors >= 1


async def test_a_transactional_handler_whose_writes_fail_at_commit_is_retried_then_parked(
    pg_backend: Any, pg_pool: Any
) -> None:
    async with pg_pool.connection() as conn:
        await conn.execute("CREATE TABLE ledger (entry int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    bus = CommandBus(pg_backend, retry_policy=RetryPolicy(max_attempts=2, backoff_schedule=(0,)))
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Post", transactional=True)
    async def post(command: Any, context: Any) -> dict[str, Any]:
        # The duplicate is only detected at COMMIT, after the settlement was written.
        entries = [1, 1] if command.data.get("twice") else [command.data["entry"]]
        for entry in entries:
            await context.conn.execute("INSERT INTO ledger VALUES (%s)", (entry,))
        return {"posted": len(entries)}

    bad = uuid4()
    await bus.send(DOMAIN, "Post", bad, {"twice": True})
    good = [uuid4() for _ in range(5)]
    for n, command_id in enumerate(good, start=10):
        await bus.send(DOMAIN, "Post", command_id, {"entry": n})
    worker = Worker(pg_backend, DOMAIN, registry, retry_policy=bus.retry_policy)
    await asyncio.wait_for(worker.drain(), 20)
    meta = await bus.get_command(DOMAIN, bad)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"
    assert meta.attempts == 2 and meta.last_error_code == "SETTLEMENT_FAILED"
    assert meta.last_error_msg is not None and "UniqueViolation" in meta.last_error_msg
    for command_id in good:
        done = await bus.get_command(DOMAIN, command_id)
        assert done is not None and done.status.value == "COMPLETED"
    async with pg_pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM ledger")
        assert (await cur.fetchone())[0] == 5  # none of the failed attempts' writes
