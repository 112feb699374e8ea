"""Contract of ``ProcessRepository.activity``: how long processes and their steps took
over a window, from a bounded read of the newest audit entries."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from commandbus.activity import Durations
from commandbus.errors import ValidationError
from commandbus.models import ReplyOutcome
from commandbus.ports import Backend
from commandbus.process.models import ProcessAuditEntry, ProcessStatus
from commandbus.process.repository import ProcessRepository
from commandbus.testing.process_contracts._base import (
    DOMAIN,
    OTHER,
    T0,
    RepositoryContractBase,
    make_entry,
    make_process,
)


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def figures(found: dict[Any, Durations]) -> dict[Any, Any]:
    """Durations as comparable numbers (percentiles to the microsecond)."""
    return {k: (d.count, *(pytest.approx(v, abs=1e-6) for v in (d.p50, d.p95, d.max)))
            for k, d in found.items()}  # fmt: skip


def expect(count: int, p50: float, p95: float, longest: float) -> Any:
    return (count, p50, p95, longest)


class ActivityContract(RepositoryContractBase):
    """``activity(since, limit=…)``: per step, sending (or the time it was scheduled for)
    to the reply; per process type, start to end of the processes that finished since."""

    async def step(
        self,
        repo: ProcessRepository,
        process: Any,
        name: str,
        sent: float,
        replied: float | None = None,
        **fields: Any,
    ) -> ProcessAuditEntry:
        entry = replace(make_entry(name, sent_at=at(sent)), **fields)
        await repo.log_step(process.domain, process.process_id, entry)
        if replied is not None:
            answered = replace(entry, reply_outcome=ReplyOutcome.SUCCESS, received_at=at(replied))
            await repo.update_step_reply(
                process.domain, process.process_id, entry.command_id, answered
            )
        return entry

    async def finish(self, repo: ProcessRepository, process: Any, ended: float) -> None:
        process.status, process.completed_at = ProcessStatus.COMPLETED, at(ended)
        await repo.update(process)

    async def history(self, repo: ProcessRepository) -> None:
        """Written in this order: an hour-old process, then four of the window."""
        old = make_process(created_at=at(-3600))
        await repo.save(old)
        await self.step(repo, old, "query", -3500, -3490)
        await self.finish(repo, old, -3490)
        a, b = make_process(), make_process(created_at=at(2))
        c = make_process(domain=OTHER)
        later = make_process(created_at=at(4))
        for p in (a, b, c, later):
            await repo.save(p)
        await self.step(repo, a, "query", 1, 3)
        await self.step(repo, c, "query", 1, 2)
        await self.finish(repo, c, 2)
        await self.step(repo, b, "query", 2, 6)
        await self.step(repo, a, "render", 3, 8)
        await self.finish(repo, a, 8)
        await self.step(repo, b, "render", 6)  # awaited: no reply yet
        # Sent at 4, scheduled for 10, answered at 12: the step took 2 s.
        await self.step(repo, later, "remind", 4, 12, scheduled_for=at(10))

    async def test_activity_times_steps_and_finished_processes_of_the_window(
        self, repo: ProcessRepository
    ) -> None:
        await self.history(repo)
        found = await repo.activity(T0)
        assert found.since == T0
        assert figures(found.steps) == {
            (DOMAIN, "Report", "query"): expect(2, 3.0, 3.9, 4.0),
            (DOMAIN, "Report", "remind"): expect(1, 2.0, 2.0, 2.0),
            (DOMAIN, "Report", "render"): expect(1, 5.0, 5.0, 5.0),
            (OTHER, "Report", "query"): expect(1, 1.0, 1.0, 1.0),
        }
        # A finished at 8 (started at 0), C at 2; the hour-old process is not counted.
        assert figures(found.processes) == {
            (DOMAIN, "Report"): expect(1, 8.0, 8.0, 8.0),
            (OTHER, "Report"): expect(1, 2.0, 2.0, 2.0),
        }
        # Six entries were sent in the window (the seventh, an hour before).
        assert (found.scanned, found.truncated, found.covered_from) == (6, False, T0)
        assert found.processes_of(DOMAIN) == {"Report": Durations(1, 8.0, 8.0, 8.0)}
        assert list(found.steps_of(OTHER)) == [("Report", "query")]
        # Everything, the hour-old process too, from an hour and a half before.
        wide = await repo.activity(at(-5400))
        # The hour-old one took 110 s, A 8 s.
        assert figures(wide.processes)[(DOMAIN, "Report")] == expect(2, 59.0, 104.9, 110.0)
        assert figures(wide.steps)[(DOMAIN, "Report", "query")] == expect(3, 4.0, 9.4, 10.0)
        assert wide.scanned == 7
        # Nothing after the last entry was sent.
        assert (await repo.activity(at(60))).steps == {}

    async def test_activity_reads_the_newest_entries_only(self, repo: ProcessRepository) -> None:
        await self.history(repo)
        newest = await repo.activity(T0, limit=2)
        # The two newest entries: B's awaited render and the reminder.
        assert figures(newest.steps) == {(DOMAIN, "Report", "remind"): expect(1, 2.0, 2.0, 2.0)}
        assert newest.processes == {}
        assert (newest.scanned, newest.truncated, newest.covered_from) == (2, True, at(4))
        # Six entries in the window: a limit of 6 reads them and the hour-old one after.
        whole = await repo.activity(T0, limit=6)
        assert (whole.scanned, whole.truncated, whole.covered_from) == (6, False, T0)

    async def test_activity_sees_the_callers_transaction(
        self, backend: Backend, repo: ProcessRepository
    ) -> None:
        p = make_process()
        async with backend.transaction() as tx:
            await repo.save(p, conn=tx)
            await repo.log_step(DOMAIN, p.process_id, make_entry("query", sent_at=at(1)), conn=tx)
            assert (await repo.activity(T0, conn=tx)).scanned == 1
        assert (await repo.activity(T0)).scanned == 1

    async def test_activity_checks_its_window(self, repo: ProcessRepository) -> None:
        with pytest.raises(ValidationError, match="timezone-aware"):
            await repo.activity(T0.replace(tzinfo=None))
        with pytest.raises(ValidationError, match="limit"):
            await repo.activity(T0, limit=0)
