"""``PostgresProcessRepository``: processes, audit trails and the message log in PostgreSQL.

Tables ``commandbus.process``, ``commandbus.process_audit`` and
``commandbus.process_message_log`` (migration ``002_process.sql``); queries in
``sql/process_queries.sql``. Batches are written with one ``unnest`` statement per table,
and ``apply`` sends its statements in a pipeline (one network round trip), so a router's
batch costs the same few round trips whatever its size.

States and payloads are passed as JSON text and cast to ``jsonb`` in SQL; ``updated_at``
and ``version`` are set by the database on every write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from commandbus.activity import DEFAULT_ACTIVITY_LIMIT, ProcessActivity
from commandbus.models import ReplyOutcome
from commandbus.ports import Conn
from commandbus.postgres.activity import process_activity
from commandbus.postgres.connections import fast_cursor, statement_conn, transaction_conn
from commandbus.postgres.queries import Queries
from commandbus.process.errors import ProcessAlreadyExistsError, ProcessVersionConflictError
from commandbus.process.models import (
    AuditEntryKind,
    CompensationPlan,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.process.repository import ProcessWrites, completed_steps, state_to_json
from commandbus.validation import json_text

__all__ = ["PostgresProcessRepository"]

Q = Queries("process_queries.sql")
AnyProcess = ProcessMetadata[Any, Any]


def _dumps(value: object) -> str | None:
    if value is None:
        return None
    return json_text(value)


# Stored value -> enum member, for reading rows (faster than calling the enum).
_STATUS = {s.value: s for s in ProcessStatus}
_OUTCOME = {o.value: o for o in ReplyOutcome}
_KIND = {k.value: k for k in AuditEntryKind}
# Member (or its value: a StrEnum member is equal to its value) -> the plain str to store.
_STATUS_VALUE = {s.value: s.value for s in ProcessStatus}
_OUTCOME_VALUE = {o.value: o.value for o in ReplyOutcome}
_KIND_VALUE = {k.value: k.value for k in AuditEntryKind}


def _process_of(row: Sequence[Any]) -> AnyProcess:
    """A process from a row of the process columns, in the order every query selects them:
    domain, process_id, process_type, status, current_step, state, error_code,
    error_message, created_at, updated_at, completed_at, version, awaiting_command_id,
    command_seq, deadline_at, compensation, initial_data, batch_id."""
    status = row[3]
    compensation = row[15]
    return ProcessMetadata(
        domain=row[0],
        process_id=row[1],
        process_type=row[2],
        status=_STATUS.get(status) or ProcessStatus(status),
        current_step=row[4],
        state=row[5],
        created_at=row[8],
        updated_at=row[9],
        completed_at=row[10],
        error_code=row[6],
        error_message=row[7],
        version=row[11],
        awaiting_command_id=row[12],
        command_seq=row[13],
        deadline_at=row[14],
        compensation=CompensationPlan.from_dict(compensation) if compensation else None,
        initial_data=row[16],
        batch_id=row[17],
    )


def _entry_of(row: Sequence[Any], at: int) -> ProcessAuditEntry:
    """An audit entry from the columns of ``row`` from index ``at`` on: step_name,
    command_id, command_type, command_data, sent_at, reply_outcome, reply_data,
    received_at, kind, error_code, error_message, timed_out_at, scheduled_for."""
    outcome = row[at + 5]
    kind = row[at + 8]
    return ProcessAuditEntry(
        step_name=row[at],
        command_id=row[at + 1],
        command_type=row[at + 2],
        command_data=row[at + 3],
        sent_at=row[at + 4],
        reply_outcome=(_OUTCOME.get(outcome) or ReplyOutcome(outcome))
        if outcome is not None
        else None,
        reply_data=row[at + 6],
        received_at=row[at + 7],
        kind=_KIND.get(kind) or AuditEntryKind(kind),
        error_code=row[at + 9],
        error_message=row[at + 10],
        timed_out_at=row[at + 11],
        scheduled_for=row[at + 12],
    )


def _columns(processes: Sequence[AnyProcess]) -> dict[str, list[Any]]:
    """Parallel arrays of the writable process columns."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "domain",
            "process_id",
            "process_type",
            "version",
            "status",
            "current_step",
            "state",
            "error_code",
            "error_message",
            "created_at",
            "completed_at",
            "awaiting_command_id",
            "command_seq",
            "deadline_at",
            "compensation",
        )
    }
    for p in processes:
        cols["domain"].append(p.domain)
        cols["process_id"].append(p.process_id)
        cols["process_type"].append(p.process_type)
        cols["version"].append(p.version)
        cols["status"].append(_STATUS_VALUE.get(p.status) or ProcessStatus(p.status).value)
        cols["current_step"].append(str(p.current_step) if p.current_step is not None else None)
        cols["state"].append(state_to_json(p.state))
        cols["error_code"].append(p.error_code)
        cols["error_message"].append(p.error_message)
        cols["created_at"].append(p.created_at)
        cols["completed_at"].append(p.completed_at)
        cols["awaiting_command_id"].append(p.awaiting_command_id)
        cols["command_seq"].append(p.command_seq)
        cols["deadline_at"].append(p.deadline_at)
        cols["compensation"].append(
            _dumps(p.compensation.to_dict()) if p.compensation is not None else None
        )
    return cols


