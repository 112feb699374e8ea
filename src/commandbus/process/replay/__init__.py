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

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from commandbus.errors import CommandBusError
from commandbus.models import JsonObject
from commandbus.process.base import managers_by_type
from commandbus.process.models import ProcessAuditEntry, ProcessStatus

# The fold and the report live in the package's private modules; this module is the
# public entry point and re-exports their public names.
from commandbus.process.replay._fold import AnyManager, Diverged, Replayer, error_text
from commandbus.process.replay._report import AnyProcess, ReplayMismatch, ReplayResult
from commandbus.process.repository import ProcessRepository, state_to_dict

__all__ = [
    "InitialDataSource",
    "ReplayMismatch",
    "ReplayResult",
    "check_replay",
    "replay_process",
]

#: Where replay finds a process's start input: a mapping by process id, or a function.
InitialDataSource = Mapping[UUID, JsonObject] | Callable[[AnyProcess], JsonObject | None]


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
    replayer = Replayer(manager, raw, audit_trail, result)
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
                    str(raw.current_step), "state", "loadable", error_text(exc), "state_class"
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
    except Diverged as diverged:
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
    progress: Callable[[int, int], None] | None = None,
) -> list[ReplayResult]:
    """Like ``check_replay``, with the full ``ReplayResult`` of every process.
    ``progress(done, total)`` is called after each process (the CLI's progress bar)."""
    repo = _repository_of(backend_or_repo)
    by_type = managers_by_type(managers)
    if process_type is not None:
        if process_type not in by_type:
            raise ValueError(
                f"no manager for process type {process_type!r}; known: {sorted(by_type)}"
            )
        by_type = {process_type: by_type[process_type]}
    wanted = list(statuses) if statuses is not None else list(ProcessStatus)
    todo: list[tuple[AnyManager, AnyProcess]] = []
    for domain in sorted({m.domain for m in by_type.values()}):
        for process in await repo.find_by_status(domain, wanted, limit=limit):
            manager = by_type.get(process.process_type)
            if manager is not None and manager.domain == domain:
                todo.append((manager, process))
    results: list[ReplayResult] = []
    for manager, process in todo:
        audit = await repo.get_audit_trail(process.domain, process.process_id)
        data = _initial_data_of(process, initial_data)
        results.append(await replay_process(manager, process, audit, initial_data=data))
        if progress is not None:
            progress(len(results), len(todo))
    return results
