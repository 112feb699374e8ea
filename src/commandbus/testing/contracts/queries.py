"""Contract: read-only queries of ``CommandStore``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

from commandbus.models import (
    CommandQuery,
    CommandStatus,
    SettleAction,
)
from commandbus.ports import Backend
from commandbus.testing.contracts._base import (
    COMMANDS,
    DOMAIN,
    OTHER_DOMAIN,
    A,
    ContractBase,
    expected_message,
    request,
)


class QueryContract(ContractBase):
    """The contract of read-only queries of ``CommandStore``."""

    # -- queries -------------------------------------------------------------------------

    async def test_query_filters_orders_newest_first_and_pages(self, backend: Backend) -> None:
        older = [request("Debit"), request("Credit")]
        await self.send(backend, *older)
        await self.advance(backend, 10)
        newer = [request("Debit"), request("Debit")]
        await self.send(backend, *newer)
        await self.send(backend, request("Debit", domain=OTHER_DOMAIN, reply_to=None))
        await backend.commands.claim(DOMAIN, 1, 30)  # older[0] -> IN_PROGRESS

        def ids(metas: Sequence[Any]) -> list[UUID]:
            return [m.command_id for m in metas]

        by_time = sorted(newer, key=lambda r: r.command_id, reverse=True) + sorted(
            older, key=lambda r: r.command_id, reverse=True
        )
        every = await backend.commands.query(CommandQuery(domain=DOMAIN))
        assert ids(every) == [r.command_id for r in by_time]
        created = [m.created_at for m in every]
        assert created == sorted(created, reverse=True)
        assert created[0] > created[-1]

        paged = await backend.commands.query(CommandQuery(domain=DOMAIN, limit=2, offset=1))
        assert ids(paged) == [r.command_id for r in by_time[1:3]]
        assert len(await backend.commands.query(CommandQuery())) == 5
        assert len(await backend.commands.query(CommandQuery(limit=3))) == 3
        debits = await backend.commands.query(CommandQuery(domain=DOMAIN, command_type="Debit"))
        assert sorted(ids(debits)) == sorted(r.command_id for r in (older[0], *newer))
        running = await backend.commands.query(CommandQuery(status=CommandStatus.IN_PROGRESS))
        assert ids(running) == [older[0].command_id]
        # created_after is inclusive, created_before exclusive.
        cut = min(m.created_at for m in every if m.command_id in {r.command_id for r in newer})
        recent = await backend.commands.query(CommandQuery(domain=DOMAIN, created_after=cut))
        assert sorted(ids(recent)) == sorted(r.command_id for r in newer)
        early = await backend.commands.query(CommandQuery(domain=DOMAIN, created_before=cut))
        assert sorted(ids(early)) == sorted(r.command_id for r in older)
        assert await backend.commands.query(CommandQuery(domain="nobody")) == []
        # correlation_id: the commands of one process (or one request of the caller).
        correlated = newer[0].correlation_id
        assert correlated is not None
        same = await backend.commands.query(CommandQuery(correlation_id=correlated))
        assert ids(same) == [newer[0].command_id]

    async def test_audit_trail_is_in_write_order(self, backend: Backend) -> None:
        req = request()
        await self.send(backend, req)
        events = [A.OPERATOR_RETRY, A.RECEIVED, A.FAILED, A.OPERATOR_COMPLETE, A.COMPLETED]
        for i, event in enumerate(events):
            await backend.commands.append_audit(DOMAIN, req.command_id, [(event, {"i": i})])
        trail = await backend.commands.audit_trail(req.command_id, DOMAIN)
        assert [e.event_type for e in trail] == [A.SENT, *events]
        assert [e.details for e in trail[1:]] == [{"i": i} for i in range(len(events))]
        stamps = [e.timestamp for e in trail]
        assert stamps == sorted(stamps)
        assert await backend.commands.audit_trail(uuid4()) == []

    async def test_troubleshooting_list_and_count(self, backend: Backend) -> None:
        reqs = [request("Debit", {"n": 0}), request("Credit", {"n": 1})]
        await self.send(backend, *reqs)
        await self.advance(backend, 5)
        reqs.append(request("Debit", {"n": 2}))
        await self.send(backend, reqs[2])
        healthy = request("Debit")
        await self.send(backend, healthy)
        other = request("Debit", domain=OTHER_DOMAIN, reply_to=None)
        await self.send(backend, other)

        claimed = await backend.commands.claim(DOMAIN, 10, 30)
        claimed += await backend.commands.claim(OTHER_DOMAIN, 10, 30)
        by_id = {c.command.command_id: c for c in claimed}
        for req in [*reqs, other]:
            await backend.commands.settle(
                [
                    self.settlement(
                        req,
                        by_id[req.command_id].msg_id,
                        SettleAction.ARCHIVE,
                        CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                        1,
                        [(A.MOVED_TO_TSQ, None)],
                        error_type="PermanentCommandError",
                        error_code="P",
                        error_message="p",
                    )
                ]
            )

        first_two = sorted(reqs[:2], key=lambda r: r.command_id)
        items = await backend.commands.list_troubleshooting(DOMAIN)
        assert [i.command_id for i in items] == [r.command_id for r in (*first_two, reqs[2])]
        assert [i.data for i in items] == [r.data for r in (*first_two, reqs[2])]
        assert {i.domain for i in items} == {DOMAIN}
        assert await backend.commands.count_troubleshooting(DOMAIN) == 3
        assert await backend.commands.count_troubleshooting(DOMAIN, "Debit") == 2
        assert await backend.commands.count_troubleshooting(OTHER_DOMAIN) == 1
        debits = await backend.commands.list_troubleshooting(DOMAIN, "Debit")
        assert [i.command_id for i in debits] == [reqs[0].command_id, reqs[2].command_id]
        page = await backend.commands.list_troubleshooting(DOMAIN, limit=1, offset=1)
        assert [i.command_id for i in page] == [first_two[1].command_id]
        assert await backend.commands.list_troubleshooting(DOMAIN, offset=3) == []

    async def test_archived_message_is_the_latest_archive(self, backend: Backend) -> None:
        req = request(data={"v": 1})
        await self.send(backend, req)
        assert await backend.commands.archived_message(DOMAIN, req.command_id) is None
        for attempt, data in ((1, {"v": 1}), (2, {"v": 2})):
            if attempt == 2:  # an operator re-enqueued a changed payload
                message = {**expected_message(req), "data": data}
                [msg_id] = await backend.queue.enqueue(COMMANDS, [message])
                await backend.commands.set_status(
                    DOMAIN, req.command_id, CommandStatus.PENDING, msg_id=msg_id
                )
            [claimed] = await backend.commands.claim(DOMAIN, 1, 30)
            assert claimed.command.data == data
            await backend.commands.settle(
                [
                    self.settlement(
                        req,
                        claimed.msg_id,
                        SettleAction.ARCHIVE,
                        CommandStatus.IN_TROUBLESHOOTING_QUEUE,
                        attempt,
                        [(A.MOVED_TO_TSQ, None)],
                    )
                ]
            )
            archived = await backend.commands.archived_message(DOMAIN, req.command_id)
            assert archived == {**expected_message(req), "data": data}
        assert await backend.commands.archived_message(OTHER_DOMAIN, req.command_id) is None