def _insert_columns(processes: Sequence[AnyProcess]) -> dict[str, list[Any]]:
    """The columns of new rows: ``version`` is 1, and ``initial_data`` and ``batch_id``
    are written here only (never by an update)."""
    cols = _columns(processes)
    del cols["version"]
    cols["initial_data"] = [_dumps(p.initial_data) for p in processes]
    cols["batch_id"] = [p.batch_id for p in processes]
    return cols


def _audit_columns(items: Sequence[tuple[str, UUID, ProcessAuditEntry]]) -> dict[str, list[Any]]:
    names = (
        "domain",
        "process_id",
        "step_name",
        "kind",
        "command_id",
        "command_type",
        "command_data",
        "sent_at",
        "reply_outcome",
        "reply_data",
        "received_at",
        "error_code",
        "error_message",
        "timed_out_at",
        "scheduled_for",
    )
    cols: dict[str, list[Any]] = {k: [] for k in names}
    for domain, process_id, e in items:
        cols["domain"].append(domain)
        cols["process_id"].append(process_id)
        cols["step_name"].append(str(e.step_name))
        cols["kind"].append(_KIND_VALUE.get(e.kind) or AuditEntryKind(e.kind).value)
        cols["command_id"].append(e.command_id)
        cols["command_type"].append(e.command_type)
        cols["command_data"].append(_dumps(e.command_data))
        cols["sent_at"].append(e.sent_at)
        outcome = e.reply_outcome
        cols["reply_outcome"].append(
            (_OUTCOME_VALUE.get(outcome) or ReplyOutcome(outcome).value)
            if outcome is not None
            else None
        )
        cols["reply_data"].append(_dumps(e.reply_data))
        cols["received_at"].append(e.received_at)
        cols["error_code"].append(e.error_code)
        cols["error_message"].append(e.error_message)
        cols["timed_out_at"].append(e.timed_out_at)
        cols["scheduled_for"].append(e.scheduled_for)
    return cols


