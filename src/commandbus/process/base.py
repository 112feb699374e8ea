"""``BaseProcessManager[TState, TStep]``: a process *definition*, the seed's hooks.

A process manager describes one process type: how to build its typed state from the start
input, which step comes first, the command each step sends, how a reply updates the state,
which step follows, and which step compensates which. The kernel
(``commandbus.process.kernel.decide``) reads these hooks to decide; the manager's
operations (``start``, ``handle_reply``, ``cancel``, the queries) delegate to its
``ProcessRuntime`` (``commandbus.process.runtime``), which lets the engine write each
decision in one transaction. Replies normally arrive through ``ProcessReplyRouter``.

Typed state and steps: ``state_class`` (with ``from_dict``) and ``step_class`` (a
``StrEnum``) are taken from the generic arguments, ``class M(BaseProcessManager[MyState,
MyStep])``, unless the subclass sets them. Processes loaded through the manager (``get``)
carry a ``state_class`` instance and ``step_class`` steps.

Hooks may be plain or ``async`` for ``build_command`` (the seed's is async); all hooks must
be deterministic — no I/O, clock or randomness — because deciding is replayable.
"""

from __future__ import annotations

import copy
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, runtime_checkable
from uuid import UUID

from commandbus.batches.models import ProcessBatch
from commandbus.bus import CommandBus
from commandbus.errors import InvalidOperationError
from commandbus.models import Reply
from commandbus.ports import Backend, Conn
from commandbus.process.decisions import Decision
from commandbus.process.engine import ProcessEngine
from commandbus.process.errors import ProcessDefinitionError, StateLoadError
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
from commandbus.process.runtime import ProcessRuntime
from commandbus.process.staging import SendingPolicy
from commandbus.process.versions import upgraded
from commandbus.validation import (
    json_text,
    process_reply_queue,
    validate_name,
    validate_queue_name,
)

__all__ = ["BaseProcessManager", "ProcessManager"]


