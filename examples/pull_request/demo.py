"""The event-driven part of ``make demo``: pull-request previews (seeds 002/003).

Three pull requests: one opened, updated and closed; one whose ``qa`` deploy fails (its
``staging`` preview is torn down); one left open. A subscription feeds the events to the
engine, a worker runs the deploys and teardowns, a router feeds their replies back; then
the outcome of each process and its stream are printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from examples.pull_request.handlers import PreviewCloud
from examples.pull_request.process import PullRequestPreviews
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from commandbus import HandlerRegistry, Worker
from commandbus.events import EventStore, NewEvent
from commandbus.process_manager import ProcessEngine, ProcessEventRouter


@dataclass
class PreviewsOutcome:
    statuses: dict[str, str] = field(default_factory=dict)
    cloud: PreviewCloud = field(default_factory=PreviewCloud)


async def run_process_demo(backend: Any, console: Console) -> PreviewsOutcome:
    console.print(
        Panel.fit(
            "[bold]Event-driven processes[/]: pull-request previews, one process per pull "
            "request,\nstarted by events, deploying environments in parallel."
        )
    )
    store = EventStore(backend)
    engine = ProcessEngine(backend, PullRequestPreviews())
    subscription = engine.subscription()
    router = ProcessEventRouter(engine)
    outcome = PreviewsOutcome(cloud=PreviewCloud(failing={"qa"}))
    worker = Worker(backend, "previews", outcome.cloud.register(HandlerRegistry()))
    run = uuid4().hex[:6]  # a fresh set of pull requests on every run

    async def publish(number: int, event_type: str, **data: Any) -> None:
        event = NewEvent(event_type, {"pr": f"acme/web#{run}-{number}", **data})
        await store.append(f"pullrequest-{run}-{number}", event)
        while await subscription.drain() + await worker.drain() + await router.drain():
            pass

    await publish(1, "PullRequestOpened", environments=["staging"], commit="a1")
    await publish(1, "PullRequestUpdated", commit="b2")
    await publish(1, "PullRequestClosed")
    await publish(2, "PullRequestOpened", environments=["staging", "qa"], commit="c3")
    await publish(3, "PullRequestOpened", environments=["staging"], commit="d4")

    table = Table(title="Pull-request previews", title_justify="left", header_style="bold")
    for column in ("pull request", "status", "step", "error", "stream"):
        table.add_column(column, overflow="fold")
    for number in (1, 2, 3):
        pr = f"acme/web#{run}-{number}"
        pid = engine.process_id(pr)
        row = await backend.processes.get_by_id("previews", pid)
        outcome.statuses[pr] = row.status.value
        history = await engine.history(pid)
        error = f"{row.error_code}: {row.error_message}" if row.error_code else ""
        table.add_row(pr, row.status.value, row.current_step or "", error, f"{len(history)} events")
    console.print(table)
    deployed = ", ".join(f"{env}@{commit}" for _, env, commit in outcome.cloud.deployed)
    torn_down = ", ".join(f"{env}@{commit}" for _, env, commit in outcome.cloud.torn_down)
    console.print(f"Deployed: {deployed}\nTorn down: {torn_down}")
    console.print(
        "[dim]See a stream with `commandbus events show pr_previews-<process id>`, the "
        "subscription with `commandbus subscription list`.[/]"
    )
    return outcome