class PostgresProcessRepository:
    """``ProcessRepository`` on PostgreSQL; see ``commandbus.process.repository``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    # -- the seed's API ------------------------------------------------------------------

    async def save(self, process: AnyProcess, conn: Conn | None = None) -> None:
        cols = _insert_columns([process])
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.insert_processes, cols)
            row = await cur.fetchone()
        if row is None:
            raise ProcessAlreadyExistsError(process.domain, process.process_id)
        process.version = 1
        process.updated_at = row[1]

    async def update(self, process: AnyProcess, conn: Conn | None = None) -> None:
        await self.apply(ProcessWrites(updates=[process]), conn=conn)

    async def get_by_id(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> AnyProcess | None:
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.get_process, {"domain": domain, "process_id": process_id})
            row = await cur.fetchone()
        return _process_of(row) if row is not None else None

    async def find_by_status(
        self,
        domain: str,
        statuses: Sequence[ProcessStatus],
        conn: Conn | None = None,
        *,
        limit: int | None = None,
    ) -> list[AnyProcess]:
        params = {
            "domain": domain,
            "statuses": [ProcessStatus(s).value for s in statuses],
            "limit": limit,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.find_processes_by_status, params)
            rows = await cur.fetchall()
        return [_process_of(r) for r in rows]

    async def log_step(
        self,
        domain: str,
        process_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.insert_audit, _audit_columns([(domain, process_id, entry)]))

    async def update_step_reply(
        self,
        domain: str,
        process_id: UUID,
        command_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        cols = _reply_columns([(domain, process_id, entry)])
        cols["command_id"] = [command_id]
        async with statement_conn(self._pool, conn) as c:
            await c.execute(Q.update_audit, cols)

    async def get_audit_trail(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.audit_trail, {"domain": domain, "process_id": process_id})
            rows = await cur.fetchall()
        return [_entry_of(r, 2) for r in rows]

    async def get_completed_steps(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[str]:
        return completed_steps(await self.get_audit_trail(domain, process_id, conn=conn))

    # -- engine --------------------------------------------------------------------------

    async def insert_new(self, processes: Sequence[AnyProcess], *, conn: Conn) -> list[UUID]:
        if not processes:
            return []
        cols = _insert_columns(processes)
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.insert_processes, cols)
            rows = await cur.fetchall()
        return [r[0] for r in rows]

    async def lock(
        self,
        domains: Sequence[str],
        process_ids: Sequence[UUID],
        *,
        conn: Conn,
        with_audit: bool = True,
    ) -> list[ProcessSnapshot[Any, Any]]:
        if not process_ids or not domains:
            return []
        # Every (domain, id) pair, in one fixed order whatever the caller's: the rows are
        # locked in this order, so overlapping lockers cannot deadlock.
        pairs = sorted({(d, p) for d in domains for p in process_ids})
        params = {"domains": [d for d, _ in pairs], "process_ids": [p for _, p in pairs]}
        if not with_audit:
            async with statement_conn(self._pool, conn) as c:
                cur = fast_cursor(c)
                await cur.execute(Q.lock_processes, params)
                return [ProcessSnapshot(_process_of(r)) for r in await cur.fetchall()]
        async with statement_conn(self._pool, conn) as c:
            # One round trip: the audit is read by a second statement on purpose (see
            # audit_of_processes in the .sql file), sent in the same pipeline; the server
            # runs it once the first one holds its locks.
            async with c.pipeline():
                cur = fast_cursor(c)
                await cur.execute(Q.lock_processes, params)
                audit_cur = fast_cursor(c)
                await audit_cur.execute(Q.audit_of_processes, params)
                rows = await cur.fetchall()
                audit_rows = await audit_cur.fetchall()
            if not rows:
                return []
        snapshots = {(r[0], r[1]): ProcessSnapshot(_process_of(r)) for r in rows}
        for a in audit_rows:
            snap = snapshots.get(pairs[a[0] - 1])
            if snap is not None:
                snap.audit.append(_entry_of(a, 1))
        return list(snapshots.values())

    async def apply(self, writes: ProcessWrites, *, conn: Conn | None = None) -> None:
        if not writes:
            return
        # In the caller's transaction no savepoint is needed: an error aborts it anyway.
        scope = statement_conn if conn is not None else transaction_conn
        async with scope(self._pool, conn) as c:
            # Pipelined: the statements go out together and are answered together.
            async with c.pipeline():
                update_cur = None
                if writes.updates:
                    cols = _columns(writes.updates)
                    del cols["process_type"], cols["created_at"]
                    update_cur = await c.execute(Q.update_processes, cols)
                if writes.audit_inserts:
                    await c.execute(Q.insert_audit, _audit_columns(writes.audit_inserts))
                if writes.audit_updates:
                    await c.execute(Q.update_audit, _reply_columns(writes.audit_updates))
                if writes.messages:
                    await c.execute(Q.insert_messages, _message_params(writes.messages))
                updated = await update_cur.fetchall() if update_cur is not None else []
            if len(updated) != len(writes.updates):
                done = {(r[0], r[1]) for r in updated}
                missing = [p for p in writes.updates if (p.domain, p.process_id) not in done]
                raise ProcessVersionConflictError(
                    missing[0].domain, [p.process_id for p in missing]
                )
        by_key = {(r[0], r[1]): r for r in updated}
        for p in writes.updates:
            row = by_key[(p.domain, p.process_id)]
            p.version = row[2]
            p.updated_at = row[3]

    async def find_stuck(
        self,
        domain: str,
        *,
        deadline_before: datetime,
        updated_before: datetime | None = None,
        limit: int = 1000,
        conn: Conn | None = None,
    ) -> list[AnyProcess]:
        params = {
            "domain": domain,
            "deadline_before": deadline_before,
            "updated_before": updated_before,
            "limit": limit,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = fast_cursor(c)
            await cur.execute(Q.find_stuck_processes, params)
            rows = await cur.fetchall()
        return [_process_of(r) for r in rows]

    async def list_messages(
        self,
        *,
        domain: str | None = None,
        process_id: UUID | None = None,
        disposition: ProcessMessageDisposition | None = None,
        limit: int = 100,
        record_id: int | None = None,
        conn: Conn | None = None,
    ) -> list[ProcessMessageRecord]:
        params = {
            "domain": domain,
            "process_id": process_id,
            "disposition": disposition.value if disposition is not None else None,
            "limit": limit,
            "record_id": record_id,
        }
        async with statement_conn(self._pool, conn) as c:
            cur = c.cursor(row_factory=dict_row)
            await cur.execute(Q.list_messages, params)
            rows = await cur.fetchall()
        return [
            ProcessMessageRecord(
                disposition=ProcessMessageDisposition(r["disposition"]),
                reason=r["reason"],
                message=r["message"],
                domain=r["domain"],
                process_id=r["process_id"],
                command_id=r["command_id"],
                queue_name=r["queue_name"],
                msg_id=r["msg_id"],
                recorded_at=r["recorded_at"],
                id=r["id"],
            )
            for r in rows
        ]

    async def delete_message(self, record_id: int, *, conn: Conn | None = None) -> bool:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.delete_message, {"id": record_id})
            return bool(cur.rowcount > 0)

    async def count_by_status(
        self, domain: str, *, conn: Conn | None = None
    ) -> dict[ProcessStatus, int]:
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.count_processes_by_status, {"domain": domain})
            rows = await cur.fetchall()
        return {ProcessStatus(status): int(n) for status, n in rows}

    async def activity(
        self, since: datetime, *, limit: int = DEFAULT_ACTIVITY_LIMIT, conn: Conn | None = None
    ) -> ProcessActivity:
        return await process_activity(self._pool, since, limit, conn)


def _reply_columns(items: Sequence[tuple[str, UUID, ProcessAuditEntry]]) -> dict[str, list[Any]]:
    """Parallel arrays of the reply fields of audit entries (for update_audit)."""
    return {
        "domain": [d for d, _, _ in items],
        "process_id": [p for _, p, _ in items],
        "command_id": [e.command_id for _, _, e in items],
        "reply_outcome": [
            (_OUTCOME_VALUE.get(e.reply_outcome) or ReplyOutcome(e.reply_outcome).value)
            if e.reply_outcome is not None
            else None
            for _, _, e in items
        ],
        "reply_data": [_dumps(e.reply_data) for _, _, e in items],
        "received_at": [e.received_at for _, _, e in items],
        "error_code": [e.error_code for _, _, e in items],
        "error_message": [e.error_message for _, _, e in items],
        "timed_out_at": [e.timed_out_at for _, _, e in items],
    }


def _message_params(records: Sequence[ProcessMessageRecord]) -> dict[str, list[Any]]:
    return {
        "disposition": [ProcessMessageDisposition(r.disposition).value for r in records],
        "reason": [r.reason for r in records],
        "domain": [r.domain for r in records],
        "process_id": [r.process_id for r in records],
        "command_id": [r.command_id for r in records],
        "queue_name": [r.queue_name for r in records],
        "msg_id": [r.msg_id for r in records],
        # Any JSON value, JSON null included (a queue can hold anything).
        "message": [json_text(r.message) for r in records],
    }
