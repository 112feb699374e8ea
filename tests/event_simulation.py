"""The seeded simulation (``commandbus.testing.event_simulation``) of the pull-request
previews process: random pull-request events for a few pull requests (some before the
event that starts their process), deploys that sometimes fail for good, and on top of the
toolkit's invariants the example's own promise: a deploy that completed is torn down once,
when its process ended or a newer deploy of the same environment was planned.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from examples.pull_request import PullRequestPreviews
from examples.pull_request.handlers import DOMAIN

from commandbus import HandlerRegistry
from commandbus.errors import BusinessRuleException
from commandbus.events import EventStore, NewEvent
from commandbus.handler import HandlerContext
from commandbus.models import Command
from commandbus.process_manager import events as E
from commandbus.testing.event_simulation import EventSimulation, EventSimulationReport


async def simulate(
    backend: Any, seed: int, prs: int = 6, steps: int = 300, advance: Any = None
) -> EventSimulationReport:
    rng = random.Random(seed + 10_000)

    async def deploy(command: Command, context: HandlerContext) -> dict[str, Any]:
        if rng.random() < 0.1:
            raise BusinessRuleException("QUOTA", "no capacity")
        return {"url": f"https://{command.data['env']}"}

    async def tear_down(command: Command, context: HandlerContext) -> dict[str, Any]:
        return {}

    registry = HandlerRegistry()
    registry.register(DOMAIN, "DeployPreview", deploy)
    registry.register(DOMAIN, "TearDownPreview", tear_down)

    async def publish(store: EventStore, draw: random.Random) -> None:
        n, roll = draw.randrange(prs), draw.random()
        pr = {"pr": f"acme/web#{n}"}
        if roll < 0.5:
            envs = draw.sample(["staging", "qa", "perf"], draw.randint(1, 3))
            event = NewEvent(
                "PullRequestOpened", {**pr, "environments": envs, "commit": f"c{draw.random():.6f}"}
            )
        elif roll < 0.84:
            event = NewEvent("PullRequestUpdated", {**pr, "commit": f"c{draw.random():.6f}"})
        else:
            event = NewEvent("PullRequestClosed", pr)
        await store.append(f"pullrequest-{n}", event)

    simulation = EventSimulation(
        backend, PullRequestPreviews(), registry, publish, ["pullrequest"], seed, steps, advance
    )
    report = await simulation.run()
    for pid, history in report.histories.items():
        report.problems.extend(_superseded_or_ended_undone(pid, history))
    return report


def _superseded_or_ended_undone(pid: Any, history: list[Any]) -> list[str]:
    ended = any(e.event_type == E.PROCESS_FINISHED for e in history)
    planned = Counter(
        e.data["task_id"]
        for e in history
        if e.event_type == E.TRANSITION_PLANNED and e.data["compensates"] is None
    )
    undone = Counter(
        (e.data["compensates"], e.data["run"])
        for e in history
        if e.event_type == E.TRANSITION_PLANNED and e.data["compensates"] is not None
    )
    problems = []
    for e in history:
        if e.event_type != E.TASK_COMPLETED or e.data["compensates"] is not None:
            continue
        key = (e.data["task_id"], e.data["run"])
        superseded = planned[e.data["task_id"]] > e.data["run"]
        if (ended or superseded) and undone[key] != 1:
            problems.append(f"{pid}: {key} completed and was undone {undone[key]} times")
    return problems
