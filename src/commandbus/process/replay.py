"""Replay: does the current manager code reproduce the history processes left behind?

A process is decided by the pure kernel from (hooks, state, message, time) only, so its
stored history — the start input, then the replies and timers it acted on, in order —
folded through ``decide`` with the *current* manager must give the stored row again: same
commands sent (type, data, step), same status, state, error and bookkeeping. When it does
not, deploying the current code would change what live processes do: a hook writes a
different field, a step was renamed, a command's data changed shape, a timeout changed.

``replay_process(manager, process, audit_trail)`` replays one process; ``check_replay``
replays every stored process of the given managers and returns the mismatches; the CLI
runs it as ``commandbus process replay --check --app module:managers``.

What the history is made of, from the audit trail (one entry per command sent, with the
reply the process acted on):

- the start: ``create_initial_state(initial_data)`` then ``decide_start`` at ``created_at``.
  The start input is taken from ``initial_data=`` (a mapping by process id) or from the
  process row's ``initial_data`` attribute when the repository stores it; without it a
  process cannot be replayed and is reported as such (field ``initial_data``);
- per entry, in send order: its timer if ``timed_out_at`` is set (a timer acts only while
  the reply is outstanding, so it always comes first), then its reply at ``received_at``
  (a troubleshooting notice is kept only until the final reply replaces it — it changes
  nothing the final reply does not overwrite);
- a cancel, inferred where it must have happened: when the replay sent nothing after an
  entry but the trail goes on with a compensation (at that entry's ``sent_at``), or when the
  process ended CANCELED without one (at ``completed_at``). The reason is the stored error.

Ignored messages (duplicates, stale and late replies) changed nothing and are not replayed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from commandbus.errors import CommandBusError
from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.process.base import BaseProcessManager, managers_by_type
from commandbus.process.kernel import (
    CancelRequested,
    Decision,
    IncomingMessage,
    ReplyReceived,
    TimerFired,
    decide,
    decide_start,
)
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.process.repository import ProcessRepository, state_to_dict

__all__ = [
    "InitialDataSource",
    "ReplayMismatch",
    "ReplayResult",
    "check_replay",
    "replay_process",
]

AnyManager = BaseProcessManager[Any, Any]
AnyProcess = ProcessMetadata[Any, Any]

#: Where replay finds a process's start input: a mapping by process id, or a function.
InitialDataSource = Mapping[UUID, JsonObject] | Callable[[AnyProcess], JsonObject | None]

#: Audit entry fields that the current code decides (compared entry by entry).
_ENTRY_FIELDS = ("step_name", "kind", "command_type", "command_data")
#: Process fields compared after the replay, in this order.
_PROCESS_FIELDS = (
    "status",
    "current_step",
    "state",
    "error_code",
    "error_message",
    "command_seq",
    "awaiting_command_id",
    "deadline_at",
    "completed_at",
    "compensation",
)

_CANCELED_AFTER = re.compile(r"\(after CANCELED: (?P<reason>.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class ReplayMismatch:
    """The first thing the current code does differently from a stored process.

    ``step`` is the step at which the replay diverged (the audit entry's step, or the
    process's current step for a difference in the final row); ``field`` the first
    differing field (``state.query_result_path``, ``audit[2].command_data.data_path``,
    ``status`` …); ``stored`` and ``replayed`` the two values.
    """

    domain: str
    process_id: UUID
    process_type: str
    step: str | None
    field: str
    stored: Any
    replayed: Any
    detail: str = ""

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step else ""
        text = (
            f"{self.process_type} process {self.process_id}{where}: {self.field} "
            f"stored {self.stored!r}, replayed {self.replayed!r}"
        )
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class ReplayResult:
    """The outcome of replaying one process; ``ok`` when nothing differs."""

    process: AnyProcess
    mismatches: list[ReplayMismatch] = field(default_factory=list)
    replayed: AnyProcess | None = None
    replayed_audit: list[ProcessAuditEntry] = field(default_factory=list)
    #: The messages fed to the kernel, in order: ``(description, time)``.
    history: list[tuple[str, datetime]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def first(self) -> ReplayMismatch | None:
        return self.mismatches[0] if self.mismatches else None


class _Diverged(Exception):
    def __init__(self, mismatch: ReplayMismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class _Replayer:
    def __init__(
        self,
        manager: AnyManager,
        process: AnyProcess,
        audit: Sequence[ProcessAuditEntry],
        result: ReplayResult,
    ) -> None:
        self.manager = manager
        self.stored = process
        self.audit = list(audit)
        self.result = result
        self.snapshot: ProcessSnapshot[Any, Any] | None = None

    def mismatch(
        self, step: str | None, name: str, stored: Any, replayed: Any, detail: str = ""
    ) -> ReplayMismatch:
        p = self.stored
        return ReplayMismatch(
            p.domain, p.process_id, p.process_type, step, name, stored, replayed, detail
        )

    # -- folding -------------------------------------------------------------------------

    async def start(self, initial_data: JsonObject) -> None:
        manager, stored = self.manager, self.stored
        try:
            state = manager.create_initial_state(dict(initial_data))
        except Exception as exc:
            raise _Diverged(
                self.mismatch(None, "initial_data", "accepted", _error(exc), "start refused")
            ) from exc
        now = stored.created_at
        process: AnyProcess = ProcessMetadata(
            domain=stored.domain,
            process_id=stored.process_id,
            process_type=stored.process_type,
            status=ProcessStatus.PENDING,
            state=state,
            created_at=now,
            updated_at=now,
            version=1,
        )
        self.result.history.append(("start", now))
        try:
            decision = await decide_start(manager, process, now)
        except Exception as exc:
            raise _Diverged(
                self.mismatch(None, "start", "decided", _error(exc), "a hook raised")
            ) from exc
        self.apply(decision, ProcessSnapshot(process, []))

    async def feed(self, message: IncomingMessage, now: datetime, label: str) -> None:
        """Decide ``message`` and apply the decision (it must not be ignored)."""
        assert self.snapshot is not None
        self.result.history.append((label, now))
        try:
            decision = await decide(self.manager, self.snapshot, message, now)
        except Exception as exc:
            step = self._step_of(message)
            raise _Diverged(
                self.mismatch(step, label, "handled", _error(exc), "a hook raised")
            ) from exc
        if decision.ignored is not None:
            # Everything the audit recorded was acted on when it happened.
            raise _Diverged(
                self.mismatch(
                    self._step_of(message),
                    label,
                    "applied",
                    f"ignored: {decision.ignored}",
                    "the current code ignores a message the process acted on",
                )
            )
        self.apply(decision, self.snapshot)

    def apply(self, decision: Decision[Any, Any], before: ProcessSnapshot[Any, Any]) -> None:
        assert decision.process is not None
        updated = {e.command_id: e for e in decision.audit_updates}
        audit = [updated.get(e.command_id, e) for e in before.audit]
        audit.extend(decision.audit_inserts)
        self.snapshot = ProcessSnapshot(decision.process, audit)
        # Every new entry must be the stored entry at the same position.
        for index in range(len(before.audit), len(audit)):
            self.compare_entry(index, audit[index])

    def compare_entry(self, index: int, replayed: ProcessAuditEntry) -> None:
        step = replayed.step_name
        if index >= len(self.audit):
            raise _Diverged(
                self.mismatch(
                    step,
                    f"audit[{index + 1}]",
                    None,
                    f"{replayed.command_type} {replayed.command_data}",
                    "the current code sends a command the process never sent",
                )
            )
        stored = self.audit[index]
        for name in _ENTRY_FIELDS:
            a, b = getattr(stored, name), getattr(replayed, name)
            if name == "kind":
                a, b = str(a), str(b)
            if a != b:
                path, sa, sb = _first_difference(f"audit[{index + 1}].{name}", a, b)
                raise _Diverged(self.mismatch(stored.step_name, path, sa, sb))
        if stored.command_id != replayed.command_id:
            raise _Diverged(
                self.mismatch(
                    stored.step_name,
                    f"audit[{index + 1}].command_id",
                    stored.command_id,
                    replayed.command_id,
                )
            )

    def _step_of(self, message: IncomingMessage) -> str | None:
        command_id: UUID | None = None
        if isinstance(message, ReplyReceived):
            command_id = message.reply.command_id
        elif isinstance(message, TimerFired):
            command_id = message.command_id
        for entry in self.audit:
            if entry.command_id == command_id:
                return entry.step_name
        return str(self.snapshot.process.current_step) if self.snapshot else None

    async def run(self, initial_data: JsonObject) -> None:
        await self.start(initial_data)
        stored = self.stored
        index = 0
        while index < len(self.audit):
            assert self.snapshot is not None
            replayed_count = len(self.snapshot.audit)
            if index >= replayed_count:
                # The replay sent nothing more, yet the process did: only a cancel (the
                # one message the audit does not record) starts a compensation like this.
                entry = self.audit[index]
                process = self.snapshot.process
                if (
                    str(entry.kind) == "COMPENSATION"
                    and process.status is not ProcessStatus.COMPENSATING
                    and not process.status.is_terminal
                ):
                    await self.feed(CancelRequested(self.cancel_reason()), entry.sent_at, "cancel")
                if len(self.snapshot.audit) <= index:
                    raise _Diverged(
                        self.mismatch(
                            entry.step_name,
                            f"audit[{index + 1}]",
                            f"{entry.command_type} {entry.command_data}",
                            None,
                            "the current code does not send this command",
                        )
                    )
                continue
            entry = self.audit[index]
            if entry.timed_out_at is not None:
                deadline = self.snapshot.process.deadline_at
                if deadline is None or deadline > entry.timed_out_at:
                    raise _Diverged(
                        self.mismatch(
                            entry.step_name,
                            f"audit[{index + 1}].timed_out_at",
                            entry.timed_out_at,
                            deadline,
                            "the step timed out, but under the current code its timer "
                            + ("would not exist" if deadline is None else "fires later"),
                        )
                    )
                await self.feed(
                    TimerFired(entry.command_id), entry.timed_out_at, f"timer {entry.step_name}"
                )
            if entry.reply_outcome is not None and entry.received_at is not None:
                reply = Reply(
                    command_id=entry.command_id,
                    correlation_id=stored.process_id,
                    outcome=ReplyOutcome(entry.reply_outcome),
                    data=entry.reply_data,
                    error_code=entry.error_code,
                    error_message=entry.error_message,
                    domain=stored.domain,
                    command_type=entry.command_type,
                )
                label = f"reply {entry.reply_outcome} to {entry.step_name}"
                await self.feed(ReplyReceived(reply), entry.received_at, label)
            index += 1
        assert self.snapshot is not None
        if (
            not self.snapshot.process.status.is_terminal
            and stored.status is ProcessStatus.CANCELED
            and stored.completed_at is not None
        ):
            await self.feed(CancelRequested(self.cancel_reason()), stored.completed_at, "cancel")
        if len(self.snapshot.audit) > len(self.audit):
            extra = self.snapshot.audit[len(self.audit)]
            raise _Diverged(
                self.mismatch(
                    extra.step_name,
                    f"audit[{len(self.audit) + 1}]",
                    None,
                    f"{extra.command_type} {extra.command_data}",
                    "the current code sends a command the process never sent",
                )
            )

    def cancel_reason(self) -> str:
        message = self.stored.error_message or "canceled"
        if self.stored.error_code == "CANCELED":
            return message
        found = _CANCELED_AFTER.search(message)
        return found.group("reason") if found else message

    def compare_final(self) -> list[ReplayMismatch]:
        assert self.snapshot is not None
        replayed = self.snapshot.process
        stored = self.stored
        step = str(stored.current_step) if stored.current_step is not None else None
        found: list[ReplayMismatch] = []
        for name in _PROCESS_FIELDS:
            a = _comparable(name, getattr(stored, name))
            b = _comparable(name, getattr(replayed, name))
            if a != b:
                path, sa, sb = _first_difference(name, a, b)
                found.append(self.mismatch(step, path, sa, sb))
        return found


def _comparable(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "state":
        return state_to_dict(value)
    if name == "compensation":
        return value.to_dict()
    if name in ("status", "current_step"):
        return str(value.value if hasattr(value, "value") else value)
    return value


def _first_difference(path: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """The path of the first differing leaf of two JSON-like values (stored ``a``,
    replayed ``b``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        # In the order the current code writes them (jsonb reorders stored keys).
        for key in list(b) + [k for k in a if k not in b]:
            if key not in b:
                return f"{path}.{key}", a[key], "<missing>"
            if key not in a:
                return f"{path}.{key}", "<missing>", b[key]
            if a[key] != b[key]:
                return _first_difference(f"{path}.{key}", a[key], b[key])
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(f"{path}[{i}]", x, y)
    return path, a, b


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _initial_data_of(process: AnyProcess, source: InitialDataSource | None) -> JsonObject | None:
    if source is not None:
        found = source.get(process.process_id) if isinstance(source, Mapping) else source(process)
        if found is not None:
            return dict(found)
    stored = getattr(process, "initial_data", None)
    return dict(stored) if isinstance(stored, dict) else None


async def replay_process(
    manager: AnyManager,
    process: AnyProcess,
    audit_trail: Sequence[ProcessAuditEntry],
    *,
    initial_data: JsonObject | None = None,
) -> ReplayResult:
    """Fold the history of ``process`` (its start input and the replies, timers and
    cancel recorded in ``audit_trail``) through ``manager``'s current code with the pure
    kernel, and compare the outcome with the stored row and trail.

    ``process`` is the row as a repository returns it (state as a dict) or as a manager
    returns it (typed). ``initial_data`` is the start input; when None it is read from the
    row (``process.initial_data``) if the repository stores it."""
    result = ReplayResult(process=process)
    raw = process.copy(state=state_to_dict(process.state))
    replayer = _Replayer(manager, raw, audit_trail, result)
    if process.process_type != manager.process_type:
        result.mismatches.append(
            replayer.mismatch(None, "process_type", process.process_type, manager.process_type)
        )
        return result
    if raw.error_code == "STATE_LOAD_FAILED":
        # Failed by the engine, not by a decision: nothing the kernel can reproduce.
        result.mismatches.append(
            replayer.mismatch(
                None,
                "state",
                "STATE_LOAD_FAILED",
                None,
                "the stored state could not be loaded when the process ran",
            )
        )
        return result
    if not raw.status.is_terminal:
        # A live process: the current code must also be able to load its stored state.
        try:
            manager.typed(raw)
        except CommandBusError as exc:
            result.mismatches.append(
                replayer.mismatch(
                    str(raw.current_step), "state", "loadable", _error(exc), "state_class"
                )
            )
            return result
    data = initial_data if initial_data is not None else _initial_data_of(raw, None)
    if data is None:
        result.mismatches.append(
            replayer.mismatch(
                None,
                "initial_data",
                None,
                None,
                "not replayable: the start input of the process is not stored",
            )
        )
        return result
    try:
        await replayer.run(data)
    except _Diverged as diverged:
        result.mismatches.append(diverged.mismatch)
    else:
        result.mismatches.extend(replayer.compare_final())
    if replayer.snapshot is not None:
        result.replayed = replayer.snapshot.process
        result.replayed_audit = list(replayer.snapshot.audit)
    return result


def _repository_of(source: Any) -> ProcessRepository:
    if hasattr(source, "get_audit_trail") and hasattr(source, "find_by_status"):
        repo: ProcessRepository = source
        return repo
    processes = getattr(source, "processes", None)
    if processes is None:
        from commandbus.backends import backend_from

        processes = getattr(backend_from(source), "processes", None)
    if processes is None:
        raise TypeError(
            f"cannot find a process repository in {type(source).__name__}: pass a backend "
            "with .processes (PostgresBackend, InMemoryBackend) or a ProcessRepository"
        )
    found: ProcessRepository = processes
    return found


async def check_replay(
    backend_or_repo: Any,
    managers: Mapping[str, AnyManager] | Sequence[AnyManager],
    process_type: str | None = None,
    *,
    statuses: Sequence[ProcessStatus] | None = None,
    initial_data: InitialDataSource | None = None,
    limit: int | None = None,
) -> list[ReplayMismatch]:
    """Replay every stored process of ``managers`` (only ``process_type`` when given; only
    processes in ``statuses`` when given) and return the first mismatch of each process
    that the current code does not reproduce. An empty list means every process replays.
    """
    results = await replay_all(
        backend_or_repo,
        managers,
        process_type,
        statuses=statuses,
        initial_data=initial_data,
        limit=limit,
    )
    return [r.mismatches[0] for r in results if r.mismatches]


async def replay_all(
    backend_or_repo: Any,
    managers: Mapping[str, AnyManager] | Sequence[AnyManager],
    process_type: str | None = None,
    *,
    statuses: Sequence[ProcessStatus] | None = None,
    initial_data: InitialDataSource | None = None,
    limit: int | None = None,
) -> list[ReplayResult]:
    """Like ``check_replay``, with the full ``ReplayResult`` of every process."""
    repo = _repository_of(backend_or_repo)
    by_type = managers_by_type(managers)
    if process_type is not None:
        if process_type not in by_type:
            raise ValueError(
                f"no manager for process type {process_type!r}; known: {sorted(by_type)}"
            )
        by_type = {process_type: by_type[process_type]}
    wanted = list(statuses) if statuses is not None else list(ProcessStatus)
    results: list[ReplayResult] = []
    for domain in sorted({m.domain for m in by_type.values()}):
        found = await repo.find_by_status(domain, wanted, limit=limit)
        for process in found:
            manager = by_type.get(process.process_type)
            if manager is None or manager.domain != domain:
                continue
            audit = await repo.get_audit_trail(domain, process.process_id)
            data = _initial_data_of(process, initial_data)
            results.append(await replay_process(manager, process, audit, initial_data=data))
    return results
