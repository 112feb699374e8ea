"""The runtime of one process definition: start, handle a reply, cancel, and the queries.

``BaseProcessManager`` is the *definition* (the seed's hooks, pure; the kernel reads it);
``ProcessRuntime`` is what runs it. Every write goes through the engine
(``commandbus.process.engine``) in one transaction: the runtime decides nothing itself, it
builds the kernel's input, hands the batch to the engine and turns the engine's typed
``Handled`` result into the caller's answer. The manager's public methods (``start``,
``handle_reply``, ``cancel``, ``get``…) delegate here.

``SendingPolicy`` (defined beside the engine, which reads it) is how the commands of a
process type are sent: the reply queue and the attempt and payload limits of the
manager's bus.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Generic, Protocol
from uuid import UUID, uuid4

from commandbus.batches.models import BatchKind, NewBatch, ProcessBatch
from commandbus.batches.ports import BatchBackend, BatchStore
from commandbus.batches.requests import new_batch
from commandbus.errors import InvalidOperationError, ProcessNotFoundError, ValidationError
from commandbus.models import JsonObject, Reply
from commandbus.ports import Backend, Conn
from commandbus.process.decisions import (
    CancelRequested,
    Decision,
    Ignored,
    IncomingMessage,
    ReplyReceived,
    StepCompletionRequested,
    StepRetryRequested,
)
from commandbus.process.engine import Envelope, ProcessEngine
from commandbus.process.errors import ProcessHookError
from commandbus.process.kernel import ProcessHooks, decide_start
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
    TState,
    TStep,
)
from commandbus.process.repository import ProcessRepository
from commandbus.process.staging import SendingPolicy, checked_state
from commandbus.validation import (
    encode_payload,
    validate_optional_text,
    validate_text,
    validate_uuid,
)

__all__ = ["MAX_CANCEL_REASON_CHARS", "ProcessDefinition", "ProcessRuntime", "SendingPolicy"]

#: The longest reason ``cancel`` accepts (it is stored with the process).
MAX_CANCEL_REASON_CHARS = 10_000
#: The longest operator name the step actions accept (stored in the audit trail).
MAX_OPERATOR_CHARS = 200


class ProcessDefinition(ProcessHooks[TState, TStep], Protocol):
    """What the runtime and the engine read of a process definition besides the kernel's
    hooks (``BaseProcessManager`` provides it)."""

    @property
    def sending(self) -> SendingPolicy: ...

    def create_initial_state(self, initial_data: dict[str, Any]) -> TState: ...

    def typed(self, process: ProcessMetadata[Any, Any]) -> ProcessMetadata[TState, TStep]: ...

    def load_snapshot(
        self, snapshot: ProcessSnapshot[Any, Any]
    ) -> ProcessSnapshot[TState, TStep]: ...


def _operator(operator: object) -> str | None:
    return validate_optional_text(operator, "operator", MAX_OPERATOR_CHARS)


def _refresh(target: ProcessMetadata[Any, Any], source: ProcessMetadata[Any, Any]) -> None:
    """Make the caller's ``target`` object what is stored (``handle_reply``'s argument)."""
    for f in dataclasses.fields(source):
        setattr(target, f.name, getattr(source, f.name))


class ProcessRuntime(Generic[TState, TStep]):
    """Runs ``definition`` on ``backend``, its processes stored in ``repo``."""

    def __init__(
        self,
        definition: ProcessDefinition[TState, TStep],
        backend: Backend,
        repo: ProcessRepository,
    ) -> None:
        self.definition = definition
        self.backend = backend
        self.repo = repo
        bus = getattr(definition, "command_bus", None)
        self.engine = ProcessEngine(
            backend,
            repo,
            {definition.process_type: definition},
            telemetry=getattr(bus, "telemetry", None),
        )

    async def start_many(
        self,
        items: Sequence[dict[str, Any] | tuple[UUID | str | None, dict[str, Any]]],
        conn: Conn | None = None,
        *,
        batch: ProcessBatch | None = None,
    ) -> list[UUID]:
        """Start processes in one transaction, all or nothing (``BaseProcessManager.start``
        and ``start_many`` document the rules)."""
        definition = self.definition
        batch_row = self._batch_row(batch)
        now = self.backend.clock.now()
        max_bytes = definition.sending.max_payload_bytes
        new: list[ProcessMetadata[Any, Any]] = []
        decisions: dict[UUID, Decision[TState, TStep]] = {}
        ids: list[UUID] = []
        for item in items:
            given, data = item if isinstance(item, tuple) else (None, item)
            pid = validate_uuid(given, "process_id") if given is not None else uuid4()
            ids.append(pid)
            if pid in decisions:
                continue
            # Stored with the row for replay: a JSON object within the payload limit, and
            # a deep copy (taken before the hook sees the data).
            initial_data = json.loads(encode_payload(data, "initial_data", max_bytes))
            try:
                state = definition.create_initial_state(data)
            except Exception as exc:  # one rule for every hook: ProcessHookError
                hook = "create_initial_state"
                raise ProcessHookError(hook, definition.process_type, exc) from exc
            process: ProcessMetadata[TState, TStep] = ProcessMetadata(
                domain=definition.domain,
                process_id=pid,
                process_type=definition.process_type,
                status=ProcessStatus.PENDING,
                state=state,
                created_at=now,
                updated_at=now,
                version=1,
                initial_data=initial_data,
            )
            # The state was made just now and is not used again: no copy needed.
            decision = await decide_start(definition, process, now, copy_state=False)
            state_json = checked_state(decision, definition.process_type)
            assert decision.process is not None
            new.append(
                decision.process.copy(
                    state=state_json,
                    current_step=str(decision.process.current_step),
                    batch_id=batch_row.batch_id if batch_row is not None else None,
                )
            )
            decisions[pid] = decision
        async with self.backend.transaction(conn) as tx:
            if batch_row is None:
                await self.engine.start(definition, new, decisions, conn=tx)
                return ids
            store = self._batch_store()
            # Created open and empty: the processes join it once inserted (one that
            # existed already, an idempotent start, is not a member), each counted in its
            # first status, then it is closed, which finishes it at once if they all
            # ended in their start.
            await store.create(batch_row, conn=tx)
            inserted = await self.engine.start(definition, new, decisions, conn=tx)
            if not inserted:
                raise InvalidOperationError(
                    f"none of these processes is new, so batch {batch_row.batch_id} would "
                    "have no member; nothing was written"
                )
            domain, batch_id = batch_row.domain, batch_row.batch_id
            added = await store.add_members(
                domain, batch_id, BatchKind.PROCESSES, len(inserted), conn=tx
            )
            assert added, "a batch created open in this transaction takes members"
            first = [(domain, batch_id, None, p.status.value) for p in inserted]
            await store.count_changes(first, conn=tx)
            await store.close(domain, batch_id, conn=tx)
        return ids

    def _batch_row(self, batch: object) -> NewBatch | None:
        if batch is None:
            return None
        if not isinstance(batch, ProcessBatch):
            raise ValidationError(f"batch must be a ProcessBatch, got {type(batch).__name__}")
        domain = self.definition.domain
        kind = BatchKind.PROCESSES
        return new_batch(domain, batch.batch_id, kind, batch.name, batch.reply_to, True, 0)

    def _batch_store(self) -> BatchStore:
        backend = self.backend
        if not isinstance(backend, BatchBackend):
            raise TypeError(f"{type(backend).__name__} does not store batches")
        return backend.batches

    async def handle_reply(
        self,
        reply: Reply,
        process: ProcessMetadata[Any, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> Decision[Any, Any] | None:
        """Apply one reply in one transaction, the process row locked; the decision, or
        None when the process is unknown. Hook errors are raised."""
        pid = reply.correlation_id or (process.process_id if process else None)
        if pid is not None and reply.correlation_id is None:
            reply = dataclasses.replace(reply, correlation_id=pid)
        envelope = Envelope(
            raw=reply.to_message(),
            message=ReplyReceived(reply),
            process_id=pid,
            domain=self.definition.domain,
        )
        async with self.backend.transaction(conn) as tx:
            [handled] = await self.engine.handle([envelope], conn=tx, raise_errors=True)
            if process is not None and pid is not None:
                stored = await self.repo.get_by_id(self.definition.domain, pid, conn=tx)
                if stored is not None:
                    _refresh(process, self.definition.typed(stored))
        return handled.decision

    async def cancel(
        self, process_id: UUID | str, reason: str = "canceled", *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep]:
        """Cancel a running process (``BaseProcessManager.cancel`` documents the rules)."""
        reason = validate_text(reason, "reason", MAX_CANCEL_REASON_CHARS)
        return await self._operator_call(process_id, CancelRequested(reason), "cancel", conn)

    async def retry_step(
        self, process_id: UUID | str, *, operator: str | None = None, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep]:
        """Send the awaited step again (``BaseProcessManager.retry_step``)."""
        request = StepRetryRequested(_operator(operator))
        return await self._operator_call(process_id, request, "retry the step of", conn)

    async def complete_step(
        self,
        process_id: UUID | str,
        result: JsonObject | None = None,
        *,
        operator: str | None = None,
        conn: Conn | None = None,
    ) -> ProcessMetadata[TState, TStep]:
        """Complete the awaited step with ``result`` (``BaseProcessManager.complete_step``)."""
        max_bytes = self.definition.sending.max_payload_bytes
        data = json.loads(encode_payload(result or {}, "result", max_bytes))
        request = StepCompletionRequested(data, _operator(operator))
        return await self._operator_call(process_id, request, "complete the step of", conn)

    async def _operator_call(
        self, process_id: UUID | str, message: IncomingMessage, action: str, conn: Conn | None
    ) -> ProcessMetadata[TState, TStep]:
        """One operator message, decided and written in one transaction; the process as
        it is then. Raises ``ProcessNotFoundError`` or ``InvalidOperationError``."""
        domain = self.definition.domain
        pid = validate_uuid(process_id, "process_id")
        envelope = Envelope(raw={}, message=message, process_id=pid, domain=domain)
        async with self.backend.transaction(conn) as tx:
            [handled] = await self.engine.handle([envelope], conn=tx, raise_errors=True)
            if handled.ignored is Ignored.UNKNOWN_PROCESS:
                raise ProcessNotFoundError(domain, pid)
            found = await self.repo.get_by_id(domain, pid, conn=tx)
            assert found is not None
            if handled.ignored is Ignored.FINISHED:
                raise InvalidOperationError(
                    f"cannot {action} process {pid}: it has finished ({found.status.value})"
                )
            if handled.ignored is Ignored.NOT_WAITING_FOR_OPERATOR:
                raise InvalidOperationError(f"cannot {action} process {pid}: {handled.reason}")
        return self.definition.typed(found)

    async def get(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep] | None:
        found = await self.repo.get_by_id(
            self.definition.domain, validate_uuid(process_id, "process_id"), conn=conn
        )
        return self.definition.typed(found) if found is not None else None

    async def get_audit_trail(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        return await self.repo.get_audit_trail(
            self.definition.domain, validate_uuid(process_id, "process_id"), conn=conn
        )

    async def find_by_status(
        self, statuses: Sequence[ProcessStatus], *, limit: int | None = None
    ) -> list[ProcessMetadata[TState, TStep]]:
        definition = self.definition
        found = await self.repo.find_by_status(definition.domain, statuses, limit=limit)
        return [definition.typed(p) for p in found if p.process_type == definition.process_type]
