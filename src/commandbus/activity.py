"""What commands and processes did over a recent window, for dashboards (the console's
charts): plain values, computed by the backends (``CommandStore.activity``,
``ProcessRepository.activity``) with bounded, indexed reads.

- ``CommandActivity``: per domain and minute, the commands sent in the window that
  completed, and that failed (FAILED or moved to the troubleshooting queue) — counted in
  the minute their row last changed — and the send-to-completion latency of the completed
  ones (``created_at`` to ``updated_at``).
- ``ProcessActivity``: per process type, how long the processes that finished in the
  window took (``created_at`` to ``completed_at``), and per step, how long its commands
  took to be answered (sent, or scheduled for, to the reply). Processes are found through
  the audit entries (the commands they sent) of the window: one that finished in it
  without sending a command in it (a step longer than the window) is not counted.

Both read a bounded number of rows — the newest ``limit`` sent in the window, whatever
their domain — so a dashboard costs the same on a busy system as on a quiet one; when the
window held more, ``truncated`` says so and ``covered_from`` where the figures start.
Measured on PostgreSQL 15 (two shared cores): the newest 50,000 commands in 93 ms, 50,000 audit
entries with their processes in 250 ms; the default reads 20,000. Durations are in
seconds; percentiles are PostgreSQL's ``percentile_cont`` (linear interpolation),
computed the same way by the in-memory backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commandbus.errors import ValidationError
from commandbus.validation import validate_count

__all__ = [
    "DEFAULT_ACTIVITY_LIMIT",
    "MAX_ACTIVITY_LIMIT",
    "MAX_ACTIVITY_MINUTES",
    "AuditSample",
    "CommandActivity",
    "Durations",
    "MinuteActivity",
    "ProcessActivity",
    "check_window",
    "percentile",
]

#: How many rows an activity query reads by default, and at most.
DEFAULT_ACTIVITY_LIMIT = 20_000
MAX_ACTIVITY_LIMIT = 1_000_000
#: The longest window, in minutes (a day).
MAX_ACTIVITY_MINUTES = 1440


def check_window(since: object, limit: int, minutes: int = 1) -> datetime:
    """``since`` (an aware datetime), with ``minutes`` and ``limit`` in range."""
    if not isinstance(since, datetime) or since.utcoffset() is None:
        raise ValidationError(f"since must be a timezone-aware datetime, got {since!r}")
    validate_count(minutes, "minutes", MAX_ACTIVITY_MINUTES)
    validate_count(limit, "limit", MAX_ACTIVITY_LIMIT)
    return since


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont(fraction)`` of ``ordered`` (sorted, not empty)."""
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Durations:
    """How many, and how long: the median, the 95th percentile and the longest."""

    count: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Durations | None:
        ordered = sorted(values)
        if not ordered:
            return None
        return cls(len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.95), ordered[-1])


@dataclass(frozen=True)
class MinuteActivity:
    """One minute of one domain: commands completed and failed in it, and the
    send-to-completion latency of the completed ones."""

    start: datetime
    completed: int = 0
    failed: int = 0
    latency: Durations | None = None


