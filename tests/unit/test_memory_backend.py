"""In-memory backend specifics beyond the shared contract (tests/unit/test_memory_contract.py):
transaction handles, validation, the virtual-clock waiter, locks, cancellation, scale."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import uuid4

import pytest

from commandbus.errors import PayloadTooLargeError, ValidationError
from commandbus.memory import InMemoryBackend, TransactionClosedError
from commandbus.models import (
    AuditEventType,
    CommandQuery,
    CommandStatus,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SendRequest,
    SettleAction,
    Settlement,
)
from commandbus.testing.clock import VirtualClock

DOMAIN = "payments"
COMMANDS = "payments__commands"
REPLIES = "payments__replies"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def backend(clock: VirtualClock) -> InMemoryBackend:
    return InMemoryBackend(clock=clock)


def request(**fields: object) -> SendRequest:
    values: dict[str, object] = {
        "domain": DOMAIN,
        "command_type": "Debit",
        "command_id": uuid4(),
        "data": {"amount": 1},
    }
    values.update(fields)
    return SendRequest(**values)  # type: ignore[arg-type]


class Boom(Exception):
    pass


# -- transaction handles ----------------------------------------------------------------


async def test_a_handle_cannot_be_used_after_its_transaction_ended(
    backend: InMemoryBackend,
) -> None:
    async with backend.transaction() as conn:
        pass
    with pytest.raises(TransactionClosedError, match="already ended"):
        await backend.queue.enqueue(REPLIES, [{"x": 1}], conn=conn)
    assert await backend.queue.depth(REPLIES) == 0


async def test_a_handle_of_another_backend_or_kind_is_refused(backend: InMemoryBackend) -> None:
    other = InMemoryBackend(clock=VirtualClock())
    async with other.transaction() as foreign:
        with pytest.raises(TransactionClosedError, match="another InMemoryBackend"):
            await backend.queue.enqueue(REPLIES, [{"x": 1}], conn=foreign)
    with pytest.raises(TransactionClosedError, match="cannot join 'object'"):
        await backend.queue.depth(REPLIES, conn=object())


async def test_a_closed_backend_opens_no_transactions(backend: InMemoryBackend) -> None:
    await backend.close()
    with pytest.raises(TransactionClosedError, match="closed"):
        await backend.queue.depth(REPLIES)


async def test_savepoints_nest_and_undo_only_their_own_part(backend: InMemoryBackend) -> None:
    async with backend.transaction() as outer:
        [a] = await backend.queue.enqueue(REPLIES, [{"n": "a"}], conn=outer)
        async with backend.transaction(outer) as middle:
            await backend.queue.enqueue(REPLIES, [{"n": "b"}], conn=middle)
            with pytest.raises(Boom):
                async with backend.transaction(middle) as inner:
                    await backend.queue.enqueue(REPLIES, [{"n": "c"}], conn=inner)
                    await backend.queue.delete(REPLIES, [a], conn=inner)
                    raise Boom
            assert await backend.queue.depth(REPLIES, conn=middle) == 2
    read = await backend.queue.read(REPLIES, 10, 30)
    assert [m.message for m in read] == [{"n": "a"}, {"n": "b"}]


async def test_a_cancelled_transaction_rolls_back(backend: InMemoryBackend) -> None:
    entered = asyncio.Event()

    async def slow_sender() -> None:
        async with backend.transaction() as conn:
            await backend.commands.insert([request()], 3, conn=conn)
            entered.set()
            await asyncio.Event().wait()  # parked until cancelled

    task = asyncio.ensure_future(slow_sender())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.queue.depth(COMMANDS) == 0
    assert await backend.commands.claim(DOMAIN, 10, 30) == []


async def test_a_row_lock_is_released_when_its_transaction_rolls_back(
    backend: InMemoryBackend,
) -> None:
    req = request()
    await backend.commands.insert([req], 3)
    seen: list[CommandStatus] = []

    async def operator() -> None:
        async with backend.transaction() as conn:
            meta = await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            assert meta is not None
            seen.append(meta.status)

    with pytest.raises(Boom):
        async with backend.transaction() as conn:
            await backend.commands.lock(DOMAIN, req.command_id, conn=conn)
            await backend.commands.set_status(
                DOMAIN, req.command_id, CommandStatus.CANCELED, conn=conn
            )
            task = asyncio.ensure_future(operator())
            await backend.clock.sleep(0)
            assert not task.done()
            raise Boom
    await task
    assert seen == [CommandStatus.PENDING]


async def test_uncommitted_messages_are_invisible_to_other_transactions(
    backend: InMemoryBackend,
) -> None:
    async with backend.transaction() as conn:
        [msg_id] = await backend.queue.enqueue(REPLIES, [{"x": 1}], conn=conn)
        assert await backend.queue.depth(REPLIES) == 0
        assert await backend.queue.read(REPLIES, 10, 30) == []
        assert await backend.queue.delete(REPLIES, [msg_id]) == 0
        assert await backend.queue.set_visibility(REPLIES, msg_id, 5) is False
        assert await backend.queue.depth(REPLIES, conn=conn) == 1
    [msg] = await backend.queue.read(REPLIES, 10, 30)
    assert (msg.msg_id, msg.read_count) == (msg_id, 1)


# -- validation -------------------------------------------------------------------------


async def test_enqueue_validates_queue_names_and_payloads(clock: VirtualClock) -> None:
    backend = InMemoryBackend(clock=clock, max_payload_bytes=64)
    with pytest.raises(ValidationError, match="invalid queue name"):
        await backend.queue.enqueue("Robert'); DROP TABLE", [{"x": 1}])
    with pytest.raises(ValidationError, match="must be a JSON object"):
        await backend.queue.enqueue(REPLIES, [["not", "an", "object"]])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        await backend.queue.enqueue(REPLIES, [{"x": float("nan")}])
    with pytest.raises(PayloadTooLargeError, match="limit is 64 bytes"):
        await backend.queue.enqueue(REPLIES, [{"ok": 1}, {"big": "x" * 100}])
    assert await backend.queue.depth(REPLIES) == 0


# -- clock ------------------------------------------------------------------------------


async def test_timestamps_come_from_the_injected_clock(
    backend: InMemoryBackend, clock: VirtualClock
) -> None:
    start = clock.now()
    req = request()
    [sent] = await backend.commands.insert([req], 3)
    await clock.advance(90)
    [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
    await clock.advance(5)
    await backend.commands.settle(
        [
            Settlement(
                DOMAIN,
                req.command_id,
                sent.msg_id,
                SettleAction.DELETE,
                CommandStatus.COMPLETED,
                1,
                ((AuditEventType.COMPLETED, None),),
            )
        ]
    )
    meta = await backend.commands.get(DOMAIN, req.command_id)
    assert meta is not None
    assert meta.created_at == start == claimed.command.created_at
    assert meta.updated_at == start + timedelta(seconds=95)
    trail = await backend.commands.audit_trail(req.command_id)
    assert [e.timestamp - start for e in trail] == [
        timedelta(0),
        timedelta(seconds=90),
        timedelta(seconds=95),
    ]


async def test_read_lease_is_measured_on_the_clock(
    backend: InMemoryBackend, clock: VirtualClock
) -> None:
    [msg_id] = await backend.queue.enqueue(REPLIES, [{"x": 1}], delay=10)
    await clock.advance(10)
    [msg] = await backend.queue.read(REPLIES, 1, 30)
    assert msg.enqueued_at == clock.now() - timedelta(seconds=10)
    assert msg.visible_at == clock.now() + timedelta(seconds=30)
    await clock.advance(29.999)
    assert await backend.queue.read(REPLIES, 1, 30) == []
    await clock.advance(0.001)
    [again] = await backend.queue.read(REPLIES, 1, 30)
    assert (again.msg_id, again.read_count) == (msg_id, 2)


# -- waiter -----------------------------------------------------------------------------


async def test_wait_times_out_on_the_virtual_clock(
    backend: InMemoryBackend, clock: VirtualClock
) -> None:
    async with backend.listen([COMMANDS]) as waiter:
        task = asyncio.ensure_future(waiter.wait(5))
        await clock.settle()
        await clock.advance(4.9)
        assert not task.done()
        await clock.advance(0.1)
        assert task.done()
        assert task.result() is False
    assert clock.pending_sleepers == 0


async def test_wait_returns_on_commit_and_drops_its_timer(
    backend: InMemoryBackend, clock: VirtualClock
) -> None:
    async with backend.listen([REPLIES]) as waiter:
        task = asyncio.ensure_future(waiter.wait(60))
        await clock.settle()
        assert clock.pending_sleepers == 1
        await backend.queue.enqueue(REPLIES, [{"x": 1}])
        assert await task is True
        await clock.settle()
        assert clock.pending_sleepers == 0
        # One notification wakes one wait: the next one times out.
        assert await waiter.wait(0) is False


async def test_a_notification_between_waits_is_kept_once(backend: InMemoryBackend) -> None:
    async with backend.listen([REPLIES]) as waiter:
        await backend.queue.enqueue(REPLIES, [{"x": 1}])
        await backend.queue.enqueue(REPLIES, [{"x": 2}])
        assert await waiter.wait(0) is True
        assert await waiter.wait(0) is False


async def test_a_waiter_stops_hearing_after_listen_ends(backend: InMemoryBackend) -> None:
    async with backend.listen([REPLIES]) as waiter:
        pass
    await backend.queue.enqueue(REPLIES, [{"x": 1}])
    assert await waiter.wait(0) is False


async def test_settle_notifies_the_reply_queue_at_commit(backend: InMemoryBackend) -> None:
    req = request(reply_to=REPLIES)
    await backend.commands.insert([req], 3)
    [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
    async with backend.listen([REPLIES]) as waiter:
        async with backend.transaction() as conn:
            await backend.commands.settle(
                [
                    Settlement(
                        DOMAIN,
                        req.command_id,
                        claimed.msg_id,
                        SettleAction.DELETE,
                        CommandStatus.COMPLETED,
                        1,
                        (),
                        reply=QueuedReply(
                            REPLIES, Reply(req.command_id, None, ReplyOutcome.SUCCESS)
                        ),
                    )
                ],
                conn=conn,
            )
            assert await waiter.wait(0) is False
        assert await waiter.wait(0) is True


# -- scale ------------------------------------------------------------------------------


async def test_ten_thousand_commands_through_send_claim_settle(
    backend: InMemoryBackend, clock: VirtualClock
) -> None:
    total = 10_000
    for start in range(0, total, 500):
        await backend.commands.insert(
            [request(data={"n": n}) for n in range(start, start + 500)], 3
        )
    # Every third delivery fails once and is retried after 10 s.
    seen = 0
    retried = 0
    while True:
        claimed = await backend.commands.claim(DOMAIN, 250, 30)
        if not claimed:
            if await backend.queue.depth(COMMANDS) == 0:
                break
            await clock.advance(10)
            continue
        settlements = []
        for c in claimed:
            seen += 1
            if c.attempt == 1 and c.command.data["n"] % 3 == 0:
                retried += 1
                settlements.append(
                    Settlement(
                        DOMAIN,
                        c.command.command_id,
                        c.msg_id,
                        SettleAction.RETRY,
                        CommandStatus.PENDING,
                        c.attempt,
                        ((AuditEventType.FAILED, None),),
                        retry_delay=10,
                    )
                )
            else:
                settlements.append(
                    Settlement(
                        DOMAIN,
                        c.command.command_id,
                        c.msg_id,
                        SettleAction.DELETE,
                        CommandStatus.COMPLETED,
                        c.attempt,
                        ((AuditEventType.COMPLETED, None),),
                    )
                )
        await backend.commands.settle(settlements)
    assert retried == 3334
    assert seen == total + retried
    completed = await backend.commands.query(
        CommandQuery(domain=DOMAIN, status=CommandStatus.COMPLETED, limit=total)
    )
    assert len(completed) == total
    assert sum(m.attempts for m in completed) == total + retried
