"""Contract: retention, ``CommandStore.prune_finished``."""

from __future__ import annotations

from datetime import timedelta

from commandbus.models import (
    CommandStatus,
    PrunedHistory,
    ReplyOutcome,
    SendRequest,
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
    reply_for,
    request,
)

S = CommandStatus
#: A cutoff this far ahead of the backend's clock: everything finished is older.
LATER = timedelta(seconds=60)


class HistoryContract(ContractBase):
    """The contract of ``prune_finished``: what goes, what always stays."""

    async def finish(
        self,
        backend: Backend,
        req: SendRequest,
        status: CommandStatus = S.COMPLETED,
        action: SettleAction = SettleAction.DELETE,
    ) -> None:
        """Send ``req``, claim it (alone) and settle it with ``status``."""
        await self.send(backend, req)
        [claimed] = await backend.commands.claim(req.domain, 1, 30)
        assert claimed.command.command_id == req.command_id
        outcome = ReplyOutcome.SUCCESS if status is S.COMPLETED else ReplyOutcome.FAILED
        settlement = self.settlement(
            req,
            claimed.msg_id,
            action,
            status,
            1,
            [(A.COMPLETED if status is S.COMPLETED else A.BUSINESS_RULE_FAILED, None)],
            reply=reply_for(req, outcome) if req.reply_to else None,
        )
        assert await backend.commands.settle([settlement]) == 1

    async def test_prune_deletes_finished_commands_and_nothing_else(self, backend: Backend) -> None:
        completed, failed, other = request(), request(), request(domain=OTHER_DOMAIN)
        await self.finish(backend, completed)
        await self.finish(backend, failed, S.FAILED, SettleAction.ARCHIVE)
        await self.finish(backend, other)
        pending, running, parked = request(), request(), request()
        await self.send(backend, parked)
        [parked_claim] = await backend.commands.claim(DOMAIN, 1, 30)
        await backend.commands.settle(
            [
                self.settlement(
                    parked,
                    parked_claim.msg_id,
                    SettleAction.ARCHIVE,
                    S.IN_TROUBLESHOOTING_QUEUE,
                    1,
                    [(A.MOVED_TO_TSQ, None)],
                )
            ]
        )
        await self.send(backend, pending, running)
        claimed = await backend.commands.claim(DOMAIN, 2, 30)
        by_id = {c.command.command_id: c for c in claimed}
        assert set(by_id) == {pending.command_id, running.command_id}
        # "pending" waits for its next attempt, "running" is still being handled
        retry = self.settlement(
            pending,
            by_id[pending.command_id].msg_id,
            SettleAction.RETRY,
            S.PENDING,
            1,
            [(A.RETRY_SCHEDULED, None)],
            retry_delay=3600,
        )
        assert await backend.commands.settle([retry]) == 1
        kept = {
            req.command_id: await self.audit_types(backend, req.command_id)
            for req in (pending, running, parked)
        }

        pruned = await backend.commands.prune_finished(backend.clock.now() + LATER)

        # completed, failed (with its archived message) and the other domain's command
        assert pruned == PrunedHistory(commands=3, audit_events=9, archived_messages=1)
        for req in (completed, failed, other):
            assert await backend.commands.get(req.domain, req.command_id) is None
            assert await backend.commands.audit_trail(req.command_id, req.domain) == []
        assert await backend.commands.archived_message(DOMAIN, failed.command_id) is None
        for req in (pending, running, parked):
            meta = await backend.commands.get(DOMAIN, req.command_id)
            assert meta is not None
            assert await self.audit_types(backend, req.command_id) == kept[req.command_id]
        assert await backend.commands.archived_message(DOMAIN, parked.command_id) == (
            expected_message(parked)
        )
        [item] = await backend.commands.list_troubleshooting(DOMAIN)
        assert item.command_id == parked.command_id
        # nothing left to prune
        again = await backend.commands.prune_finished(backend.clock.now() + LATER)
        assert again == PrunedHistory()

    async def test_prune_keeps_what_finished_after_the_cutoff(self, backend: Backend) -> None:
        old, other_old, recent = request(), request(domain=OTHER_DOMAIN), request()
        await self.finish(backend, old)
        await self.finish(backend, other_old)
        await self.advance(backend, 1)
        between = backend.clock.now()
        await self.advance(backend, 1)
        await self.finish(backend, recent)

        assert await backend.commands.prune_finished(between, domain=OTHER_DOMAIN) == PrunedHistory(
            1, 3, 0
        )
        assert await backend.commands.get(DOMAIN, old.command_id) is not None
        assert await backend.commands.prune_finished(between) == PrunedHistory(1, 3, 0)
        assert await backend.commands.get(DOMAIN, old.command_id) is None
        meta = await backend.commands.get(DOMAIN, recent.command_id)
        assert meta is not None and meta.status is S.COMPLETED

    async def test_prune_runs_in_batches(self, backend: Backend) -> None:
        for _ in range(5):
            await self.finish(backend, request(reply_to=None))
        batches: list[PrunedHistory] = []
        pruned = await backend.commands.prune_finished(
            backend.clock.now() + LATER, batch_size=2, on_batch=batches.append
        )
        assert [b.commands for b in batches] == [2, 2, 1]
        assert pruned == PrunedHistory(5, 15, 0)

    async def test_prune_keeps_a_finished_command_whose_message_is_queued(
        self, backend: Backend
    ) -> None:
        req = request()
        await self.finish(backend, req)
        # A message of the command still in its queue (an operator re-enqueued it): the
        # claim drops it once it sees the command finished, which needs the row.
        [msg_id] = await backend.queue.enqueue(COMMANDS, [expected_message(req)])
        await backend.commands.set_status(DOMAIN, req.command_id, S.COMPLETED, msg_id=msg_id)
        cutoff = backend.clock.now() + LATER
        assert await backend.commands.prune_finished(cutoff) == PrunedHistory()
        assert await backend.commands.claim(DOMAIN, 10, 30) == []  # dropped
        assert await backend.commands.prune_finished(cutoff) == PrunedHistory(1, 3, 0)

    async def test_prune_skips_a_command_another_transaction_holds(self, backend: Backend) -> None:
        held, free = request(), request()
        await self.finish(backend, held)
        await self.finish(backend, free)
        cutoff = backend.clock.now() + LATER
        async with backend.transaction() as conn:
            assert await backend.commands.lock(DOMAIN, held.command_id, conn=conn) is not None
            assert await backend.commands.prune_finished(cutoff) == PrunedHistory(1, 3, 0)
        assert await backend.commands.get(DOMAIN, held.command_id) is not None
        assert await backend.commands.prune_finished(cutoff) == PrunedHistory(1, 3, 0)
        assert await backend.commands.get(DOMAIN, held.command_id) is None