@dataclass(frozen=True)
class CommandActivity:
    since: datetime
    minutes: int
    #: Per domain, the minutes that had any completion or failure (``series`` fills in
    #: the others).
    by_domain: dict[str, dict[int, MinuteActivity]] = field(default_factory=dict)
    #: How many commands sent in the window were read.
    scanned: int = 0
    #: More commands were sent in the window than were read: the oldest were left out.
    truncated: bool = False
    #: Where the figures start: ``since``, or the oldest command read when truncated.
    covered_from: datetime | None = None

    def series(self, domain: str) -> list[MinuteActivity]:
        """One entry per minute of the window, oldest first, zeros included."""
        found = self.by_domain.get(domain, {})
        return [
            found.get(i) or MinuteActivity(self.since + timedelta(minutes=i))
            for i in range(self.minutes)
        ]

    @classmethod
    def build(
        cls,
        since: datetime,
        minutes: int,
        limit: int,
        rows: Sequence[tuple[str, str, datetime, datetime]],
    ) -> CommandActivity:
        """From ``(domain, status, created_at, updated_at)`` of the newest ``limit + 1``
        commands created at or after ``since`` (newest first): what the in-memory backend
        computes, as the PostgreSQL query does."""
        kept = rows[:limit]
        minute_rows: dict[tuple[str, int], list[tuple[str, float]]] = {}
        for domain, status, created_at, updated_at in kept:
            if status not in _SETTLED:
                continue
            index = (updated_at - since) // _MINUTE
            if 0 <= index < minutes:
                latency = (updated_at - created_at).total_seconds()
                minute_rows.setdefault((domain, index), []).append((status, latency))
        by_domain: dict[str, dict[int, MinuteActivity]] = {}
        for (domain, index), found in sorted(minute_rows.items()):
            done = [latency for status, latency in found if status == "COMPLETED"]
            by_domain.setdefault(domain, {})[index] = MinuteActivity(
                since + timedelta(minutes=index),
                len(done),
                len(found) - len(done),
                Durations.of(done),
            )
        truncated = len(rows) > limit
        covered = kept[-1][2] if truncated and kept else since
        return cls(since, minutes, by_domain, len(kept), truncated, covered)


_MINUTE = timedelta(minutes=1)
#: The statuses a chart counts: completed, and the two failures.
_SETTLED = frozenset({"COMPLETED", "FAILED", "IN_TROUBLESHOOTING_QUEUE"})


@dataclass(frozen=True)
class ProcessActivity:
    since: datetime
    #: Per (domain, process type): the processes that finished at or after ``since``.
    processes: dict[tuple[str, str], Durations] = field(default_factory=dict)
    #: Per (domain, process type, step name): its commands answered in the window.
    steps: dict[tuple[str, str, str], Durations] = field(default_factory=dict)
    #: How many audit entries (commands sent by processes) of the window were read.
    scanned: int = 0
    truncated: bool = False
    covered_from: datetime | None = None

    def processes_of(self, domain: str) -> dict[str, Durations]:
        return {t: d for (dom, t), d in sorted(self.processes.items()) if dom == domain}

    def steps_of(self, domain: str) -> dict[tuple[str, str], Durations]:
        return {(t, s): d for (dom, t, s), d in sorted(self.steps.items()) if dom == domain}

    @classmethod
    def build(cls, since: datetime, limit: int, entries: Sequence[AuditSample]) -> ProcessActivity:
        """From the newest ``limit + 1`` audit entries of every domain (newest written
        first): what the in-memory backend computes, as the PostgreSQL query does."""
        kept = [e for e in entries[:limit] if e.sent_at >= since]
        steps: dict[tuple[str, str, str], list[float]] = {}
        finished: dict[tuple[str, object], tuple[str, float]] = {}
        for e in kept:
            if e.received_at is not None:
                started = e.scheduled_for or e.sent_at
                key = (e.domain, e.process_type, e.step_name)
                steps.setdefault(key, []).append((e.received_at - started).total_seconds())
            if e.completed_at is not None and e.completed_at >= since:
                took = (e.completed_at - e.created_at).total_seconds()
                finished[(e.domain, e.process_id)] = (e.process_type, took)
        processes: dict[tuple[str, str], list[float]] = {}
        for (domain, _), (process_type, took) in finished.items():
            processes.setdefault((domain, process_type), []).append(took)
        truncated = len(entries) > limit and entries[limit].sent_at >= since
        covered = min(e.sent_at for e in kept) if truncated and kept else since
        return cls(
            since,
            {k: d for k, v in sorted(processes.items()) if (d := Durations.of(v))},
            {k: d for k, v in sorted(steps.items()) if (d := Durations.of(v))},
            len(kept),
            truncated,
            covered,
        )


@dataclass(frozen=True)
class AuditSample:
    """One audit entry with its process's type and times (what ``ProcessActivity.build``
    reads)."""

    domain: str
    process_id: object
    process_type: str
    step_name: str
    sent_at: datetime
    scheduled_for: datetime | None
    received_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
