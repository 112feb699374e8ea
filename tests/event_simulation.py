"""A seeded simulation of the pull-request previews process: random events (some
delivered twice, some before the event that starts their process), two consumers of one
subscription taking turns, a worker whose deploys sometimes fail and sometimes run late
(after their timeout), a router, and a moving clock. At the end it checks:

- every event was handled once per subscription: none skipped (each one entered its
  process or was recorded as ignored), none entered a process twice;
- no branch advanced twice: at most one outcome acted on per command (a late reply is
  recorded as ignored);
- compensation exactly once per completed branch: every task whose latest run completed
  in a process that ended is undone once; every success that came late is undone once;
  nothing is undone twice.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from examples.pull_request import PullRequestPreviews
from examples.pull_request.handlers import DOMAIN

from commandbus import HandlerRegistry, Worker
from commandbus.errors import BusinessRuleException
from commandbus.events import EventStore, NewEvent
from commandbus.handler import HandlerContext
from commandbus.models import Command
from commandbus.process_manager import ProcessEngine, ProcessEventRouter
from commandbus.process_manager import events as E
from commandbus.process_manager.instance import TaskState

ENDED = {"COMPLETED", "FAILED", "CANCELED", "COMPENSATED"}


@dataclass
class Report:
    seed: int
    events: int = 0
    redeliveries: int = 0
    processes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def simulate(
    backend: Any, seed: int, prs: int = 6, steps: int = 300, advance: Any = None
) -> Report:
    """Run the simulation; ``advance(seconds)`` moves time (default: the backend's
    virtual clock)."""
    rng = random.Random(seed)
    report = Report(seed)
    advance = advance or backend.clock.advance
    store = EventStore(backend)
    engine = ProcessEngine(backend, PullRequestPreviews())
    consumers = [engine.subscription(retry_delay=0) for _ in range(2)]
    router = ProcessEventRouter(engine)

    async def deploy(command: Command, context: HandlerContext) -> dict[str, Any]:
        if rng.random() < 0.1:
            raise BusinessRuleException("QUOTA", "no capacity")
        return {"url": f"https://{command.data['env']}"}

    async def tear_down(command: Command, context: HandlerContext) -> dict[str, Any]:
        return {}

    registry = HandlerRegistry()
    registry.register(DOMAIN, "DeployPreview", deploy)
    registry.register(DOMAIN, "TearDownPreview", tear_down)
    worker = Worker(backend, DOMAIN, registry, batch_size=rng.choice([1, 3, 10]))
    opened: set[int] = set()
    published = []

    async def publish(n: int, event_type: str, **data: Any) -> None:
        event = NewEvent(event_type, {"pr": f"acme/web#{n}", **data})
        await store.append(f"pullrequest-{n}", event)
        report.events += 1

    for _ in range(steps):
        roll = rng.random()
        n = rng.randrange(prs)
        if roll < 0.12:
            envs = rng.sample(["staging", "qa", "perf"], rng.randint(1, 3))
            await publish(n, "PullRequestOpened", environments=envs, commit=f"c{rng.random():.6f}")
            opened.add(n)
        elif roll < 0.20:
            await publish(n, "PullRequestUpdated", commit=f"c{rng.random():.6f}")
        elif roll < 0.24:
            await publish(n, "PullRequestClosed")
        elif roll < 0.28 and published:
            # A redelivery: the same stored event handled again (an at-least-once replay).
            await engine.handle_event(rng.choice(published))
            report.redeliveries += 1
        elif roll < 0.45:
            await rng.choice(consumers).process_once()
        elif roll < 0.75:
            await worker.process_once()
        elif roll < 0.92:
            await router.process_once()
        else:
            await advance(rng.choice([1, 60, 400, 700]))
        published = await store.read_all(categories=["pullrequest"], limit=10_000)

    # Settle: everything delivered, every timer due, every command answered.
    for _ in range(200):
        moved = sum([await c.drain() for c in consumers])
        moved += await worker.drain() + await router.drain()
        if not moved:
            await advance(700)
            if not (await worker.drain() + await router.drain()):
                break
    await check(backend, store, engine, report)
    return report


async def check(
    backend: Any, store: EventStore, engine: ProcessEngine[Any], report: Report
) -> None:
    problems = report.problems
    events = await store.read_all(categories=["pullrequest"], limit=10_000, wait=10.0)
    ignored = {
        m.message.get("event_id")
        for m in await backend.processes.list_messages(domain=DOMAIN, limit=10_000)
    }
    for name in {engine.process_type}:
        info = await store.subscription(name)
        if info is None or info.lag != 0 or info.parked != 0:
            problems.append(f"subscription {name}: {info}")
    by_process: dict[Any, list[Any]] = {}
    for event in events:
        pid = engine.process_id(event.data["pr"])
        by_process.setdefault(pid, [])
    for pid in by_process:
        by_process[pid] = await engine.history(pid)
    received = Counter(
        e.data["source"]["event_id"]
        for history in by_process.values()
        for e in history
        if e.event_type == E.EVENT_RECEIVED
    )
    for event in events:
        entered = received[str(event.event_id)]
        if entered > 1:
            problems.append(f"event {event.position} entered its process {entered} times")
        if entered == 0 and str(event.event_id) not in ignored:
            problems.append(f"event {event.position} ({event.event_type}) was skipped")
    for pid, history in by_process.items():
        if not history:
            continue
        report.processes += 1
        instance = await engine.load(pid)
        status = instance.status.value
        report.outcomes[status] += 1
        outcomes = Counter(
            e.data["command_id"]
            for e in history
            if e.event_type in (E.TASK_COMPLETED, E.TASK_FAILED)  # what advanced a branch
        )
        problems.extend(
            f"{pid}: command {c} has {k} outcomes" for c, k in outcomes.items() if k > 1
        )
        undo = Counter(
            (e.data["compensates"], e.data["run"])
            for e in history
            if e.event_type == E.TRANSITION_PLANNED and e.data["compensates"] is not None
        )
        problems.extend(f"{pid}: {k} undone {n} times" for k, n in undo.items() if n > 1)
        late = [
            e for e in history if e.event_type == E.TASK_IGNORED and e.data["outcome"] == "SUCCESS"
        ]
        for e in late:
            run = instance.book.command(e.data["command_id"])
            assert run is not None
            if undo[(e.data["task_id"], run["run"])] != 1:
                problems.append(f"{pid}: a late success of {e.data['task_id']} was not undone")
        # The example's promise: a deploy that completed is undone once its process ended
        # or a newer deploy of the same environment was planned.
        planned = Counter(
            e.data["task_id"]
            for e in history
            if e.event_type == E.TRANSITION_PLANNED and e.data["compensates"] is None
        )
        for e in history:
            if e.event_type != E.TASK_COMPLETED or e.data["compensates"] is not None:
                continue
            key = (e.data["task_id"], e.data["run"])
            superseded = planned[e.data["task_id"]] > e.data["run"]
            if (status in ENDED or superseded) and undo[key] != 1:
                problems.append(f"{pid}: {key} completed and was undone {undo[key]} times")
        if status in ENDED:
            for task_id, record in instance.book.data["tasks"].items():
                if record["state"] == TaskState.PENDING:
                    problems.append(f"{pid}: {task_id} still awaited after the end")
