"""The configuration and the report of a ``ProcessSimulation`` (see ``simulation``)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from commandbus.models import (
    Command,
    JsonObject,
)
from commandbus.policies import RetryPolicy
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    ProcessMetadata,
)
from commandbus.process.router import RouterStats
from commandbus.testing.invariants import InvariantViolation
from commandbus.worker import WorkerStats

AnyManager = BaseProcessManager[Any, Any]
AnyProcess = ProcessMetadata[Any, Any]

#: A simulated service: the result of a command that succeeds (None: no result).
ResultFn = Callable[[Command], JsonObject | None]
#: Builds the start input of the ``index``-th process from the simulation's generator.
InitialDataFn = Callable[[int, random.Random], JsonObject]


@dataclass(frozen=True)
class FailureRates:
    """Probability of each failure per delivery of a command (the rest succeed)."""

    transient: float = 0.0
    permanent: float = 0.0
    business: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.transient, self.permanent, self.business)
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError(f"failure rates must be >= 0 and add up to <= 1, got {self}")


@dataclass(frozen=True)
class OperatorPolicy:
    """How simulated operators resolve troubleshooting items: the relative weights of
    retry, cancel and complete, and how long they take to react (uniform, seconds)."""

    retry: float = 0.5
    cancel: float = 0.3
    complete: float = 0.2
    reaction: tuple[float, float] = (60.0, 600.0)

    def __post_init__(self) -> None:
        if min(self.retry, self.cancel, self.complete) < 0:
            raise ValueError("operator weights must be >= 0")
        if not 0 <= self.reaction[0] <= self.reaction[1]:
            raise ValueError("operator reaction must be a (low, high) range of seconds >= 0")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Rates are per delivery; ``failures_by_type`` overrides
    ``failures`` for some command types; ``operator=None`` leaves the TSQ alone."""

    processes: int = 100
    seed: int = 0
    latency: tuple[float, float] = (0.0, 2.0)
    failures: FailureRates = FailureRates()
    failures_by_type: Mapping[str, FailureRates] = field(default_factory=dict)
    duplicate_rate: float = 0.0
    operator: OperatorPolicy | None = OperatorPolicy()
    #: Share of processes their user cancels, at a time drawn from ``cancel_after``
    #: (seconds after the start); a cancel that comes after the end changes nothing.
    cancel_rate: float = 0.0
    cancel_after: tuple[float, float] = (0.0, 10.0)
    retry_policy: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=3, backoff_schedule=(1.0, 10.0))
    )
    batch_size: int = 100
    start_batch: int = 1000
    tick: float = 1.0
    #: While running, the collector's first threshold (None: leave the GC alone). The
    #: in-memory stores keep millions of live objects; Python's default (700) makes the
    #: collector rescan them constantly, which costs about a third of a large run.
    gc_threshold: int | None = 100_000
    max_virtual_seconds: float = 30 * 24 * 3600.0
    check_replay: bool = True
    #: Start each ``start_batch`` chunk of processes as one batch (``ProcessBatch``).
    process_batches: bool = False
    #: Standalone commands (type ``SimulatedWork``, in the manager's domain, under the
    #: same failure rates and operators) sent with ``create_batch``, ``command_batch`` a
    #: batch. Each batch's counters and notice are checked at the end (batch_counters).
    batched_commands: int = 0
    command_batch: int = 50

    def __post_init__(self) -> None:
        if self.processes < 0:
            raise ValueError("processes must be >= 0")
        if not 0 <= self.latency[0] <= self.latency[1]:
            raise ValueError("latency must be a (low, high) range of seconds >= 0")
        if not 0 <= self.duplicate_rate <= 1 or not 0 <= self.cancel_rate <= 1:
            raise ValueError("duplicate_rate and cancel_rate must be within 0..1")
        if not 0 <= self.cancel_after[0] <= self.cancel_after[1]:
            raise ValueError("cancel_after must be a (low, high) range of seconds >= 0")
        if self.batch_size < 1 or self.start_batch < 1 or self.command_batch < 1:
            raise ValueError("batch_size, start_batch and command_batch must be >= 1")
        if self.batched_commands < 0:
            raise ValueError("batched_commands must be >= 0")
        if self.tick < 0:
            raise ValueError("tick must be >= 0 seconds (0: advance to each event exactly)")

    def rates_for(self, command_type: str) -> FailureRates:
        return self.failures_by_type.get(command_type, self.failures)


@dataclass
class SimulationReport:
    """What happened. ``history`` is the recorded event log (JSON lines: every delivery
    with its simulated outcome, duplicate, operator action, then every process's final
    row and audit trail); two runs with the same config give equal bytes."""

    config: SimulationConfig
    by_status: dict[str, int]
    violations: list[InvariantViolation]
    deliveries: Counter[str]
    duplicates: int
    operator_actions: Counter[str]
    cancels: Counter[str]
    router: RouterStats
    worker: WorkerStats
    virtual_seconds: float
    wall_seconds: float
    steps: int
    history: bytes
    #: Batches (of processes and of commands) by final status.
    batches: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def processes(self) -> int:
        return sum(self.by_status.values())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.history).hexdigest()

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        lines = [
            f"{self.processes} processes (seed {self.config.seed}): {statuses}",
            f"deliveries: {dict(sorted(self.deliveries.items()))}; duplicate replies: "
            f"{self.duplicates}; operator actions: {dict(sorted(self.operator_actions.items()))}"
            f"; user cancels: {dict(sorted(self.cancels.items()))}",
            f"router: applied {self.router.applied}, ignored {self.router.ignored}, "
            f"parked {self.router.parked}; virtual time {self.virtual_seconds:.0f} s, "
            f"wall time {self.wall_seconds:.2f} s, {self.steps} steps",
            f"history sha256 {self.digest}",
        ]
        if self.batches:
            lines.insert(3, f"batches: {dict(sorted(self.batches.items()))}")
        if self.violations:
            lines.append(f"{len(self.violations)} invariant violation(s):")
            lines.extend(f"  {v}" for v in self.violations[:20])
        else:
            lines.append("all invariants hold")
        return "\n".join(lines)

    def raise_for_violations(self) -> None:
        if self.violations:
            raise AssertionError(self.summary())
