"""Batches in the seeded simulation: processes started as batches and standalone commands
sent as batches, under retries, the TSQ, operators, duplicates and user cancels; every
batch's counters must equal a recount of its members, with one notice per finished batch."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

from tests.unit.test_simulation import TROUBLED, simulate

from commandbus.batches import BatchMetadata, BatchNotice, BatchStatus
from commandbus.batches.models import BatchKind
from commandbus.testing.batch_invariants import check_batches
from commandbus.testing.simulation import FailureRates

BATCHED = replace(TROUBLED, process_batches=True, start_batch=50, batched_commands=400)


async def test_counters_match_the_members_of_every_batch_under_trouble() -> None:
    report = await simulate(BATCHED)
    report.raise_for_violations()
    # 300 processes in batches of 50, 400 commands in batches of 50: 14 batches, all done
    # (operators resolve every TSQ item), most of them with a failure somewhere.
    assert sum(report.batches.values()) == 14
    assert set(report.batches) <= {"COMPLETED", "COMPLETED_WITH_FAILURES"}
    assert report.batches.get("COMPLETED_WITH_FAILURES", 0) > 0
    # The trouble really happened, to batched members too.
    assert report.operator_actions["retry"] > 0 and report.operator_actions["cancel"] > 0
    assert report.deliveries["TRANSIENT"] > 0 and report.deliveries["BUSINESS"] > 0


async def test_the_same_seed_gives_the_same_batches() -> None:
    first = await simulate(BATCHED)
    second = await simulate(BATCHED)
    assert first.batches == second.batches
    assert first.history == second.history
    other = await simulate(replace(BATCHED, seed=8))
    other.raise_for_violations()


async def test_without_operators_batches_with_tsq_members_stay_in_progress() -> None:
    config = replace(
        BATCHED,
        processes=0,
        operator=None,
        duplicate_rate=0.0,
        cancel_rate=0.0,
        failures=FailureRates(permanent=0.02),
        batched_commands=500,
    )
    report = await simulate(config)
    report.raise_for_violations()  # counters still exact, no notice for them
    assert report.batches.get("IN_PROGRESS", 0) > 0
    assert report.batches.get("COMPLETED", 0) > 0


def test_the_invariant_catches_a_counter_off_by_one() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    batch = BatchMetadata(
        domain="d",
        batch_id=uuid4(),
        kind=BatchKind.COMMANDS,
        name=None,
        status=BatchStatus.COMPLETED,
        is_open=False,
        reply_to="d__batches",
        total=2,
        completed=2,
        failed=0,
        canceled=0,
        in_troubleshooting=0,
        created_at=now,
        updated_at=now,
    )
    notice = BatchNotice(
        batch.batch_id, "d", BatchKind.COMMANDS, None, BatchStatus.COMPLETED, 2, 2, 0, 0, 0
    )
    assert check_batches([batch], {batch.batch_id: ["COMPLETED", "COMPLETED"]}, [notice]) == []
    off = check_batches([batch], {batch.batch_id: ["COMPLETED", "CANCELED"]}, [notice])
    assert [v.invariant for v in off] == ["batch_counters", "batch_counters"]
    twice = check_batches([batch], {batch.batch_id: ["COMPLETED"] * 2}, [notice, notice])
    assert "2 completion notices" in str(twice[0])
    unfinished = replace(batch, status=BatchStatus.IN_PROGRESS)
    early = check_batches([unfinished], {batch.batch_id: ["COMPLETED", "PENDING"]}, [])
    assert "counters" in str(early[0])
