"""Deterministic simulation of many processes against simulated services.

``ProcessSimulation`` starts N processes of one manager on the in-memory backend with a
``VirtualClock`` and runs them to the end with the real ``Worker`` and
``ProcessReplyRouter`` (``process_once`` stepping). The services are simulated handlers
with configurable latency and failure rates — transient (the worker retries), permanent
(the troubleshooting queue) and business-rule (the process compensates) — and the network
can deliver a reply twice. Simulated operators resolve troubleshooting items (retry,
cancel or complete them by hand) through the real ``TroubleshootingQueue``, and simulated
users cancel some processes (``manager.cancel``).

Everything random is drawn from generators seeded by ``SimulationConfig.seed`` and time is
virtual, so the same seed gives the same history, byte for byte (``report.history``, its
``report.digest``). At the end the invariants are checked for every process:

- ``terminal``: every process ended (COMPLETED, COMPENSATED, FAILED or CANCELED);
- ``single_advance``: no forward step completed twice, no command appears twice, and a
  step is only sent again after its previous command timed out;
- ``compensation_order``: compensations ran for the completed steps, in reverse order, and
  only when the process did not complete; the final status agrees with their replies;
- ``audit_matches_state``: replaying the audit trail through the manager (pure kernel)
  gives the stored row (``commandbus.process.replay``), and every command in the trail
  exists in the command store with a status that agrees with the reply the process got;
- ``batch_counters`` (with ``process_batches`` or ``batched_commands``): every batch's
  counters equal a recount of its members, it finished exactly when all of them ended,
  with exactly one completion notice (``commandbus.testing.batch_invariants``).

Time model: workers and the router wake every ``tick`` seconds (1 s by default, like a
polling consumer; 0 advances to every event exactly) and handle what became due; a
command becomes visible to the worker ``latency`` seconds after it was sent
(queueing plus service time; a step timeout shorter than that fires first); retries wait
for the retry policy's backoff; a duplicate reply arrives ``latency`` after the original;
an operator acts ``operator.reaction`` seconds after a command reached the TSQ. The
simulation advances the clock from one due event to the next, so idle time costs nothing.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from commandbus.bus import CommandBus
from commandbus.errors import (
    BusinessRuleException,
    InvalidOperationError,
    PermanentCommandError,
    TransientCommandError,
)
from commandbus.handler import HandlerContext
from commandbus.memory import InMemoryBackend
from commandbus.models import (
    Command,
    CommandStatus,
    JsonObject,
)
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMetadata,
)
from commandbus.process.repository import state_to_dict
from commandbus.process.router import ProcessReplyRouter
from commandbus.testing._simulated import (
    _dumps,
    _Events,
    _ObservedCommands,
    _ObservedQueue,
    _Recorder,
    _SimulatedServices,
)
from commandbus.testing._simulated_batches import SimulatedBatches
from commandbus.testing.clock import VirtualClock
from commandbus.testing.invariants import InvariantViolation, check_invariants
from commandbus.testing.scenario import ManagerFactory, memory_backend
from commandbus.testing.simulation_config import (
    FailureRates,
    OperatorPolicy,
    SimulationConfig,
    SimulationReport,
)
from commandbus.worker import Worker, WorkerStats

__all__ = [
    "FailureRates",
    "InvariantViolation",
    "OperatorPolicy",
    "ProcessSimulation",
    "ResultFn",
    "SimulationConfig",
    "SimulationReport",
    "check_invariants",
]

AnyManager = BaseProcessManager[Any, Any]
AnyProcess = ProcessMetadata[Any, Any]

#: A simulated service: the result of a command that succeeds (None: no result).
ResultFn = Callable[[Command], JsonObject | None]
#: Builds the start input of the ``index``-th process from the simulation's generator.
InitialDataFn = Callable[[int, random.Random], JsonObject]


class ProcessSimulation:
    """Runs ``config.processes`` processes of ``manager`` to the end; see the module doc.

    ``initial_data(index, rng)`` builds each start input; ``results`` maps command types
    to simulated services (a command type without one succeeds with no result).
    """

    def __init__(
        self,
        manager: ManagerFactory[Any],
        initial_data: InitialDataFn,
        results: Mapping[str, ResultFn],
        config: SimulationConfig | None = None,
        *,
        domains: Sequence[str] | None = None,
    ) -> None:
        self.config = config or SimulationConfig()
        seed = self.config.seed
        self.clock = VirtualClock()
        self.backend: InMemoryBackend = memory_backend(self.clock)
        self.backend.commands = _ObservedCommands(self.backend.commands, self)
        self.backend.queue = _ObservedQueue(self.backend.queue, self)
        self.bus = CommandBus(self.backend, retry_policy=self.config.retry_policy)
        self.manager: AnyManager = manager(self.bus)
        self.router = ProcessReplyRouter(
            self.backend, managers=[self.manager], batch_size=self.config.batch_size
        )
        self.tsq = TroubleshootingQueue(self.backend)
        self.results = dict(results)
        self.registry = _SimulatedServices()
        worker_domains = list(domains) if domains is not None else [self.manager.domain]
        for domain in worker_domains:
            self._register(domain)
        self.workers = [
            Worker(
                self.backend,
                domain,
                self.registry,
                visibility_timeout=300,
                retry_policy=self.config.retry_policy,
                batch_size=self.config.batch_size,
            )
            for domain in worker_domains
        ]
        self._initial_data_fn = initial_data
        self.initial_data: dict[UUID, JsonObject] = {}
        self.process_ids: list[UUID] = []
        self._rng_ids = random.Random(f"{seed}:ids")
        self._rng_data = random.Random(f"{seed}:data")
        self._rng_latency = random.Random(f"{seed}:latency")
        self._rng_failures = random.Random(f"{seed}:failures")
        self._rng_duplicates = random.Random(f"{seed}:duplicates")
        self._rng_operator = random.Random(f"{seed}:operator")
        self._rng_cancel = random.Random(f"{seed}:cancel")
        self.batches = SimulatedBatches(
            self.bus, self.manager.domain, self.config, random.Random(f"{seed}:batches")
        )
        self._events = _Events()
        self._recorder = _Recorder(self.clock.now())
        self.deliveries: Counter[str] = Counter()
        self.duplicates = 0
        self.operator_actions: Counter[str] = Counter()
        self.cancels: Counter[str] = Counter()

    # -- the simulated world ---------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now()

    def _latency(self) -> float:
        low, high = self.config.latency
        return self._rng_latency.uniform(low, high) if high > low else low

    def _draw_duplicate(self) -> bool:
        rate = self.config.duplicate_rate
        return rate > 0 and self._rng_duplicates.random() < rate

    async def _duplicate(self, queue: str, message: JsonObject) -> None:
        delay = self._latency()
        self.duplicates += 1
        self._recorder.add(self._now(), "duplicate", message.get("command_id"), round(delay, 6))
        await self.backend.queue.enqueue(queue, [message], delay)

    def _register(self, domain: str) -> None:
        sim = self

        async def service(command: Command, context: HandlerContext) -> JsonObject | None:
            rates = sim.config.rates_for(command.command_type)
            roll = sim._rng_failures.random()
            outcome = "SUCCESS"
            if roll < rates.business:
                outcome = "BUSINESS"
            elif roll < rates.business + rates.permanent:
                outcome = "PERMANENT"
            elif roll < rates.business + rates.permanent + rates.transient:
                outcome = "TRANSIENT"
            sim.deliveries[outcome] += 1
            sim._recorder.add(
                sim._now(),
                "deliver",
                command.command_type,
                str(command.command_id),
                context.attempt,
                outcome,
            )
            if outcome == "BUSINESS":
                raise BusinessRuleException("SIMULATED_REFUSAL", f"{command.command_type} refused")
            if outcome == "PERMANENT":
                raise PermanentCommandError("SIMULATED_BREAKDOWN", f"{command.command_type} broke")
            if outcome == "TRANSIENT":
                raise TransientCommandError("SIMULATED_BUSY", f"{command.command_type} busy")
            return sim._result(command)

        self.registry.serve(domain, service)

    def _result(self, command: Command) -> JsonObject | None:
        fn = self.results.get(command.command_type)
        return fn(command) if fn is not None else None

    def _schedule_operator(self, domain: str, command_id: UUID) -> None:
        policy = self.config.operator
        if policy is None:
            return
        low, high = policy.reaction
        delay = self._rng_operator.uniform(low, high) if high > low else low

        async def act() -> None:
            await self._operate(domain, command_id)

        self._events.at(self._now() + timedelta(seconds=delay), act)

    async def _operate(self, domain: str, command_id: UUID) -> None:
        policy = self.config.operator
        assert policy is not None
        weights = [policy.retry, policy.cancel, policy.complete]
        if sum(weights) <= 0:
            return
        action = self._rng_operator.choices(["retry", "cancel", "complete"], weights)[0]
        meta = await self.backend.commands.get(domain, command_id)
        if meta is None or meta.status is not CommandStatus.IN_TROUBLESHOOTING_QUEUE:
            return
        self.operator_actions[action] += 1
        self._recorder.add(self._now(), "operator", action, str(command_id))
        if action == "retry":
            await self.tsq.operator_retry(domain, command_id, operator="simulated")
        elif action == "cancel":
            await self.tsq.operator_cancel(domain, command_id, "simulated cancel", "simulated")
        else:
            archived = await self.backend.commands.archived_message(domain, command_id) or {}
            data = archived.get("data")
            item = Command(
                domain=domain,
                command_type=meta.command_type,
                command_id=command_id,
                data=data if isinstance(data, dict) else {},
                correlation_id=meta.correlation_id,
                reply_to=meta.reply_to,
            )
            await self.tsq.operator_complete(
                domain, command_id, self._result(item), operator="simulated"
            )

    def _maybe_cancel_later(self, process_id: UUID) -> None:
        config = self.config
        if config.cancel_rate <= 0 or self._rng_cancel.random() >= config.cancel_rate:
            return
        low, high = config.cancel_after
        delay = self._rng_cancel.uniform(low, high) if high > low else low

        async def cancel() -> None:
            try:
                await self.manager.cancel(process_id, "simulated user cancel")
            except InvalidOperationError:  # it finished first
                self.cancels["too_late"] += 1
                self._recorder.add(self._now(), "cancel", str(process_id), "too late")
                return
            self.cancels["canceled"] += 1
            self._recorder.add(self._now(), "cancel", str(process_id), "canceled")

        self._events.at(self._now() + timedelta(seconds=delay), cancel)

    # -- running ---------------------------------------------------------------------------

    async def start_processes(self) -> None:
        """Start the configured number of processes (``start_many`` in batches)."""
        total = self.config.processes
        for first in range(0, total, self.config.start_batch):
            items: list[tuple[UUID | str | None, dict[str, Any]]] = []
            for index in range(first, min(first + self.config.start_batch, total)):
                pid = UUID(int=self._rng_ids.getrandbits(128), version=4)
                data = self._initial_data_fn(index, self._rng_data)
                self.initial_data[pid] = data
                self.process_ids.append(pid)
                items.append((pid, data))
                self._maybe_cancel_later(pid)
            batch = self.batches.process_batch(first)
            await self.manager.start_many(items, batch=batch)
            self._recorder.add(self._now(), "started", len(items))

    async def run(self) -> SimulationReport:
        """Start the processes, run until nothing is due any more, check the invariants."""
        saved = gc.get_threshold()
        if self.config.gc_threshold is not None:
            gc.set_threshold(self.config.gc_threshold, saved[1], max(saved[2], 100))
        try:
            return await self._run()
        finally:
            gc.set_threshold(*saved)

    async def _run(self) -> SimulationReport:
        wall = time.perf_counter()
        started_at = self.clock.now()
        limit = started_at + timedelta(seconds=self.config.max_virtual_seconds)
        await self.start_processes()
        for batch_id, size in await self.batches.send_command_batches():
            self._recorder.add(self._now(), "batch", str(batch_id), size)
        steps = 0
        violations: list[InvariantViolation] = []
        while True:
            steps += 1
            await self._drain()
            following = self._events.next_time()
            if following is None:
                break
            if following > limit:
                violations.append(
                    InvariantViolation(
                        None,
                        "terminal",
                        f"stopped after {self.config.max_virtual_seconds:.0f} virtual seconds "
                        "with work still due",
                    )
                )
                break
            await self.clock.advance_to(self._on_tick(max(following, self.clock.now())))
        virtual = (self.clock.now() - started_at).total_seconds()
        processes, audits = await self._load()
        violations.extend(
            await check_invariants(
                self.manager,
                processes,
                audits,
                initial_data=self.initial_data if self.config.check_replay else None,
                backend=self.backend,
                domains=[w.domain for w in self.workers],
            )
        )
        batches, batch_lines = await self.batches.check(processes, violations)
        self._recorder.lines.extend(batch_lines)
        by_status = Counter(p.status.value for p in processes)
        for process in processes:
            audit = audits[process.process_id]
            self._recorder.lines.append(_dumps(["final", *_process_record(process, audit)]))
        router = self.router.stats
        self._recorder.lines.append(_dumps(["router", vars(router)]))
        return SimulationReport(
            config=self.config,
            by_status=dict(sorted(by_status.items())),
            violations=violations,
            deliveries=self.deliveries,
            duplicates=self.duplicates,
            operator_actions=self.operator_actions,
            cancels=self.cancels,
            router=router,
            worker=self._worker_stats(),
            virtual_seconds=virtual,
            wall_seconds=time.perf_counter() - wall,
            steps=steps,
            history=("\n".join(self._recorder.lines) + "\n").encode(),
            batches=batches,
        )

    def _on_tick(self, when: datetime) -> datetime:
        """``when`` rounded up to the next tick: workers and routers wake every ``tick``
        seconds, like polling consumers, and handle everything that became due since."""
        tick = self.config.tick
        if tick <= 0:
            return when
        elapsed = (when - self._recorder.start).total_seconds()
        ticks = math.ceil(round(elapsed / tick, 9))
        return self._recorder.start + timedelta(seconds=ticks * tick)

    async def _drain(self) -> None:
        """Run workers, router and due operator actions until none of them has work."""
        while True:
            busy = 0
            for worker in self.workers:
                busy += await worker.process_once()
            retried = self.router.stats.retried
            busy += await self.router.process_once()
            if self.router.stats.retried != retried:  # read again after the vt
                self._events.at(self._now() + timedelta(seconds=self.router.visibility_timeout))
            for action in self._events.pop_due(self._now()):
                await action()
                busy += 1
            if busy == 0:
                return

    def _worker_stats(self) -> WorkerStats:
        total = WorkerStats()
        for worker in self.workers:
            for name, value in vars(worker.stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    async def _load(self) -> tuple[list[AnyProcess], dict[UUID, list[ProcessAuditEntry]]]:
        """Every simulated process with its audit trail (one transaction, one read)."""
        repo = self.manager.process_repo
        async with self.backend.transaction() as tx:
            snapshots = await repo.lock([self.manager.domain], self.process_ids, conn=tx)
        by_id = {s.process.process_id: s for s in snapshots}
        found = [by_id[pid] for pid in self.process_ids if pid in by_id]
        return [s.process for s in found], {s.process.process_id: s.audit for s in found}


def _process_record(process: AnyProcess, audit: Sequence[ProcessAuditEntry]) -> list[Any]:
    return [
        str(process.process_id),
        process.status.value,
        process.error_code,
        state_to_dict(process.state),
        [
            [
                e.step_name,
                str(e.kind),
                e.command_type,
                str(e.command_id),
                e.reply_outcome.value if e.reply_outcome else None,
                e.reply_data,
                e.received_at.isoformat() if e.received_at else None,
                e.timed_out_at.isoformat() if e.timed_out_at else None,
            ]
            for e in audit
        ],
    ]
