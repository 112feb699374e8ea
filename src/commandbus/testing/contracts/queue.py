"""Contract: ``MessageQueue`` and ``Backend.listen`` notifications."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from commandbus.models import JsonObject
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DOMAIN,
    REPLIES,
    ContractBase,
    _Rollback,
    request,
)


class MessageQueueContract(ContractBase):
    """The contract of ``MessageQueue`` and ``Backend.listen`` notifications."""

    # -- queue ---------------------------------------------------------------------------

    async def test_queue_enqueue_read_delete_and_depth(self, backend: Backend) -> None:
        q = REPLIES
        ids = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}, {"n": 3}])
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert await backend.queue.depth(q) == 3
        assert await backend.queue.depth("empty__queue") == 0

        read = await backend.queue.read(q, 2, 30)
        assert [(m.msg_id, m.message, m.read_count, m.queue_name) for m in read] == [
            (ids[0], {"n": 1}, 1, q),
            (ids[1], {"n": 2}, 1, q),
        ]
        assert all(m.visible_at > m.enqueued_at for m in read)
        [third] = await backend.queue.read(q, 5, 30)
        assert third.msg_id == ids[2]
        assert await backend.queue.read(q, 5, 30) == []
        assert await backend.queue.depth(q) == 3

        assert await backend.queue.delete(q, [ids[0], ids[0] + 1_000_000]) == 1
        assert await backend.queue.delete(q, [ids[0]]) == 0
        assert await backend.queue.depth(q) == 2

        await self.advance(backend, 31)
        again = await backend.queue.read(q, 5, 30)
        assert [(m.msg_id, m.read_count) for m in again] == [(ids[1], 2), (ids[2], 2)]

    async def test_queue_stats_counts_depth_leases_delays_and_the_oldest(
        self, backend: Backend
    ) -> None:
        q = REPLIES
        empty = await backend.queue.stats(q)
        assert (empty.depth, empty.in_flight, empty.delayed, empty.oldest_enqueued_at) == (
            0,
            0,
            0,
            None,
        )
        assert empty.oldest_age_seconds(datetime.now(UTC)) == 0.0
        await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}, {"n": 3}])
        await backend.queue.enqueue(q, [{"later": True}], delay=60)
        await backend.queue.enqueue("other__queue", [{"n": 9}])
        [leased] = await backend.queue.read(q, 1, 30)
        stats = await backend.queue.stats(q)
        assert (stats.queue, stats.depth, stats.in_flight, stats.delayed) == (q, 4, 1, 1)
        assert stats.oldest_enqueued_at == leased.enqueued_at
        assert stats.oldest_age_seconds(leased.enqueued_at + timedelta(seconds=5)) == 5.0
        await self.advance(backend, 31)  # the lease ran out; the delay has not
        after = await backend.queue.stats(q)
        assert (after.depth, after.in_flight, after.delayed) == (4, 0, 1)

    async def test_queue_delay_and_set_visibility(self, backend: Backend) -> None:
        q = REPLIES
        [late] = await backend.queue.enqueue(q, [{"late": True}], delay=30)
        [now] = await backend.queue.enqueue(q, [{"late": False}])
        assert [m.msg_id for m in await backend.queue.read(q, 5, 10)] == [now]

        assert await backend.queue.set_visibility(q, late, 0) is True
        assert await backend.queue.set_visibility(q, now, 0) is True
        # Oldest first once both are visible.
        assert [m.msg_id for m in await backend.queue.read(q, 5, 100)] == [late, now]

        assert await backend.queue.set_visibility(q, now, 0) is True
        assert await backend.queue.set_visibility(q, late, 50) is True
        [visible] = await backend.queue.read(q, 5, 100)
        assert visible.msg_id == now
        assert visible.read_count == 3
        await backend.queue.delete(q, [now])
        assert await backend.queue.set_visibility(q, now, 0) is False
        await self.advance(backend, 51)
        [back] = await backend.queue.read(q, 5, 100)
        assert (back.msg_id, back.read_count) == (late, 2)

    async def test_read_hands_out_messages_in_the_order_they_became_visible(
        self, backend: Backend
    ) -> None:
        q = REPLIES
        first, second = await backend.queue.enqueue(q, [{"n": 1}, {"n": 2}])
        [leased] = await backend.queue.read(q, 1, 30)
        assert leased.msg_id == first
        await self.advance(backend, 31)
        # ``second`` has been visible since it was sent, ``first`` only since its lease ran
        # out: ``second`` comes first, although it is younger.
        [next_one] = await backend.queue.read(q, 1, 30)
        assert (next_one.msg_id, next_one.read_count) == (second, 1)
        [then] = await backend.queue.read(q, 1, 30)
        assert (then.msg_id, then.read_count) == (first, 2)

    async def test_queues_are_separate(self, backend: Backend) -> None:
        [a] = await backend.queue.enqueue("alpha__replies", [{"q": "a"}])
        [b] = await backend.queue.enqueue("beta__replies", [{"q": "b"}])
        assert a != b
        assert await backend.queue.delete("alpha__replies", [b]) == 0
        assert await backend.queue.set_visibility("alpha__replies", b, 60) is False
        assert [m.message for m in await backend.queue.read("beta__replies", 5, 30)] == [{"q": "b"}]
        assert await backend.queue.depth("alpha__replies") == 1

    async def test_stored_payloads_cannot_be_changed_by_callers(self, backend: Backend) -> None:
        payload: JsonObject = {"items": [1, 2], "meta": {"k": "v"}}
        await backend.queue.enqueue(REPLIES, [payload])
        payload["items"].append(3)
        payload["meta"]["k"] = "changed"
        [msg] = await backend.queue.read(REPLIES, 1, 0)
        assert msg.message == {"items": [1, 2], "meta": {"k": "v"}}
        msg.message["items"].append(99)
        [again] = await backend.queue.read(REPLIES, 1, 0)
        assert again.message == {"items": [1, 2], "meta": {"k": "v"}}

        req = request(data={"deep": {"x": [1]}})
        await self.send(backend, req)
        req.data["deep"]["x"].append(2)
        [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
        assert claimed.command.data == {"deep": {"x": [1]}}

    # -- notifications -------------------------------------------------------------------

    async def test_listen_wakes_after_commit(self, backend: Backend) -> None:
        async with backend.listen([COMMANDS]) as waiter:
            async with backend.transaction() as conn:
                await self.send(backend, request(), conn=conn)
                task = asyncio.ensure_future(waiter.wait(30))
                await self.let_others_run()
                assert not task.done()  # nothing before commit
            assert await asyncio.wait_for(task, 10) is True

    async def test_listen_reports_a_notification_that_arrived_before_wait(
        self, backend: Backend
    ) -> None:
        async with backend.listen([REPLIES, COMMANDS]) as waiter:
            await backend.queue.enqueue(REPLIES, [{"x": 1}])
            await self.let_others_run()
            assert await asyncio.wait_for(waiter.wait(30), 10) is True

    async def test_listen_ignores_rolled_back_enqueue_and_other_queues(
        self, backend: Backend
    ) -> None:
        async with backend.listen([COMMANDS]) as waiter:
            with pytest.raises(_Rollback):
                async with backend.transaction() as conn:
                    await self.send(backend, request(), conn=conn)
                    raise _Rollback
            await backend.queue.enqueue(REPLIES, [{"x": 1}])
            assert await self.wait_expecting_timeout(backend, waiter) is False
