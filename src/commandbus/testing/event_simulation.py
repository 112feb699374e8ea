"""A seeded simulation of event-driven processes (``commandbus.process_manager``).

``EventSimulation`` runs one ``EventSourcedProcessManager`` on a backend (in memory with a
``VirtualClock`` by default, or PostgreSQL with an ``advance`` hook) with the real
engine, subscription, worker and router, and plays a random world, step by step, drawn
from one seed: events published by the test's ``publish`` function, events delivered
again (an at-least-once replay), two consumers of the one subscription taking turns, the
worker, the router, and the clock moving (timeouts fire, late replies come). Then it
settles everything and checks, for every process:

- ``each_event_once``: every published event entered its process once, or was recorded as
  ignored — none skipped, none applied twice; the subscription is caught up, nothing
  parked;
- ``single_advance``: no command's outcome acted on twice (a late reply is recorded as
  ignored, not applied);
- ``late_success_undone``: a success that came after its task was no longer awaited was
  compensated exactly once, and no task run was compensated twice;
- ``ended_cleanly``: a process that ended awaits no task.

``EventSimulationReport.problems`` lists what failed (empty: all hold); ``histories``
gives each process stream for checks of the test's own.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from commandbus.events.models import RecordedEvent
from commandbus.events.store import EventStore
from commandbus.handler import HandlerRegistry
from commandbus.process_manager import events as E
from commandbus.process_manager.engine import ProcessEngine
from commandbus.process_manager.instance import TaskState
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.process_manager.router import ProcessEventRouter
from commandbus.worker import Worker

__all__ = ["EventSimulation", "EventSimulationReport", "Publish"]

#: ``publish(store, rng)``: append one random event of the test's world.
Publish = Callable[[EventStore, random.Random], Awaitable[None]]

_ENDED = {"COMPLETED", "FAILED", "CANCELED", "COMPENSATED"}


@dataclass
class EventSimulationReport:
    seed: int
    events: int = 0
    redeliveries: int = 0
    processes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: Each process's stream, by process id.
    histories: dict[UUID, list[RecordedEvent]] = field(default_factory=dict, repr=False)


@dataclass
class EventSimulation:
    """See the module docstring. ``categories`` are the stream categories ``publish``
    writes to (what the checks read back)."""

    backend: Any
    manager: EventSourcedProcessManager[Any]
    registry: HandlerRegistry
    publish: Publish
    categories: list[str]
    seed: int = 0
    steps: int = 300
    #: ``advance(seconds)``: move time (default: the backend's virtual clock).
    advance: Callable[[float], Awaitable[None]] | None = None
    #: Seconds the clock may jump at once (timeouts are drawn around these).
    jumps: tuple[float, ...] = (1, 60, 400, 700)

    async def run(self) -> EventSimulationReport:
        rng = random.Random(self.seed)
        report = EventSimulationReport(self.seed)
        advance = self.advance or self.backend.clock.advance
        store = EventStore(self.backend)
        engine = ProcessEngine(self.backend, self.manager)
        consumers = [engine.subscription(retry_delay=0) for _ in range(2)]
        router = ProcessEventRouter(engine)
        worker = Worker(
            self.backend, self.manager.domain, self.registry, batch_size=rng.choice([1, 3, 10])
        )
        published: list[RecordedEvent] = []
        for _ in range(self.steps):
            roll = rng.random()
            if roll < 0.24:
                await self.publish(store, rng)
                report.events += 1
                published = await store.read_all(categories=self.categories, limit=10_000)
            elif roll < 0.28 and published:
                await engine.handle_event(rng.choice(published))  # delivered again
                report.redeliveries += 1
            elif roll < 0.45:
                await rng.choice(consumers).process_once()
            elif roll < 0.75:
                await worker.process_once()
            elif roll < 0.92:
                await router.process_once()
            else:
                await advance(rng.choice(self.jumps))
        for _ in range(200):  # settle: everything delivered, every timer due and answered
            moved = sum([await c.drain(wait=60) for c in consumers])
            moved += await worker.drain() + await router.drain()
            if not moved:
                await advance(max(self.jumps))
                if not (await worker.drain() + await router.drain()):
                    break
        await self._check(store, engine, report)
        return report

    async def _check(
        self, store: EventStore, engine: ProcessEngine[Any], report: EventSimulationReport
    ) -> None:
        problems = report.problems
        events = await store.read_all(categories=self.categories, limit=10_000, wait=60)
        domain = self.manager.domain
        logged = await self.backend.processes.list_messages(domain=domain, limit=10_000)
        ignored = {m.message.get("event_id") for m in logged}
        info = await store.subscription(engine.process_type)
        if info is None or info.lag != 0 or info.parked != 0:
            problems.append(f"each_event_once: subscription {info}")
        pids = {
            engine.process_id(key)
            for event in events
            for key in self.manager.locator.keys(event)
            if event.event_type in engine.event_types
        }
        for pid in sorted(pids):
            history = await engine.history(pid)
            if history:
                report.histories[pid] = history
        received = Counter(
            e.data["source"]["event_id"]
            for history in report.histories.values()
            for e in history
            if e.event_type == E.EVENT_RECEIVED
        )
        for event in events:
            if event.event_type not in engine.event_types:
                continue
            entered = received[str(event.event_id)]
            if entered > 1:
                problems.append(f"each_event_once: event {event.position} entered {entered} times")
            if entered == 0 and str(event.event_id) not in ignored:
                problems.append(f"each_event_once: event {event.position} was skipped")
        for pid, history in report.histories.items():
            report.processes += 1
            instance = await engine.load(pid)
            report.outcomes[instance.status.value] += 1
            problems.extend(self._process_problems(pid, history, instance))

    @staticmethod
    def _process_problems(pid: UUID, history: list[RecordedEvent], instance: Any) -> list[str]:
        problems = []
        acted = Counter(
            e.data["command_id"]
            for e in history
            if e.event_type in (E.TASK_COMPLETED, E.TASK_FAILED)
        )
        problems += [
            f"single_advance: {pid} command {c} acted on {n} times"
            for c, n in acted.items()
            if n > 1
        ]
        undone = Counter(
            (e.data["compensates"], e.data["run"])
            for e in history
            if e.event_type == E.TRANSITION_PLANNED and e.data["compensates"] is not None
        )
        problems += [
            f"late_success_undone: {pid} {k} compensated {n} times"
            for k, n in undone.items()
            if n > 1
        ]
        for e in history:
            if e.event_type == E.TASK_IGNORED and e.data["outcome"] == "SUCCESS":
                sent = instance.book.command(e.data["command_id"])
                if sent and sent["compensation"] and undone[(e.data["task_id"], sent["run"])] != 1:
                    problems.append(f"late_success_undone: {pid} {e.data['task_id']} not undone")
        if instance.status.value in _ENDED:
            problems += [
                f"ended_cleanly: {pid} {t} still awaited"
                for t, r in instance.book.data["tasks"].items()
                if r["state"] == TaskState.PENDING
            ]
        return problems
