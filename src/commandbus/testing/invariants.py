"""The invariants every simulated (or stored) process must satisfy, checked after a run.

``check_invariants`` is what ``ProcessSimulation`` runs at the end; it also works on any
stored processes (e.g. after a fault-injection run): every process terminal, no step
advanced twice, compensations in reverse order, the audit trail consistent with the
state, the command store consistent with the audit, and — with the start inputs — a replay
of every process that reproduces it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from commandbus.models import (
    CommandStatus,
    JsonObject,
    ReplyOutcome,
)
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMetadata,
    ProcessStatus,
    completed_steps,
)
from commandbus.process.replay import replay_process

AnyManager = BaseProcessManager[Any, Any]
AnyProcess = ProcessMetadata[Any, Any]


@dataclass(frozen=True)
class InvariantViolation:
    process_id: UUID | None
    invariant: str
    detail: str

    def __str__(self) -> str:
        who = f"process {self.process_id}" if self.process_id else "simulation"
        return f"{self.invariant}: {who}: {self.detail}"


_REPLY_TO_COMMAND_STATUS = {
    ReplyOutcome.SUCCESS: CommandStatus.COMPLETED,
    ReplyOutcome.FAILED: CommandStatus.FAILED,
    ReplyOutcome.CANCELED: CommandStatus.CANCELED,
}


async def check_invariants(
    manager: AnyManager,
    processes: Sequence[AnyProcess],
    audits: Mapping[UUID, Sequence[ProcessAuditEntry]],
    *,
    initial_data: Mapping[UUID, JsonObject] | None = None,
    backend: Any = None,
    domains: Sequence[str] | None = None,
) -> list[InvariantViolation]:
    """The simulation's invariants (see the module doc) for stored ``processes``.

    The replay part runs when ``initial_data`` is given; the command-store cross-check
    when ``backend`` is given (commands are looked up in ``domains``, by default the
    manager's)."""
    violations: list[InvariantViolation] = []
    lookup_domains = list(domains) if domains is not None else [manager.domain]
    commands: dict[UUID, Any] = {}
    if backend is not None:
        async with backend.transaction() as tx:
            for process in processes:
                for entry in audits.get(process.process_id, ()):
                    commands[entry.command_id] = await _command_of(
                        backend, lookup_domains, entry.command_id, tx
                    )
    for process in processes:
        pid = process.process_id
        audit = list(audits.get(pid, ()))

        def bad(invariant: str, detail: str, pid: UUID = pid) -> None:
            violations.append(InvariantViolation(pid, invariant, detail))

        status = process.status
        if not status.is_terminal:
            bad("terminal", f"ended the simulation {status.value} at {process.current_step}")

        # single_advance
        ids = Counter(e.command_id for e in audit)
        twice = [str(c) for c, n in ids.items() if n > 1]
        if twice:
            bad("single_advance", f"commands recorded twice: {twice}")
        completed = Counter(completed_steps(audit))
        for step, count in completed.items():
            if count > 1:
                bad("single_advance", f"step {step} completed {count} times")
        for before, after in itertools.pairwise(audit):
            if (
                before.kind is AuditEntryKind.STEP
                and after.kind is AuditEntryKind.STEP
                and not before.is_answered
                and before.timed_out_at is None
            ):
                bad(
                    "single_advance",
                    f"step {after.step_name} was sent while {before.step_name} "
                    "still awaited its reply (and had not timed out)",
                )

        # compensation_order
        first_comp = next(
            (i for i, e in enumerate(audit) if e.kind is AuditEntryKind.COMPENSATION), None
        )
        forward = audit if first_comp is None else audit[:first_comp]
        done = completed_steps(forward)
        compensations = audit[len(forward) :]
        if any(e.kind is AuditEntryKind.STEP for e in compensations):
            bad("compensation_order", "a forward step was sent after compensation started")
        try:
            expected = [
                str(c)
                for c in (
                    manager.get_compensation_step(manager.parse_step(s)) for s in reversed(done)
                )
                if c is not None
            ]
        except Exception as exc:  # a hook that cannot even name the compensation
            bad("compensation_order", f"get_compensation_step raised {exc!r}")
            expected = []
        actual = [e.step_name for e in compensations]
        must_compensate = status in (ProcessStatus.COMPENSATED, ProcessStatus.CANCELED) or (
            status is ProcessStatus.FAILED
            and process.error_code not in ("STEP_TIMEOUT", "STATE_LOAD_FAILED")
        )
        if status is ProcessStatus.COMPLETED:
            if actual:
                bad("compensation_order", f"a COMPLETED process compensated {actual}")
        elif (actual or must_compensate) and actual != expected:
            bad(
                "compensation_order",
                f"compensations {actual}, expected {expected} "
                f"(reverse of the completed steps {done})",
            )
        comp_ok = all(e.reply_outcome is ReplyOutcome.SUCCESS for e in compensations)
        if status in (ProcessStatus.COMPENSATED, ProcessStatus.CANCELED) and not comp_ok:
            bad("compensation_order", f"{status.value} although a compensation did not succeed")
        if (
            status is ProcessStatus.FAILED
            and process.error_code == "COMPENSATION_FAILED"
            and comp_ok
        ):
            bad("compensation_order", "COMPENSATION_FAILED although every compensation succeeded")

        # audit_matches_state
        if initial_data is not None and pid in initial_data:
            result = await replay_process(manager, process, audit, initial_data=initial_data[pid])
            if not result.ok:
                bad("audit_matches_state", str(result.mismatches[0]))
        if backend is not None:
            for entry in audit:
                meta = commands.get(entry.command_id)
                if meta is None:
                    bad(
                        "audit_matches_state",
                        f"command {entry.command_id} ({entry.step_name}) is not in the command "
                        f"store of {lookup_domains}",
                    )
                    continue
                wanted = _REPLY_TO_COMMAND_STATUS.get(entry.reply_outcome or ReplyOutcome.SUCCESS)
                if entry.is_answered and meta.status is not wanted:
                    bad(
                        "audit_matches_state",
                        f"command {entry.command_id} ({entry.step_name}) is {meta.status.value} "
                        f"but the process recorded {entry.reply_outcome}",
                    )
    return violations


async def _command_of(backend: Any, domains: Sequence[str], command_id: UUID, tx: Any) -> Any:
    for domain in domains:
        meta = await backend.commands.get(domain, command_id, conn=tx)
        if meta is not None:
            return meta
    return None
