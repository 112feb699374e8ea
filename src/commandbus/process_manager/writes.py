"""``BatchWrites``: everything a batch of inputs writes, gathered per process and written
in a few statements — one append for every process stream, one insert for every command,
one call for the read model (rows, audit, message log) — in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.events.ports import EncodedEvent, EventBackend, StreamAppend
from commandbus.models import JsonObject, Reply, SendRequest
from commandbus.ports import Conn, JsonText, ProcessWrites
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessStatus,
)
from commandbus.process_manager.draft import Draft
from commandbus.process_manager.instance import ProcessInstance
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.telemetry import NO_TELEMETRY, Telemetry, count_sent
from commandbus.validation import json_text

__all__ = ["BatchWrites"]

TState = TypeVar("TState")


@dataclass
class _Stream:
    name: str
    expected_version: int
    events: list[EncodedEvent] = field(default_factory=list)


@dataclass
class BatchWrites(Generic[TState]):
    manager: EventSourcedProcessManager[TState]
    domain: str
    reply_queue: str
    max_attempts: int
    now: datetime
    telemetry: Telemetry = NO_TELEMETRY
    streams: dict[UUID, _Stream] = field(default_factory=dict)
    rows: dict[UUID, ProcessMetadata[Any, Any]] = field(default_factory=dict)
    snapshots: dict[UUID, tuple[str, int, ProcessInstance[TState]]] = field(default_factory=dict)
    commands: list[SendRequest] = field(default_factory=list)
    timers: list[tuple[JsonObject, float]] = field(default_factory=list)
    read_model: ProcessWrites = field(default_factory=ProcessWrites)

    def add(
        self,
        row: ProcessMetadata[Any, Any],
        before: ProcessInstance[TState],
        draft: Draft[TState],
        reply: Reply | None,
    ) -> ProcessInstance[TState]:
        """Gather ``draft`` (planned on ``before``); returns the process after it."""
        pid = before.process_id
        stream = self.streams.setdefault(pid, _Stream(before.stream, before.version))
        stream.events.extend(draft.events)
        after = ProcessInstance(
            pid, before.stream, before.version + len(draft.events), draft.state, draft.book
        )
        book = draft.book
        finished = book.finished
        self.rows[pid] = row.copy(
            status=book.status(),
            current_step=book.data["state_name"],
            state=JsonText(json_text(self.manager.state_to_dict(draft.state))),
            error_code=None if finished is None else finished.get("error_code"),
            error_message=None if finished is None else finished.get("error_message"),
            completed_at=self.now if finished is not None else None,
        )
        telemetry = self.telemetry
        headers = None
        if telemetry.enabled and draft.commands:
            # The commands' trace context, caused by the input they answer.
            headers = telemetry.outgoing_headers(causation_id=str(draft.input_id))
        for command in draft.commands:
            self.commands.append(
                SendRequest(
                    domain=command.domain,
                    command_type=command.command_type,
                    command_id=command.command_id,
                    data=command.data,
                    correlation_id=pid,
                    reply_to=self.reply_queue,
                    max_attempts=command.max_attempts,
                    headers=headers,
                )
            )
            entry = ProcessAuditEntry(
                step_name=command.task_id,
                command_id=command.command_id,
                command_type=command.command_type,
                command_data=command.data,
                sent_at=self.now,
                kind=AuditEntryKind.COMPENSATION if command.compensates else AuditEntryKind.STEP,
            )
            self.read_model.audit_inserts.append((self.domain, pid, entry))
        for timer in draft.timers:
            message = {
                "kind": "timer",
                "process_id": str(pid),
                "name": timer.name,
                "seq": timer.seq,
                "data": timer.data,
            }
            self.timers.append((message, timer.after))
        if reply is not None:
            self.read_model.audit_updates.append((self.domain, pid, self._reply_entry(reply)))
        every = max(1, int(self.manager.snapshot_every))
        if after.version // every != stream.expected_version // every:
            self.snapshots[pid] = (before.stream, after.version, after)
        return after

    def tsq_notice(self, row: ProcessMetadata[Any, Any], reply: Reply) -> None:
        pid = row.process_id
        current = self.rows.get(pid, row)
        self.rows[pid] = current.copy(status=ProcessStatus.WAITING_FOR_TSQ)
        self.read_model.audit_updates.append((self.domain, pid, self._reply_entry(reply)))

    def ignored(self, pid: UUID | None, message: JsonObject, reason: str) -> None:
        self.read_model.messages.append(
            ProcessMessageRecord(
                disposition=ProcessMessageDisposition.IGNORED,
                reason=reason,
                message=message,
                domain=self.domain,
                process_id=pid,
                queue_name=self.reply_queue,
            )
        )

    def _reply_entry(self, reply: Reply) -> ProcessAuditEntry:
        """The reply fields for the audit entry of ``reply.command_id`` (an audit update
        writes only those)."""
        return ProcessAuditEntry(
            step_name="",
            command_id=reply.command_id,
            command_type=reply.command_type or "",
            command_data=None,
            sent_at=self.now,
            reply_outcome=reply.outcome,
            reply_data=reply.data,
            received_at=self.now,
            error_code=reply.error_code,
            error_message=reply.error_message,
        )

    async def write(self, backend: EventBackend, conn: Conn) -> None:
        appends = [
            StreamAppend(s.name, s.expected_version, s.events)
            for s in self.streams.values()
            if s.events
        ]
        await backend.events.append_many(appends, conn=conn)
        if self.commands:
            await backend.commands.insert(self.commands, self.max_attempts, conn=conn)
            if self.telemetry.enabled:
                count_sent(self.telemetry, self.commands)
        for message, after in self.timers:
            await backend.queue.enqueue(self.reply_queue, [message], after, conn=conn)
        self.read_model.updates.extend(self.rows.values())
        await backend.processes.apply(self.read_model, conn=conn)
        if self.telemetry.enabled:
            for row in self.rows.values():
                self.telemetry.process_changed(self.domain, row.process_type, row.status.value)
        for stream, version, instance in self.snapshots.values():
            body = {
                "state": self.manager.state_to_dict(instance.state),
                "book": instance.book.data,
            }
            await backend.events.put_snapshot(stream, version, json_text(body), conn=conn)
