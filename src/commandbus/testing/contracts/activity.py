"""Contract: ``CommandStore.activity``, per domain and minute, what the commands sent in a
window did — read from a bounded number of the newest rows.

PostgreSQL keeps time with its own clock (``advance`` cannot move ``created_at``), so
the expected figures are worked out from the rows themselves (``get``): the contract is
that both backends count, bucket and time exactly what their rows say."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from commandbus.activity import Durations
from commandbus.errors import ValidationError
from commandbus.models import CommandMetadata, CommandStatus, SendRequest, SettleAction
from commandbus.ports import Backend
from commandbus.testing.contracts._base import DOMAIN, OTHER_DOMAIN, A, ContractBase, request

#: What each settled command became, and how.
_ENDS = {
    CommandStatus.COMPLETED: (SettleAction.DELETE, A.COMPLETED),
    CommandStatus.FAILED: (SettleAction.ARCHIVE, A.FAILED),
    CommandStatus.IN_TROUBLESHOOTING_QUEUE: (SettleAction.ARCHIVE, A.MOVED_TO_TSQ),
}


def figures(durations: Durations | None) -> Any:
    if durations is None:
        return None
    return (durations.count, *(pytest.approx(v, abs=1e-6) for v in
            (durations.p50, durations.p95, durations.max)))  # fmt: skip


class ActivityContract(ContractBase):
    """The contract of ``CommandStore.activity``."""

    async def settle_as(
        self,
        backend: Backend,
        claimed: dict[Any, Any],
        ends: list[tuple[SendRequest, CommandStatus]],
    ) -> None:
        for req, status in ends:
            action, event = _ENDS[status]
            settlement = self.settlement(
                req, claimed[req.command_id].msg_id, action, status, 1, [(event, None)]
            )
            assert await backend.commands.settle([settlement]) == 1

    async def traffic(self, backend: Backend) -> list[CommandMetadata]:
        """Three completed, one failed and one in the TSQ in DOMAIN (a minute apart on a
        clock that can be moved), one completed elsewhere, one still pending."""
        done = [request("Debit") for _ in range(3)]
        failed, parked, waiting = request("Debit"), request("Credit"), request("Debit")
        other = request("Debit", domain=OTHER_DOMAIN, reply_to=None)
        await self.send(backend, *done, failed, parked, other)
        claimed = {
            c.command.command_id: c
            for domain in (DOMAIN, OTHER_DOMAIN)
            for c in await backend.commands.claim(domain, 10, 300)
        }
        await self.advance(backend, 20)
        await self.settle_as(backend, claimed, [(done[0], CommandStatus.COMPLETED)])
        await self.advance(backend, 65)
        await self.settle_as(
            backend,
            claimed,
            [
                (done[1], CommandStatus.COMPLETED),
                (done[2], CommandStatus.COMPLETED),
                (failed, CommandStatus.FAILED),
                (parked, CommandStatus.IN_TROUBLESHOOTING_QUEUE),
            ],
        )
        await self.settle_as(backend, claimed, [(other, CommandStatus.COMPLETED)])
        await self.send(backend, waiting)
        rows = []
        for req in (*done, failed, parked, other, waiting):
            meta = await backend.commands.get(req.domain, req.command_id)
            assert meta is not None
            rows.append(meta)
        return rows

    async def test_activity_counts_and_times_what_the_rows_say(self, backend: Backend) -> None:
        rows = await self.traffic(backend)
        since = min(r.created_at for r in rows) - timedelta(seconds=30)
        found = await backend.commands.activity(since)
        assert (found.since, found.minutes, found.truncated) == (since, 60, False)
        assert (found.scanned, found.covered_from) == (len(rows), since)
        expected: dict[tuple[str, int], list[CommandMetadata]] = {}
        for row in rows:
            if row.status is not CommandStatus.PENDING:
                minute = (row.updated_at - since) // timedelta(minutes=1)
                expected.setdefault((row.domain, minute), []).append(row)
        got = {
            (domain, m.start): m
            for domain in (DOMAIN, OTHER_DOMAIN)
            for m in found.series(domain)
            if m.completed or m.failed
        }
        assert sorted(got) == sorted(
            (domain, since + timedelta(minutes=minute)) for domain, minute in expected
        )
        for (domain, minute), settled in expected.items():
            bucket = got[(domain, since + timedelta(minutes=minute))]
            completed = [r for r in settled if r.status is CommandStatus.COMPLETED]
            assert bucket.completed == len(completed)
            assert bucket.failed == len(settled) - len(completed)
            latencies = [(r.updated_at - r.created_at).total_seconds() for r in completed]
            assert figures(bucket.latency) == figures(Durations.of(latencies))
        # Per domain in all: what was settled, never the pending one.
        mine = found.series(DOMAIN)
        assert len(mine) == 60 and mine[0].start == since
        assert (sum(m.completed for m in mine), sum(m.failed for m in mine)) == (3, 2)
        assert sum(m.completed for m in found.series(OTHER_DOMAIN)) == 1
        assert found.series("nobody") == [type(mine[0])(m.start) for m in mine]

    async def test_activity_reads_the_newest_commands_only(self, backend: Backend) -> None:
        rows = await self.traffic(backend)
        since = min(r.created_at for r in rows) - timedelta(seconds=30)
        newest = sorted(rows, key=lambda r: (r.created_at, r.command_id), reverse=True)
        two = await backend.commands.activity(since, limit=2)
        assert (two.scanned, two.truncated, two.covered_from) == (2, True, newest[1].created_at)
        counted = [m for d in (DOMAIN, OTHER_DOMAIN) for m in two.series(d)]
        settled = [r for r in newest[:2] if r.status is not CommandStatus.PENDING]
        assert sum(m.completed + m.failed for m in counted) == len(settled)
        exact = await backend.commands.activity(since, limit=len(rows))
        assert (exact.scanned, exact.truncated) == (len(rows), False)
        # A window that starts after every command was sent holds none.
        after = max(r.created_at for r in rows) + timedelta(microseconds=1)
        empty = await backend.commands.activity(after)
        assert (empty.scanned, empty.by_domain, empty.truncated) == (0, {}, False)

    async def test_activity_sees_the_callers_transaction(self, backend: Backend) -> None:
        req = request()
        async with backend.transaction() as conn:
            await self.send(backend, req, conn=conn)
            meta = await backend.commands.get(DOMAIN, req.command_id, conn=conn)
            assert meta is not None
            found = await backend.commands.activity(meta.created_at, conn=conn)
            assert found.scanned == 1

    async def test_activity_checks_its_window(self, backend: Backend) -> None:
        rows = await self.traffic(backend)
        naive = rows[0].created_at.replace(tzinfo=None)
        with pytest.raises(ValidationError, match="timezone-aware"):
            await backend.commands.activity(naive)
        with pytest.raises(ValidationError, match="minutes"):
            await backend.commands.activity(rows[0].created_at, minutes=0)
        with pytest.raises(ValidationError, match="limit"):
            await backend.commands.activity(rows[0].created_at, limit=10**9)
