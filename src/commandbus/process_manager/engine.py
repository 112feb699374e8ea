"""``ProcessEngine``: runs an ``EventSourcedProcessManager`` (seed 003's engine).

For every input — an external event, a command's reply, a timer, a cancel — in the
caller's transaction (a subscription's batch, a router's batch):

1. locate the process (``ProcessLocator``; replies and timers carry its id) and lock its
   read-model row (``commandbus.process``), creating it for a start event;
2. load its state: the latest snapshot and the stream events after it, folded;
3. record the input in the process stream under an id derived from it (a repeated input
   is a duplicate event id: recognised, and applied only once), ``decide``, and record
   what it decided;
4. append the events (expected version: the loaded one), send the tasks' commands, set
   the timers, update the read model (row and audit trail), take a snapshot every
   ``snapshot_every`` events — all in that one transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.backends import BackendSource
from commandbus.errors import DuplicateEventError
from commandbus.events.encoding import encode_events
from commandbus.events.models import RecordedEvent
from commandbus.events.ports import EventBackend
from commandbus.events.store import event_backend
from commandbus.events.subscription import Subscription
from commandbus.models import JsonObject, Reply, ReplyOutcome, SendRequest
from commandbus.ports import Clock, Conn, JsonText, ProcessWrites
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.process_manager import events as E
from commandbus.process_manager.draft import Draft, process_event_of
from commandbus.process_manager.events import derived_id
from commandbus.process_manager.instance import Book, ProcessInstance, TaskState
from commandbus.process_manager.locator import process_id_for
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.validation import json_text, validate_name, validate_text

__all__ = ["ProcessEngine"]

logger = logging.getLogger(__name__)

TState = TypeVar("TState")
DEFAULT_MAX_ATTEMPTS = 3
PAGE = 1000


class ProcessEngine(Generic[TState]):
    """Runs one event-sourced process manager on a backend (see the module docstring)."""

    def __init__(
        self,
        backend: BackendSource,
        manager: EventSourcedProcessManager[TState],
        *,
        clock: Clock | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.backend: EventBackend = event_backend(backend, clock)
        self.manager = manager
        self.clock = clock or self.backend.clock
        self.process_type = validate_name(manager.process_type, "process_type")
        self.domain = validate_name(manager.domain)
        self.reply_queue = f"{self.domain}__process_events"
        self.max_attempts = max_attempts
        self.event_types = frozenset(manager.starts_on) | frozenset(manager.reacts_to)

    # -- identities ----------------------------------------------------------------------

    def process_id(self, key: str) -> UUID:
        """The id of the process for business ``key``."""
        return process_id_for(self.process_type, key)

    def stream_of(self, process_id: UUID) -> str:
        return f"{self.process_type}-{process_id}"

    # -- running -------------------------------------------------------------------------

    def subscription(self, name: str | None = None, **options: Any) -> Subscription:
        """A ``Subscription`` (named after the process type unless ``name`` is given) that
        feeds this engine the events its manager starts on and reacts to."""
        categories = self.manager.categories
        return Subscription(
            self.backend,
            name or self.process_type,
            self.handle_event,
            categories=None if categories is None else sorted(categories),
            event_types=sorted(self.event_types),
            clock=self.clock,
            **options,
        )

    # -- inputs --------------------------------------------------------------------------

    async def handle_event(
        self, event: RecordedEvent, context: Any = None, *, conn: Conn | None = None
    ) -> list[UUID]:
        """Feed an external event to the processes it concerns; returns the ids of those it
        changed (not those that had seen it already, or ignored it). Takes
        a subscription's ``(event, context)`` (and writes in its transaction) or ``conn``."""
        if event.event_type not in self.event_types:
            return []
        handled = []
        for key in self.manager.locator.keys(event):
            pid = self.process_id(key)
            if context is not None and conn is None:
                # A subscription's batch: all or nothing already, no savepoint needed.
                changed = await self._handle_external(context.conn, pid, key, event)
            else:
                async with self.backend.transaction(conn) as tx:
                    changed = await self._handle_external(tx, pid, key, event)
            if changed:
                handled.append(pid)
        return handled

    async def _handle_external(self, conn: Conn, pid: UUID, key: str, event: RecordedEvent) -> bool:
        starts = event.event_type in frozenset(self.manager.starts_on)
        snap = await self._lock(conn, pid, create_with=event.data if starts else None)
        if snap is None:
            await self._ignored(conn, pid, event, f"no {self.process_type} process for key {key!r}")
            return False
        instance = await self.load(pid, conn=conn)
        if instance.book.ending:
            await self._ignored(conn, pid, event, "the process has finished")
            return False
        input_id = derived_id(pid, "event", event.event_id)
        draft = Draft(self.manager, instance, input_id)
        if not instance.book.started:
            if not starts:
                await self._ignored(conn, pid, event, "the process has not started")
                return False
            draft.emit(E.PROCESS_STARTED, {"key": key}, derived_id(pid, "started"))
        source = {
            "stream": event.stream,
            "event_id": str(event.event_id),
            "position": event.position,
        }
        received = draft.emit(
            E.EVENT_RECEIVED,
            {"event_type": event.event_type, "data": event.data, "source": source},
            input_id,
        )
        draft.apply(self.manager.decide(draft.state, received))
        return await self._write(conn, snap, instance, draft)

    async def handle_message(self, message: JsonObject, *, conn: Conn) -> bool:
        """Apply a message of the reply queue: a command's reply or a timer. Returns
        whether it changed the process (False: ignored, e.g. a duplicate)."""
        if message.get("kind") == "timer":
            return await self._handle_timer(conn, message)
        return await self._handle_reply(conn, Reply.from_message(message), message)

    async def _handle_reply(self, conn: Conn, reply: Reply, raw: JsonObject) -> bool:
        pid = reply.correlation_id
        snap = None if pid is None else await self._lock(conn, pid)
        if pid is None or snap is None:
            await self._log_message(conn, pid, raw, "a reply for no known process")
            return False
        instance = await self.load(pid, conn=conn)
        found = instance.book.command(reply.command_id)
        if found is None:
            await self._log_message(conn, pid, raw, "a reply to a command the process did not send")
            return False
        task_id, compensates = found["task_id"], found["compensates"]
        if reply.outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE:
            await self._tsq_notice(conn, snap, reply)
            return True
        draft = Draft(self.manager, instance, derived_id(pid, "reply", reply.command_id))
        ok = reply.outcome is ReplyOutcome.SUCCESS
        outcome: JsonObject = {
            "task_id": task_id,
            "transition_id": str(reply.command_id),
            "command_id": str(reply.command_id),
            "compensates": compensates,
            "run": found["run"],
            "late": bool(found["late"]),
        }
        if ok:
            outcome["result"] = reply.data or {}
        else:
            outcome.update(
                reason=reply.outcome.value,
                error_code=reply.error_code,
                error_message=reply.error_message,
            )
        record = instance.book.task(task_id)
        awaited = (
            record is not None
            and record["command_id"] == str(reply.command_id)
            and record["state"] == TaskState.PENDING
        )
        if compensates is not None:
            draft.emit(E.TASK_COMPLETED if ok else E.TASK_FAILED, outcome, draft.input_id)
            if not found["late"]:
                draft.next_compensation()
        elif not awaited:
            late = {**outcome, "outcome": reply.outcome.value, "why": "no longer awaited"}
            draft.emit(E.TASK_IGNORED, late, draft.input_id)
            if ok and found["compensation"]:
                draft.undo_late(found)  # a success that came too late did its work: undo it
        else:
            event = draft.emit(E.TASK_COMPLETED if ok else E.TASK_FAILED, outcome, draft.input_id)
            draft.cancel_timeout(task_id)
            if not instance.book.ending:
                draft.apply(self.manager.decide(draft.state, event))
        return await self._write(conn, snap, instance, draft, reply=reply)

    async def _handle_timer(self, conn: Conn, message: JsonObject) -> bool:
        pid = UUID(str(message["process_id"]))
        name, seq = str(message["name"]), int(message["seq"])
        snap = await self._lock(conn, pid)
        if snap is None:
            return False
        instance = await self.load(pid, conn=conn)
        if instance.book.data["timers"].get(name) != seq or instance.book.ending:
            return False  # cancelled, replaced or fired already
        draft = Draft(self.manager, instance, derived_id(pid, "timer", name, seq))
        fired: JsonObject = {"name": name, "seq": seq, "data": message.get("data") or {}}
        if name.startswith("timeout:"):
            draft.emit(E.TIMER_FIRED, fired, draft.input_id)
            timed_out: JsonObject = fired["data"]
            task_id = str(timed_out["task_id"])
            record = instance.book.task(task_id)
            if record is None or record["state"] != TaskState.PENDING:
                return await self._write(conn, snap, instance, draft)
            event = draft.emit(
                E.TASK_FAILED,
                {
                    "task_id": task_id,
                    "transition_id": record["command_id"],
                    "command_id": record["command_id"],
                    "compensates": None,
                    "reason": "TIMEOUT",
                    "error_code": "TIMEOUT",
                    "error_message": f"no reply to task {task_id} in time",
                },
            )
        else:
            event = draft.emit(E.TIMER_FIRED, fired, draft.input_id)
        draft.apply(self.manager.decide(draft.state, event))
        return await self._write(conn, snap, instance, draft)

    async def cancel(self, process_id: UUID, reason: str = "", *, conn: Conn | None = None) -> bool:
        """Ask the process to stop: ``ProcessCancelled(reason)`` enters it, its decision is
        applied, and then it ends CANCELED (its tasks no longer awaited) unless the
        decision ended it otherwise. False if it does not exist or has ended."""
        reason = validate_text(reason, "reason", 2000)
        async with self.backend.transaction(conn) as tx:
            snap = await self._lock(tx, process_id)
            if snap is None:
                return False
            instance = await self.load(process_id, conn=tx)
            if instance.book.ending or not instance.book.started:
                return False
            draft = Draft(self.manager, instance, derived_id(process_id, "cancel"))
            event = draft.emit(E.PROCESS_CANCELLED, {"reason": reason}, draft.input_id)
            draft.apply(self.manager.decide(draft.state, event))
            if draft.book.finished is None and draft.book.data["then"] is None:
                draft.finish(ProcessStatus.CANCELED, "CANCELED", reason or "cancelled")
                draft.next_compensation()
            return await self._write(tx, snap, instance, draft)

    # -- loading -------------------------------------------------------------------------

    async def load(self, process_id: UUID, *, conn: Conn | None = None) -> ProcessInstance[TState]:
        """The process as of its stream: the latest snapshot plus the events after it."""
        stream = self.stream_of(process_id)
        events = self.backend.events
        state: TState = self.manager.initial_state()
        book, version = Book(), 0
        snapshot, page = await events.load_stream(stream, PAGE, conn=conn)
        if snapshot is not None:
            version, body = snapshot
            state = self.manager.state_from_dict(body["state"])
            book = Book(body["book"])
        while True:
            for event in page:
                book.apply(event.event_type, event.data)
                seen = process_event_of(event.event_type, event.data, event.event_id, event.version)
                state = self.manager.evolve(state, seen)
                version = event.version
            if len(page) < PAGE:
                break
            page = await events.read_stream(stream, version + 1, PAGE, conn=conn)
        return ProcessInstance(process_id, stream, version, state, book)

    async def history(self, process_id: UUID) -> list[RecordedEvent]:
        """Every event of the process stream, in order."""
        stream, found, version = self.stream_of(process_id), [], 1
        while page := await self.backend.events.read_stream(stream, version, PAGE):
            found.extend(page)
            version = page[-1].version + 1
            if len(page) < PAGE:
                break
        return found

    # -- writing -------------------------------------------------------------------------

    async def _lock(
        self, conn: Conn, pid: UUID, *, create_with: JsonObject | None = None
    ) -> ProcessSnapshot[Any, Any] | None:
        repo = self.backend.processes
        if create_with is not None:
            state = json_text(self.manager.state_to_dict(self.manager.initial_state()))
            new: ProcessMetadata[Any, Any] = ProcessMetadata(
                domain=self.domain,
                process_id=pid,
                process_type=self.process_type,
                status=ProcessStatus.IN_PROGRESS,
                state=JsonText(state),
                initial_data=create_with,
            )
            await repo.insert_new([new], conn=conn)
        found = await repo.lock([self.domain], [pid], conn=conn, with_audit=False)
        if not found or found[0].process.process_type != self.process_type:
            return None
        return found[0]

    async def _write(
        self,
        conn: Conn,
        snap: ProcessSnapshot[Any, Any],
        instance: ProcessInstance[TState],
        draft: Draft[TState],
        *,
        reply: Reply | None = None,
    ) -> bool:
        if not draft.events:
            return False
        try:
            await self.backend.events.append(
                instance.stream, encode_events(draft.events), instance.version, conn=conn
            )
        except DuplicateEventError:
            return False  # this input was applied before
        now = self.clock.now()
        await self._send(conn, instance.process_id, draft)
        await self._set_timers(conn, instance.process_id, draft)
        state = self.manager.state_to_dict(draft.state)
        writes = ProcessWrites()
        book = draft.book
        finished = book.finished
        process = snap.process.copy(
            status=book.status(),
            current_step=book.data["state_name"],
            state=JsonText(json_text(state)),
            error_code=None if finished is None else finished.get("error_code"),
            error_message=None if finished is None else finished.get("error_message"),
            completed_at=now if finished is not None else None,
        )
        writes.updates.append(process)
        for command in draft.commands:
            entry = ProcessAuditEntry(
                step_name=command.task_id,
                command_id=command.command_id,
                command_type=command.command_type,
                command_data=command.data,
                sent_at=now,
                kind=AuditEntryKind.COMPENSATION if command.compensates else AuditEntryKind.STEP,
            )
            writes.audit_inserts.append((self.domain, instance.process_id, entry))
        if reply is not None:
            entry = self._reply_entry(reply, now)
            writes.audit_updates.append((self.domain, instance.process_id, entry))
        await self.backend.processes.apply(writes, conn=conn)
        await self._snapshot(conn, instance, draft)
        return True

    async def _send(self, conn: Conn, pid: UUID, draft: Draft[TState]) -> None:
        if not draft.commands:
            return
        requests = [
            SendRequest(
                domain=c.domain,
                command_type=c.command_type,
                command_id=c.command_id,
                data=c.data,
                correlation_id=pid,
                reply_to=self.reply_queue,
                max_attempts=c.max_attempts,
            )
            for c in draft.commands
        ]
        await self.backend.commands.insert(requests, self.max_attempts, conn=conn)

    async def _set_timers(self, conn: Conn, pid: UUID, draft: Draft[TState]) -> None:
        for timer in draft.timers:
            message = {
                "kind": "timer",
                "process_id": str(pid),
                "name": timer.name,
                "seq": timer.seq,
                "data": timer.data,
            }
            await self.backend.queue.enqueue(self.reply_queue, [message], timer.after, conn=conn)

    async def _snapshot(
        self, conn: Conn, instance: ProcessInstance[TState], draft: Draft[TState]
    ) -> None:
        every = max(1, int(self.manager.snapshot_every))
        new_version = instance.version + len(draft.events)
        if new_version // every == instance.version // every:
            return
        body = {"state": self.manager.state_to_dict(draft.state), "book": draft.book.data}
        await self.backend.events.put_snapshot(
            instance.stream, new_version, json_text(body), conn=conn
        )

    async def _tsq_notice(self, conn: Conn, snap: ProcessSnapshot[Any, Any], reply: Reply) -> None:
        writes = ProcessWrites(updates=[snap.process.copy(status=ProcessStatus.WAITING_FOR_TSQ)])
        entry = self._reply_entry(reply, self.clock.now())
        writes.audit_updates.append((self.domain, snap.process.process_id, entry))
        await self.backend.processes.apply(writes, conn=conn)

    @staticmethod
    def _reply_entry(reply: Reply, now: datetime) -> ProcessAuditEntry:
        """The reply fields for the audit entry of ``reply.command_id`` (an audit update
        writes only those)."""
        return ProcessAuditEntry(
            step_name="",
            command_id=reply.command_id,
            command_type=reply.command_type or "",
            command_data=None,
            sent_at=now,
            reply_outcome=reply.outcome,
            reply_data=reply.data,
            received_at=now,
            error_code=reply.error_code,
            error_message=reply.error_message,
        )

    async def _ignored(self, conn: Conn, pid: UUID, event: RecordedEvent, reason: str) -> None:
        message = {
            "event_type": event.event_type,
            "stream": event.stream,
            "event_id": str(event.event_id),
            "position": event.position,
        }
        await self._log_message(conn, pid, message, reason)

    async def _log_message(
        self, conn: Conn, pid: UUID | None, message: JsonObject, reason: str
    ) -> None:
        record = ProcessMessageRecord(
            disposition=ProcessMessageDisposition.IGNORED,
            reason=reason,
            message=message,
            domain=self.domain,
            process_id=pid,
            queue_name=self.reply_queue,
        )
        await self.backend.processes.apply(ProcessWrites(messages=[record]), conn=conn)
