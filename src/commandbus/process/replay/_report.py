"""What a replay reports (``ReplayMismatch``, ``ReplayResult``) and how it tells a stored
value from a replayed one: which fields are compared, how each is made comparable, and
the path of the first leaf where two values differ.

Part of ``commandbus.process.replay``, which re-exports the public names; import them
from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from commandbus.process.models import ProcessAuditEntry, ProcessMetadata
from commandbus.process.repository import state_to_dict

__all__ = [
    "ENTRY_FIELDS",
    "PROCESS_FIELDS",
    "AnyProcess",
    "ReplayMismatch",
    "ReplayResult",
    "comparable",
    "first_difference",
]

AnyProcess = ProcessMetadata[Any, Any]

#: Audit entry fields that the current code decides (compared entry by entry).
ENTRY_FIELDS = ("step_name", "kind", "command_type", "command_data", "scheduled_for")
#: Process fields compared after the replay, in this order.
PROCESS_FIELDS = (
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
    #: Compatible differences (not mismatches): the stored state reads the same under
    #: the current code, e.g. "state upgraded from version 1 to 2".
    compatible: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def first(self) -> ReplayMismatch | None:
        return self.mismatches[0] if self.mismatches else None


def comparable(name: str, value: Any) -> Any:
    """The process field ``name`` in a form equal for the stored and the replayed row (a
    typed state and its stored dict, an enum and its stored string)."""
    if value is None:
        return None
    if name == "state":
        return state_to_dict(value)
    if name == "compensation":
        return value.to_dict()
    if name in ("status", "current_step"):
        return str(value.value if hasattr(value, "value") else value)
    return value


def first_difference(path: str, a: Any, b: Any) -> tuple[str, Any, Any]:
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
                return first_difference(f"{path}.{key}", a[key], b[key])
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(f"{path}[{i}]", x, y)
    return path, a, b
