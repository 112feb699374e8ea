"""``BaseProcessManager[TState, TStep]``: the seed's hooks on top of the pure kernel.

A process manager describes one process type: how to build its typed state from the start
input, which step comes first, the command each step sends, how a reply updates the state,
which step follows, and which step compensates which. The manager never does the I/O of a
step itself: ``start``, ``handle_reply`` and ``cancel`` ask the kernel
(``commandbus.process.kernel.decide``) for a decision and let the engine write it in one
transaction. Replies normally arrive through ``ProcessReplyRouter``.

Typed state and steps: ``state_class`` (with ``from_dict``) and ``step_class`` (a
``StrEnum``) are taken from the generic arguments, ``class M(BaseProcessManager[MyState,
MyStep])``, unless the subclass sets them. Processes loaded through the manager (``get``)
carry a ``state_class`` instance and ``step_class`` steps.

Hooks may be plain or ``async`` for ``build_command`` (the seed's is async); all hooks must
be deterministic — no I/O, clock or randomness — because deciding is replayable.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from enum import StrEnum
from typing import Any, ClassVar, Generic
from uuid import UUID, uuid4

from commandbus.bus import CommandBus
from commandbus.errors import InvalidOperationError, ProcessNotFoundError
from commandbus.models import Reply
from commandbus.ports import Backend, Conn
from commandbus.process.engine import Envelope, ProcessEngine, checked_state
from commandbus.process.errors import StateLoadError
from commandbus.process.kernel import (
    CancelRequested,
    Decision,
    Ignored,
    ReplyReceived,
    decide_start,
)
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessCommand,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
    StepDefinition,
    TimeoutAction,
    TState,
    TStep,
)
from commandbus.process.repository import ProcessRepository
from commandbus.validation import (
    encode_payload,
    json_text,
    process_reply_queue,
    validate_name,
    validate_queue_name,
    validate_text,
    validate_uuid,
)

#: The longest reason ``cancel`` accepts (it is stored with the process).
MAX_CANCEL_REASON_CHARS = 10_000

__all__ = ["BaseProcessManager"]


class BaseProcessManager(ABC, Generic[TState, TStep]):
    """Base class of process managers with typed state (``TState``) and steps (``TStep``).

    ``command_bus`` is the ``CommandBus`` whose backend stores everything (its retry
    policy's ``max_attempts`` applies to the commands the process sends);
    ``process_repo`` defaults to that backend's ``processes``; ``reply_queue`` defaults to
    ``{domain}__process_replies``.
    """

    #: The typed state class (inferred from the generic arguments when not set).
    state_class: ClassVar[type[Any]]
    #: The step enum (inferred from the generic arguments when not set).
    step_class: ClassVar[type[Any]]
    #: Optional static step configuration: compensation and timeout defaults.
    steps: ClassVar[Sequence[StepDefinition]] = ()
    #: What a step timeout does unless ``on_step_timeout`` is overridden.
    default_timeout_action: ClassVar[TimeoutAction] = TimeoutAction.TSQ

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is BaseProcessManager:
                args = typing.get_args(base)
                if len(args) == 2:
                    state_cls, step_cls = args
                    if "state_class" not in cls.__dict__ and isinstance(state_cls, type):
                        cls.state_class = state_cls
                    if "step_class" not in cls.__dict__ and isinstance(step_cls, type):
                        cls.step_class = step_cls

    def __init__(
        self,
        command_bus: CommandBus,
        process_repo: ProcessRepository | None = None,
        reply_queue: str | None = None,
    ) -> None:
        self.command_bus = command_bus
        backend: Backend = command_bus.backend
        self.backend = backend
        repo = process_repo if process_repo is not None else getattr(backend, "processes", None)
        if repo is None:
            raise InvalidOperationError(
                "no process repository: pass process_repo or use a backend that has one"
            )
        self.process_repo: ProcessRepository = repo
        validate_name(self.domain)
        self.reply_queue = validate_queue_name(reply_queue or process_reply_queue(self.domain))
        self.max_attempts: int | None = command_bus.retry_policy.max_attempts
        #: Commands the process sends are held to the same limit as ``bus.send``.
        self.max_payload_bytes: int = command_bus.max_payload_bytes
        self._steps_by_name = {s.name: s for s in self.steps}
        self._engine: ProcessEngine | None = None

    # -- identity (override as properties or class attributes) -------------------------

    @property
    @abstractmethod
    def process_type(self) -> str:
        """The unique process type name (stored with each process)."""

    @property
    @abstractmethod
    def domain(self) -> str:
        """The domain the processes (and, by default, their commands) belong to."""

    # -- the seed's hooks --------------------------------------------------------------

    @abstractmethod
    def create_initial_state(self, initial_data: dict[str, Any]) -> TState:
        """Typed state from the start input; raise to refuse the start (nothing written)."""

    @abstractmethod
    def get_first_step(self, state: TState) -> TStep:
        """The first step."""

    @abstractmethod
    def build_command(
        self, step: TStep, state: TState
    ) -> ProcessCommand[Any] | Awaitable[ProcessCommand[Any]]:
        """The command a step sends (may be ``async def``)."""

    @abstractmethod
    def update_state(self, state: TState, step: TStep, reply: Reply) -> None:
        """Update ``state`` in place from a SUCCESS reply of ``step``."""

    @abstractmethod
    def get_next_step(self, current_step: TStep, reply: Reply, state: TState) -> TStep | None:
        """The step after ``current_step`` (state already updated); None completes."""

    def get_compensation_step(self, step: TStep) -> TStep | None:
        """The step that undoes ``step``, or None (default: from ``steps``)."""
        definition = self._steps_by_name.get(str(step))
        if definition is None or definition.compensation_step is None:
            return None
        return self.parse_step(definition.compensation_step)

    # -- timeouts ----------------------------------------------------------------------

    def get_step_timeout(self, step: TStep, state: TState) -> float | None:
        """Seconds the command of ``step`` may take to reply (default: from ``steps``)."""
        definition = self._steps_by_name.get(str(step))
        return definition.timeout_seconds if definition is not None else None

    def on_step_timeout(self, step: TStep, state: TState, attempt: int) -> TimeoutAction:
        """What to do when ``step`` timed out; ``attempt`` counts sends of the step in a row.

        The default, ``default_timeout_action`` (TSQ), parks the process for an operator
        and keeps waiting for the reply: a timeout usually means "slow", and re-sending a
        command whose handler is not idempotent would be worse than waiting."""
        return self.default_timeout_action

    # -- helpers the kernel uses -------------------------------------------------------

    def parse_step(self, name: str) -> TStep:
        step_class = getattr(type(self), "step_class", None)
        if step_class is None or not issubclass(step_class, StrEnum):
            return name  # type: ignore[return-value]
        result: TStep = step_class(name)
        return result

    def copy_state(self, state: TState) -> TState:
        """An independent copy of ``state`` (the kernel never mutates its input).

        By default the state goes through the same path as storage, ``to_dict`` -> JSON
        -> ``from_dict``: several times cheaper than ``copy.deepcopy`` of a dataclass, and
        the copy is exactly what a reload would give. Without ``to_dict``/``from_dict``
        the state is deep-copied."""
        to_dict = getattr(state, "to_dict", None)
        from_dict = getattr(type(state), "from_dict", None)
        if callable(to_dict) and callable(from_dict):
            result: TState = from_dict(json.loads(json_text(to_dict())))
            return result
        return copy.deepcopy(state)

    def load_state(self, data: dict[str, Any]) -> TState:
        state_class = getattr(type(self), "state_class", None)
        from_dict = getattr(state_class, "from_dict", None)
        if not callable(from_dict):
            return data  # type: ignore[return-value]
        result: TState = from_dict(data)
        return result

    def typed(self, process: ProcessMetadata[Any, Any]) -> ProcessMetadata[TState, TStep]:
        """``process`` as read from the repository, with typed state and step."""
        try:
            state = self.load_state(process.state)
            step = (
                self.parse_step(process.current_step) if process.current_step is not None else None
            )
        except Exception as exc:
            raise StateLoadError(process.process_type, process.process_id, exc) from exc
        return process.copy(state=state, current_step=step)

    def load_snapshot(self, snapshot: ProcessSnapshot[Any, Any]) -> ProcessSnapshot[TState, TStep]:
        return ProcessSnapshot(self.typed(snapshot.process), list(snapshot.audit))

    @property
    def engine(self) -> ProcessEngine:
        if self._engine is None:
            self._engine = ProcessEngine(self.backend, self.process_repo, {self.process_type: self})
        return self._engine

    # -- operations --------------------------------------------------------------------

    async def start(
        self,
        initial_data: dict[str, Any],
        process_id: UUID | str | None = None,
        conn: Conn | None = None,
    ) -> UUID:
        """Start a process: its row, first command and audit entry in ONE transaction
        (the caller's, with ``conn``). Returns the process id.

        Idempotent for a caller-supplied ``process_id`` that already exists with this
        process type (nothing is written, the id is returned); another type raises
        ``ProcessAlreadyExistsError``. If ``create_initial_state`` or another hook raises,
        the error propagates and nothing is written.

        ``initial_data`` must be a JSON object within the bus's payload size limit
        (``ValidationError`` otherwise, nothing written); a copy is stored with the process
        (``ProcessMetadata.initial_data``) so that replay can fold its history."""
        ids = await self.start_many([(process_id, initial_data)], conn=conn)
        return ids[0]

    async def start_many(
        self,
        items: Sequence[dict[str, Any] | tuple[UUID | str | None, dict[str, Any]]],
        conn: Conn | None = None,
    ) -> list[UUID]:
        """Start many processes in one transaction (all or nothing); ``items`` are initial
        data dicts or ``(process_id, initial_data)`` pairs. Same rules as ``start``."""
        now = self.backend.clock.now()
        max_bytes = self.max_payload_bytes
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
            state = self.create_initial_state(data)
            process: ProcessMetadata[TState, TStep] = ProcessMetadata(
                domain=self.domain,
                process_id=pid,
                process_type=self.process_type,
                status=ProcessStatus.PENDING,
                state=state,
                created_at=now,
                updated_at=now,
                version=1,
                initial_data=initial_data,
            )
            # The state was made just now and is not used again: no copy needed.
            decision = await decide_start(self, process, now, copy_state=False)
            state_json = checked_state(decision, self.process_type)
            assert decision.process is not None
            new.append(
                decision.process.copy(
                    state=state_json, current_step=str(decision.process.current_step)
                )
            )
            decisions[pid] = decision
        async with self.backend.transaction(conn) as tx:
            await self.engine.start(self, new, decisions, conn=tx)
        return ids

    async def handle_reply(
        self,
        reply: Reply,
        process: ProcessMetadata[Any, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> Decision[Any, Any] | None:
        """Apply one reply (in one transaction; the process row is locked). Routers call
        this path in batches; use it directly when you consume replies yourself.

        ``process`` (the seed's argument) only supplies the id when the reply has no
        correlation id; the stored process is always reloaded under lock. Returns the
        decision (None when the process is unknown). Hook errors are raised."""
        pid = reply.correlation_id or (process.process_id if process else None)
        if pid is not None and reply.correlation_id is None:
            reply = dataclasses.replace(reply, correlation_id=pid)
        envelope = Envelope(
            raw=reply.to_message(),
            message=ReplyReceived(reply),
            process_id=pid,
            domain=self.domain,
        )
        async with self.backend.transaction(conn) as tx:
            [handled] = await self.engine.handle([envelope], conn=tx, raise_errors=True)
        return handled.decision

    async def cancel(
        self, process_id: UUID | str, reason: str = "canceled", *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep]:
        """Cancel a running process: compensate its completed steps (reverse order), then
        end CANCELED. A command in flight is abandoned; its late reply is ignored. Raises
        ``ProcessNotFoundError``, or ``InvalidOperationError`` for a finished process.
        Canceling a process that already compensates changes nothing."""
        pid = validate_uuid(process_id, "process_id")
        reason = validate_text(reason, "reason", MAX_CANCEL_REASON_CHARS)
        envelope = Envelope(
            raw={}, message=CancelRequested(reason), process_id=pid, domain=self.domain
        )
        async with self.backend.transaction(conn) as tx:
            [handled] = await self.engine.handle([envelope], conn=tx, raise_errors=True)
            if handled.ignored is Ignored.UNKNOWN_PROCESS:
                raise ProcessNotFoundError(self.domain, pid)
            if handled.ignored is Ignored.FINISHED:
                status = (handled.reason or "").removeprefix("process is ")  # for the message
                raise InvalidOperationError(
                    f"cannot cancel process {pid}: it has finished ({status})"
                )
            found = await self.process_repo.get_by_id(self.domain, pid, conn=tx)
        assert found is not None
        return self.typed(found)

    # -- queries -----------------------------------------------------------------------

    async def get(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep] | None:
        """The process with typed state, or None (``StateLoadError`` if it cannot load)."""
        found = await self.process_repo.get_by_id(
            self.domain, validate_uuid(process_id, "process_id"), conn=conn
        )
        return self.typed(found) if found is not None else None

    async def get_audit_trail(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        return await self.process_repo.get_audit_trail(
            self.domain, validate_uuid(process_id, "process_id"), conn=conn
        )

    async def find_by_status(
        self, statuses: Sequence[ProcessStatus], *, limit: int | None = None
    ) -> list[ProcessMetadata[TState, TStep]]:
        """Processes of this type in any of ``statuses`` (typed), oldest first."""
        found = await self.process_repo.find_by_status(self.domain, statuses, limit=limit)
        return [self.typed(p) for p in found if p.process_type == self.process_type]


def managers_by_type(
    managers: Mapping[str, BaseProcessManager[Any, Any]] | Sequence[BaseProcessManager[Any, Any]],
) -> dict[str, BaseProcessManager[Any, Any]]:
    """Normalise the seed's ``{process_type: manager}`` dict or a plain list."""
    if isinstance(managers, Mapping):
        result = dict(managers)
        for key, manager in result.items():
            if key != manager.process_type:
                raise InvalidOperationError(
                    f"manager registered as {key!r} has process_type {manager.process_type!r}"
                )
        return result
    result = {}
    for manager in managers:
        if manager.process_type in result:
            raise InvalidOperationError(f"two managers for process type {manager.process_type!r}")
        result[manager.process_type] = manager
    return result