@runtime_checkable
class ProcessManager(Protocol):
    """The seed's marker protocol of process managers: ``isinstance(m, ProcessManager)``
    is true of every ``BaseProcessManager`` (and of any object with these members)."""

    @property
    def process_type(self) -> str: ...

    @property
    def domain(self) -> str: ...

    async def start(self, initial_data: dict[str, Any]) -> UUID: ...

    async def handle_reply(self, reply: Reply, process: ProcessMetadata[Any, Any]) -> Any: ...


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
    #: Seconds the whole process may take from its start (None: no deadline), unless
    #: ``get_process_timeout`` is overridden; ``on_process_timeout`` decides what then.
    process_timeout_seconds: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _refuse_ignored_overrides(cls)
        # Only this class's own bases: ``__orig_bases__`` is inherited, and a subclass of a
        # subclass must keep the state_class its parent set, not re-infer its grandparent's.
        for base in cls.__dict__.get("__orig_bases__", ()):
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
        # Commands the process sends are held to the same limits as ``bus.send``.
        self._sending = SendingPolicy(
            reply_queue=self.reply_queue,
            max_attempts=command_bus.retry_policy.max_attempts,
            max_payload_bytes=command_bus.max_payload_bytes,
        )
        self._steps_by_name = {s.name: s for s in self.steps}
        self._runtime: ProcessRuntime[TState, TStep] | None = None
        _check_typing_attributes(self)

    @property
    def max_attempts(self) -> int | None:
        return self._sending.max_attempts

    @property
    def max_payload_bytes(self) -> int:
        return self._sending.max_payload_bytes

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

    def get_process_timeout(self, state: TState) -> float | None:
        """Seconds the whole process may take from its start (default:
        ``process_timeout_seconds``). A durable timer is set when the process starts."""
        return self.process_timeout_seconds

    def on_process_timeout(self, state: TState) -> TimeoutAction:
        """What to do when the process ran out of time while awaiting a step: the same
        choices as a step timeout (``TSQ``: an operator decides, ``RETRY`` the step,
        ``COMPENSATE``, ``FAIL``). Default: ``default_timeout_action``."""
        return self.default_timeout_action

    # -- helpers the kernel uses -------------------------------------------------------

    def parse_step(self, name: str) -> TStep:
        # Read on the instance: ``step_class`` may be a property, as the seed writes
        # ``process_type`` and ``domain``.
        step_class = getattr(self, "step_class", None)
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
        """The typed state of stored ``data``: upgraded to ``state_class.state_version``
        first (``commandbus.process.versions``), then ``state_class.from_dict``."""
        state_class = getattr(self, "state_class", None)
        from_dict = getattr(state_class, "from_dict", None)
        if not callable(from_dict):
            return data  # type: ignore[return-value]
        body, _, _ = upgraded(state_class, data)
        result: TState = from_dict(body)
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
    def sending(self) -> SendingPolicy:
        """How this manager's commands are sent (reply queue, attempt and payload limits)."""
        return self._sending

    @property
    def runtime(self) -> ProcessRuntime[TState, TStep]:
        """What runs this definition: every operation below delegates to it."""
        if self._runtime is None:
            self._runtime = ProcessRuntime(self, self.backend, self.process_repo)
        return self._runtime

    @property
    def engine(self) -> ProcessEngine:
        return self.runtime.engine

    # -- operations (the runtime's; every write goes through the engine) ---------------

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
        ids = await self.runtime.start_many([(process_id, initial_data)], conn=conn)
        return ids[0]

    async def start_many(
        self,
        items: Sequence[dict[str, Any] | tuple[UUID | str | None, dict[str, Any]]],
        conn: Conn | None = None,
        *,
        batch: ProcessBatch | None = None,
    ) -> list[UUID]:
        """Start many processes in one transaction (all or nothing); ``items`` are initial
        data dicts or ``(process_id, initial_data)`` pairs. Same rules as ``start``.

        With ``batch`` the processes started are one batch (``CommandBus.get_batch``
        shows its counters): it finishes when the last of them ends, and its completion
        notice goes to ``batch.reply_to``. A process that existed already is not a
        member; ``InvalidOperationError`` if none is new."""
        return await self.runtime.start_many(items, conn=conn, batch=batch)

    async def handle_reply(
        self,
        reply: Reply,
        process: ProcessMetadata[Any, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> Decision[Any, Any] | None:
        """Apply one reply (in one transaction; the process row is locked). Routers call
        this path in batches; use it directly when you consume replies yourself.

        The stored process is reloaded under lock (``process``, the seed's argument, only
        supplies the id when the reply has no correlation id), and ``process``, when
        given, is updated in place to what was stored, so the caller sees the new status,
        step and state. Returns the decision (None when the process is unknown). Hook
        errors are raised."""
        return await self.runtime.handle_reply(reply, process, conn=conn)

    async def cancel(
        self, process_id: UUID | str, reason: str = "canceled", *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep]:
        """Cancel a running process: compensate its completed steps (reverse order), then
        end CANCELED. A command in flight is abandoned; its late reply is ignored. Raises
        ``ProcessNotFoundError``, or ``InvalidOperationError`` for a finished process.
        Canceling a process that already compensates changes nothing."""
        return await self.runtime.cancel(process_id, reason, conn=conn)

    async def retry_step(
        self, process_id: UUID | str, *, operator: str | None = None, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep]:
        """An operator's decision for a process that needs one (WAITING_FOR_OPERATOR after a
        step timeout, or WAITING_FOR_TSQ): send its awaited step again, as a new command.
        The old command is withdrawn if it has not started (if it has, its late reply is
        ignored). Raises ``ProcessNotFoundError``, or ``InvalidOperationError`` when the
        process does not wait for an operator."""
        return await self.runtime.retry_step(process_id, operator=operator, conn=conn)

    async def complete_step(
        self,
        process_id: UUID | str,
        result: dict[str, Any] | None = None,
        *,
        operator: str | None = None,
        conn: Conn | None = None,
    ) -> ProcessMetadata[TState, TStep]:
        """An operator's decision for a process that needs one: the awaited step counts
        as done with ``result`` (``update_state`` sees a SUCCESS reply with that data) and
        the process goes on. Its command is withdrawn if it has not started (or, in the
        TSQ, canceled there). Same errors as ``retry_step``."""
        return await self.runtime.complete_step(process_id, result, operator=operator, conn=conn)

    # -- queries -----------------------------------------------------------------------

    async def get(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> ProcessMetadata[TState, TStep] | None:
        """The process with typed state, or None (``StateLoadError`` if it cannot load)."""
        return await self.runtime.get(process_id, conn=conn)

    async def get_audit_trail(
        self, process_id: UUID | str, *, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        return await self.runtime.get_audit_trail(process_id, conn=conn)

    async def find_by_status(
        self, statuses: Sequence[ProcessStatus], *, limit: int | None = None
    ) -> list[ProcessMetadata[TState, TStep]]:
        """Processes of this type in any of ``statuses`` (typed), oldest first."""
        return await self.runtime.find_by_status(statuses, limit=limit)


#: The seed's private step machinery, which the kernel replaced: overriding one of these
#: would change nothing, so defining it is refused, with what to override instead.
IGNORED_OVERRIDES: Mapping[str, str] = {
    "_execute_step": (
        "the kernel sends each step's command: override build_command (what to send) "
        "and get_step_timeout (how long to wait)"
    ),
    "_complete_process": (
        "a process completes when get_next_step returns None; record the outcome in update_state"
    ),
    "_handle_failure": (
        "a FAILED reply reaches update_state (record the failure in the state there), then "
        "the completed steps are compensated (get_compensation_step or steps) and the "
        "process ends FAILED"
    ),
    "_run_compensations": (
        "the kernel compensates the completed steps in reverse order: override "
        "get_compensation_step (or declare steps with compensation_step)"
    ),
    "_record_command": "the engine records every command in the audit trail itself",
    "_record_reply": "the engine records every reply in the audit trail itself",
}


def _refuse_ignored_overrides(cls: type) -> None:
    for name, instead in IGNORED_OVERRIDES.items():
        if name in cls.__dict__:
            raise ProcessDefinitionError(
                f"{cls.__qualname__} defines {name}, which BaseProcessManager never calls "
                f"(decisions are pure and made by the kernel): {instead}"
            )


def _check_typing_attributes(manager: BaseProcessManager[Any, Any]) -> None:
    """``state_class`` and ``step_class`` (class attributes, properties or inferred from the
    generic arguments) must be classes; a step class must be a ``StrEnum`` (or ``str``)."""
    name = type(manager).__qualname__
    state_class = getattr(manager, "state_class", None)
    if state_class is not None and not isinstance(state_class, type):
        raise ProcessDefinitionError(
            f"{name}.state_class must be a class with from_dict, got {state_class!r}"
        )
    step_class = getattr(manager, "step_class", None)
    is_step_class = isinstance(step_class, type) and issubclass(step_class, str)
    if step_class is not None and not is_step_class:
        raise ProcessDefinitionError(f"{name}.step_class must be a StrEnum, got {step_class!r}")


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
