"""The activity queries read a bounded number of rows through an index, however large the
tables are (EXPLAIN ANALYZE on fresh, never analysed tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from commandbus.models import SendRequest
from commandbus.postgres import PostgresBackend
from commandbus.postgres.queries import load_queries
from commandbus.process.models import ProcessAuditEntry, ProcessMetadata, ProcessStatus

LIMIT = 50


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


async def explain(backend: PostgresBackend, name: str, params: dict[str, Any]) -> list[Any]:
    query = load_queries("activity_queries.sql")[name]
    async with backend.transaction() as conn:
        cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params)
        row = await cur.fetchone()
    assert row is not None
    return nodes(row[0][0]["Plan"])


def rows_read(plan: list[dict[str, Any]], relation: str) -> int:
    return sum(
        int(n["Actual Rows"]) * int(n["Actual Loops"])
        for n in plan
        if n.get("Relation Name") == relation
    )


async def test_command_activity_reads_the_newest_rows_only(pg_backend: PostgresBackend) -> None:
    for _ in range(6):
        await pg_backend.commands.insert(
            [SendRequest("payments", "Debit", uuid4(), {"n": 1}) for _ in range(500)], 3
        )
    since = datetime.now(UTC) - timedelta(hours=1)
    plan = await explain(
        pg_backend, "command_activity", {"since": since, "minutes": 60, "limit": LIMIT}
    )
    scans = [n for n in plan if n.get("Relation Name") == "command"]
    assert scans and all(n["Node Type"] == "Index Scan" for n in scans), scans
    assert {n.get("Index Name") for n in scans} == {"command_created_idx"}
    assert rows_read(plan, "command") <= LIMIT + 1
    found = await pg_backend.commands.activity(since, limit=LIMIT)
    assert (found.scanned, found.truncated) == (LIMIT, True)


async def test_process_activity_reads_the_newest_entries_only(
    pg_backend: PostgresBackend,
) -> None:
    repo = pg_backend.processes
    now = datetime.now(UTC)
    for _ in range(6):
        processes = [
            ProcessMetadata(
                domain="reporting",
                process_id=uuid4(),
                process_type="Report",
                status=ProcessStatus.WAITING_FOR_REPLY,
                current_step="query",
                state={},
                created_at=now,
                updated_at=now,
            )
            for _ in range(250)
        ]
        async with pg_backend.transaction() as conn:
            await repo.insert_new(processes, conn=conn)
            for p in processes:
                for step in ("query", "render"):
                    entry = ProcessAuditEntry(step, uuid4(), "Query", None, now)
                    await repo.log_step("reporting", p.process_id, entry, conn=conn)
    since = now - timedelta(hours=1)
    plan = await explain(pg_backend, "process_activity", {"since": since, "limit": LIMIT})
    audit = [n for n in plan if n.get("Relation Name") == "process_audit"]
    assert audit and all(n["Node Type"] == "Index Scan" for n in audit), audit
    assert rows_read(plan, "process_audit") <= LIMIT + 1
    # One primary-key probe per entry kept.
    probes = [n for n in plan if n.get("Relation Name") == "process"]
    assert probes and all("Index" in n["Node Type"] for n in probes), probes
    assert rows_read(plan, "process") <= LIMIT
    found = await repo.activity(since, limit=LIMIT)
    assert (found.scanned, found.truncated) == (LIMIT, True)
