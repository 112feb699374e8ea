"""``ProcessEngine``: runs an ``EventSourcedProcessManager`` (seed 003's engine).

For every input — an external event, a command's reply, a timer, a cancel — in the
caller's transaction (a subscription's batch, a router's batch):

1. locate the process (``ProcessLocator``; replies and timers carry its id) and lock its
   read-model row (``commandbus.process``), creating it for a start event;
2. load its state: the latest snapshot and the stream events after it, folded;
3. skip the input if its record is stored already (its id is derived from the input, so
   a redelivered event or reply is recognised), else record it in the process stream,
   ``decide`` (``commandbus.process_manager.inputs``), and record what it decided;
4. append the events (expected version: the loaded one), send the tasks' commands, set
   the timers, update the read model (row and audit trail), take a snapshot every
   ``snapshot_every`` events — all in that one transaction.

A batch of inputs costs the same few statements as one (``BatchWrites``): one lock, one
load, one append, one insert of commands, one read-model write; several inputs for one
process fold one after the other in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.backends import BackendSource
from commandbus.events.models import RecordedEvent
from commandbus.events.ports import EventBackend, FoldedEvent
from commandbus.events.store import event_backend
from commandbus.events.subscription import Subscription
from commandbus.models import JsonObject, Reply
from commandbus.ports import Clock, Conn, JsonText
from commandbus.process.models import ProcessMetadata, ProcessStatus
from commandbus.process_manager.draft import process_event_of
from commandbus.process_manager.inputs import Input, plan
from commandbus.process_manager.instance import Book, ProcessInstance
from commandbus.process_manager.locator import process_id_for
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.process_manager.writes import BatchWrites
from commandbus.telemetry import NO_TELEMETRY, Telemetry
from commandbus.validation import json_text, validate_name, validate_text

__all__ = ["ProcessEngine"]

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
        telemetry: Telemetry | None = None,
    ) -> None:
        self.backend: EventBackend = event_backend(backend, clock)
        self.manager = manager
        self.clock = clock or self.backend.clock
        self.process_type = validate_name(manager.process_type, "process_type")
        self.domain = validate_name(manager.domain)
        self.reply_queue = f"{self.domain}__process_events"
        self.max_attempts = max_attempts
        #: Metrics and traces (``commandbus.telemetry``); off by default.
        self.telemetry: Telemetry = telemetry or NO_TELEMETRY
        self._starts = frozenset(manager.starts_on)
        self.event_types = self._starts | frozenset(manager.reacts_to)

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
            batch_handler=self.handle_events,
            categories=None if categories is None else sorted(categories),
            event_types=sorted(self.event_types),
            clock=self.clock,
            **options,
        )

    # -- inputs --------------------------------------------------------------------------

    async def handle_events(
        self,
        events: Sequence[RecordedEvent],
        context: Any = None,
        *,
        conn: Conn | None = None,
    ) -> list[UUID]:
        """Feed external events to the processes they concern, all in one transaction
        (``context.conn``, a subscription's batch; or ``conn``; or one of its own). Returns
        the ids of the processes they changed (not those that had seen them already, or
        ignored them). If ``decide`` or ``evolve`` raises for one, nothing is written and
        the error propagates (the subscription then narrows the batch down to that event).
        """
        items = []
        for event in events:
            # The processes' own streams are their history, never an input (a manager
            # subscribed to every stream would otherwise be fed its own records).
            if event.event_type not in self.event_types or event.category == self.process_type:
                continue
            starts = event.event_type in self._starts
            for key in self.manager.locator.keys(event):
                items.append(Input.of_event(self.process_id(key), key, event, starts))
        if not items:
            return []
        if context is not None and conn is None:
            # A subscription's batch: all or nothing already, no savepoint needed.
            results = await self._apply(items, context.conn, all_or_nothing=True)
        else:
            async with self.backend.transaction(conn) as tx:
                results = await self._apply(items, tx, all_or_nothing=True)
        changed = [i.process_id for i, r in zip(items, results, strict=True) if r.changed]
        return list(dict.fromkeys(changed))

    async def handle_event(
        self, event: RecordedEvent, context: Any = None, *, conn: Conn | None = None
    ) -> list[UUID]:
        """``handle_events`` for one event: a subscription handler as it is."""
        return await self.handle_events([event], context, conn=conn)

    async def handle_messages(
        self, messages: Sequence[JsonObject], *, conn: Conn
    ) -> list[BaseException | None]:
        """Apply messages of the reply queue (replies and timers) in ``conn``'s transaction,
        in a few statements for all of them. Returns, per message, the error that kept it
        from being applied (a malformed message, or ``decide`` raising), or None; the
        other messages are written."""
        errors: list[BaseException | None] = [None] * len(messages)
        items: list[Input] = []
        positions: list[int] = []
        unknown = BatchWrites(self.manager, self.domain, self.reply_queue, 0, self.clock.now())
        for index, message in enumerate(messages):
            try:
                if message.get("kind") == "timer":
                    item = Input.of_timer(message)
                else:
                    reply = Reply.from_message(message)
                    if reply.correlation_id is None:
                        unknown.ignored(None, message, "a reply for no known process")
                        continue
                    item = Input.of_reply(reply, message)
            except Exception as exc:
                errors[index] = exc
                continue
            items.append(item)
            positions.append(index)
        if unknown.read_model:
            await self.backend.processes.apply(unknown.read_model, conn=conn)
        results = await self._apply(items, conn, all_or_nothing=False)
        for index, result in zip(positions, results, strict=True):
            errors[index] = result.error
        return errors

    async def handle_message(self, message: JsonObject, *, conn: Conn) -> None:
        """``handle_messages`` for one message; its error, if any, is raised."""
        [error] = await self.handle_messages([message], conn=conn)
        if error is not None:
            raise error

    async def cancel(self, process_id: UUID, reason: str = "", *, conn: Conn | None = None) -> bool:
        """Ask the process to stop: ``ProcessCancelled(reason)`` enters it, its decision is
        applied, and then it ends CANCELED (its tasks no longer awaited) unless the
        decision ended it otherwise. False if it does not exist or has ended."""
        reason = validate_text(reason, "reason", 2000)
        async with self.backend.transaction(conn) as tx:
            [result] = await self._apply([Input.of_cancel(process_id, reason)], tx)
        if result.error is not None:
            raise result.error
        return result.changed

    async def _apply(
        self, items: Sequence[Input], conn: Conn, *, all_or_nothing: bool = True
    ) -> list[_Result]:
        """Plan every input on its process (in order; several for one process fold one
        after the other) and write what they make, in a few statements."""
        if not items:
            return []
        telemetry = self.telemetry
        if not telemetry.enabled:
            return await self._apply_items(items, conn, all_or_nothing)
        attributes = {"process_type": self.process_type, "inputs": len(items)}
        with telemetry.span("commandbus.process_manager.apply", attributes) as span:
            results = await self._apply_items(items, conn, all_or_nothing)
            span.set("changed", sum(r.changed for r in results))
            return results

    async def _apply_items(
        self, items: Sequence[Input], conn: Conn, all_or_nothing: bool
    ) -> list[_Result]:
        repo = self.backend.processes
        writes = BatchWrites(
            self.manager,
            self.domain,
            self.reply_queue,
            self.max_attempts,
            self.clock.now(),
            self.telemetry,
        )
        new = {}
        for item in items:
            if item.starts and item.process_id not in new and item.event is not None:
                new[item.process_id] = self._new_row(item.process_id, item.event.data)
        if new:
            await repo.insert_new(list(new.values()), conn=conn)
        pids = list(dict.fromkeys(i.process_id for i in items))
        locked = {
            s.process.process_id: s.process
            for s in await repo.lock([self.domain], pids, conn=conn, with_audit=False)
            if s.process.process_type == self.process_type
        }
        instances = await self._load_many([p for p in pids if p in locked], conn)
        seen = await self.backend.events.stored_event_ids([i.input_id for i in items], conn=conn)
        results = []
        for item in items:
            row = locked.get(item.process_id)
            if row is None or item.input_id in seen:
                if row is None and item.kind in ("event", "reply"):
                    writes.ignored(item.process_id, item.message, self._no_process(item))
                results.append(_Result(False))
                continue
            try:
                planned = plan(self.manager, instances[item.process_id], item)
            except Exception as exc:
                if all_or_nothing:
                    raise
                results.append(_Result(False, exc))
                continue
            if planned.ignored is not None:
                writes.ignored(item.process_id, item.message, planned.ignored)
                results.append(_Result(False))
            elif planned.tsq_notice is not None:
                writes.tsq_notice(row, planned.tsq_notice)
                results.append(_Result(True))
            elif planned.draft is not None and planned.draft.events:
                before = instances[item.process_id]
                instances[item.process_id] = writes.add(row, before, planned.draft, item.reply)
                seen.add(item.input_id)
                results.append(_Result(True))
            else:
                results.append(_Result(False))
        await writes.write(self.backend, conn)
        return results

    def _no_process(self, item: Input) -> str:
        if item.kind == "event":
            return f"no {self.process_type} process for key {item.key!r}"
        return "a reply for no known process"

    def _new_row(self, pid: UUID, initial_data: JsonObject) -> ProcessMetadata[Any, Any]:
        state = json_text(self.manager.state_to_dict(self.manager.initial_state()))
        return ProcessMetadata(
            domain=self.domain,
            process_id=pid,
            process_type=self.process_type,
            status=ProcessStatus.IN_PROGRESS,
            state=JsonText(state),
            initial_data=initial_data,
        )

    # -- loading -------------------------------------------------------------------------

    async def load(self, process_id: UUID, *, conn: Conn | None = None) -> ProcessInstance[TState]:
        """The process as of its stream: the latest snapshot plus the events after it."""
        return (await self._load_many([process_id], conn))[process_id]

    async def _load_many(
        self, process_ids: Sequence[UUID], conn: Conn | None
    ) -> dict[UUID, ProcessInstance[TState]]:
        streams = {pid: self.stream_of(pid) for pid in process_ids}
        events = self.backend.events
        loaded = await events.load_streams(list(streams.values()), PAGE, conn=conn)
        found = {}
        for pid, stream in streams.items():
            snapshot, first = loaded[stream]
            page: Sequence[FoldedEvent | RecordedEvent] = first
            state: TState = self.manager.initial_state()
            book, version = Book(), 0
            if snapshot is not None:
                version, body = snapshot
                state = self.manager.state_from_dict(body["state"])
                book = Book(body["book"])
            while True:
                for event in page:
                    book.apply(event.event_type, event.data)
                    seen = process_event_of(
                        event.event_type, event.data, event.event_id, event.version
                    )
                    state = self.manager.evolve(state, seen)
                    version = event.version
                if len(page) < PAGE:
                    break
                page = await events.read_stream(stream, version + 1, PAGE, conn=conn)
            found[pid] = ProcessInstance(pid, stream, version, state, book)
        return found

    async def history(self, process_id: UUID) -> list[RecordedEvent]:
        """Every event of the process stream, in order."""
        stream, found, version = self.stream_of(process_id), [], 1
        while page := await self.backend.events.read_stream(stream, version, PAGE):
            found.extend(page)
            version = page[-1].version + 1
            if len(page) < PAGE:
                break
        return found


@dataclass(frozen=True)
class _Result:
    changed: bool
    error: BaseException | None = None
