"""The pull-request previews process end to end on a backend (memory or PostgreSQL): a
subscription, a worker and a router, driven step by step. Shared by the memory and the
PostgreSQL tests."""

from __future__ import annotations

import asyncio
from typing import Any

from examples.pull_request import PreviewCloud, PullRequestPreviews

from commandbus import HandlerRegistry, Worker
from commandbus.events import EventStore, NewEvent
from commandbus.models import CommandQuery
from commandbus.process import ProcessStatus
from commandbus.process_manager import ProcessEngine, ProcessEventRouter
from commandbus.process_manager.instance import TaskState

PR = "acme/web#17"
#: How long a drain may wait for events held back by another program's open transaction
#: on a shared server (see commandbus.testing.contracts.events.SETTLE).
SETTLE = 60.0
STREAM = "pullrequest-17"


class Previews:
    """The running system around one backend."""

    def __init__(self, backend: Any, failing: set[str] | None = None) -> None:
        self.store = EventStore(backend)
        self.engine = ProcessEngine(backend, PullRequestPreviews())
        self.subscription = self.engine.subscription(retry_delay=0)
        self.router = ProcessEventRouter(self.engine)
        self.cloud = PreviewCloud(failing)
        self.worker = Worker(backend, "previews", self.cloud.register(HandlerRegistry()))
        self.pid = self.engine.process_id(PR)

    async def publish(self, event_type: str, **data: Any) -> None:
        await self.store.append(STREAM, NewEvent(event_type, {"pr": PR, **data}))

    async def settle(self, *, work: bool = True) -> None:
        """Deliver events, run commands and route replies until nothing moves."""
        for _ in range(50):
            moved = await self.subscription.drain(wait=SETTLE)
            if work:
                moved += await self.worker.drain()
            moved += await self.router.drain()
            if not moved:
                return
        raise AssertionError("the system did not settle")

    async def row(self) -> Any:
        return await self.engine.backend.processes.get_by_id("previews", self.pid)


async def opened_updated_closed(backend: Any) -> None:
    """Open with two environments, update once, close: everything deployed is torn down
    (the most recently deployed first) and the process ends COMPLETED."""
    system = Previews(backend)
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    instance = await system.engine.load(system.pid)
    assert instance.book.data["state_name"] == "previewing"
    assert {e: s["status"] for e, s in instance.state.environments.items()} == {
        "staging": "deployed",
        "qa": "deployed",
    }
    assert instance.state.environments["qa"]["url"] == "https://qa.previews.example/acme/web-17"
    row = await system.row()
    assert row.status is ProcessStatus.IN_PROGRESS and row.current_step == "previewing"

    await system.publish("PullRequestUpdated", commit="b2")
    await system.settle()
    assert sorted(system.cloud.deployed) == sorted(
        [(PR, env, commit) for env in ("staging", "qa") for commit in ("a1", "b2")]
    )
    assert sorted(system.cloud.torn_down) == [(PR, "qa", "a1"), (PR, "staging", "a1")]
    await system.publish("PullRequestClosed")
    await system.settle()
    instance = await system.engine.load(system.pid)
    assert instance.status is ProcessStatus.COMPLETED
    # The update tore down the a1 previews, the close the b2 ones: one after the other,
    # the most recently deployed first.
    a1 = [c for c in system.cloud.deployed if c[2] == "a1"]
    b2 = [c for c in system.cloud.deployed if c[2] == "b2"]
    assert system.cloud.torn_down == [a1[1], a1[0], b2[1], b2[0]]
    assert {t: r["state"] for t, r in instance.book.data["tasks"].items()} == {
        "deploy-staging": TaskState.COMPENSATED,
        "deploy-qa": TaskState.COMPENSATED,
    }
    row = await system.row()
    assert row.status is ProcessStatus.COMPLETED and row.current_step == "closed"
    trail = await backend.processes.get_audit_trail("previews", system.pid)
    # a1, its teardown, b2, its teardown
    assert [e.step_name for e in trail].count("deploy-staging") == 4
    assert [e.kind.value for e in trail].count("COMPENSATION") == 4
    # Events after the end are recorded as ignored, and change nothing.
    await system.publish("PullRequestUpdated", commit="c3")
    await system.settle()
    assert (await system.engine.load(system.pid)).version == instance.version
    ignored = await backend.processes.list_messages(domain="previews", process_id=system.pid)
    assert [m.reason for m in ignored] == ["the process has finished"]


async def update_while_deploying(backend: Any) -> None:
    """An update while the first deploys still run: they are no longer awaited, and when
    they succeed late they are torn down; the process waits for the new ones."""
    system = Previews(backend)
    await system.publish("PullRequestOpened", environments=["staging"], commit="a1")
    await system.subscription.drain(wait=SETTLE)  # deploy a1 sent, not run yet
    await system.publish("PullRequestUpdated", commit="b2")
    await system.subscription.drain(wait=SETTLE)  # deploy b2 sent, a1 no longer awaited
    await system.settle()
    instance = await system.engine.load(system.pid)
    assert system.cloud.deployed == [(PR, "staging", "a1"), (PR, "staging", "b2")]
    assert system.cloud.torn_down == [(PR, "staging", "a1")]  # the late a1 success, undone
    assert instance.state.environments["staging"]["status"] == "deployed"
    assert instance.book.data["state_name"] == "previewing"
    history = [e.event_type for e in await system.engine.history(system.pid)]
    assert "TaskIgnored" in history and "TaskCancelled" in history


async def a_failed_deploy_tears_down_the_others(backend: Any) -> None:
    system = Previews(backend, failing={"qa"})
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    row = await system.row()
    assert row.status is ProcessStatus.COMPENSATED, row
    assert row.error_code == "DEPLOY_FAILED" and "no capacity left in qa" in row.error_message
    assert system.cloud.torn_down == [(PR, "staging", "a1")]


async def duplicates_and_strays_change_nothing(backend: Any) -> None:
    """A reply delivered twice, an event for an unknown pull request, the start event fed
    again: each is recognised and changes nothing."""
    system = Previews(backend)
    await system.store.append("pullrequest-99", NewEvent("PullRequestUpdated", {"pr": "x#99"}))
    await system.publish("PullRequestOpened", environments=["staging"], commit="a1")
    await system.settle()
    version = (await system.engine.load(system.pid)).version
    [started] = await system.store.read_stream(STREAM)
    assert await system.engine.handle_event(started) == []  # fed again: a duplicate
    assert (await system.engine.load(system.pid)).version == version
    reasons = [m.reason for m in await backend.processes.list_messages(domain="previews")]
    assert reasons == ["no pr_previews process for key 'x#99'"]


async def a_deploy_that_times_out(backend: Any, advance: Any) -> None:
    """No reply within the task's timeout: the task fails with TIMEOUT (the process ends
    FAILED); the deploy, when it finally runs and succeeds, is torn down."""
    system = Previews(backend)
    await system.publish("PullRequestOpened", environments=["staging"], commit="a1")
    await system.settle(work=False)  # the deploy waits: no worker
    await advance(601)
    await system.settle(work=False)
    row = await system.row()
    assert row.status is ProcessStatus.FAILED and row.error_code == "DEPLOY_FAILED"
    assert "no reply to task deploy-staging in time" in row.error_message
    await system.settle()  # the worker runs the deploy now: a late success
    assert system.cloud.deployed == [(PR, "staging", "a1")]
    assert system.cloud.torn_down == [(PR, "staging", "a1")]
    assert (await system.row()).status is ProcessStatus.FAILED


async def cancelled_by_an_operator(backend: Any) -> None:
    system = Previews(backend)
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    assert await system.engine.cancel(system.pid, "abandoned") is True
    await system.settle()
    row = await system.row()
    assert row.status is ProcessStatus.COMPENSATED
    assert sorted(system.cloud.torn_down) == [(PR, "qa", "a1"), (PR, "staging", "a1")]
    assert await system.engine.cancel(system.pid, "again") is False  # it has ended


async def two_start_events_racing_make_one_process(backend: Any) -> None:
    """Two ``PullRequestOpened`` for one pull request, handled at the same time in two
    transactions (two consumers): one process, started once, deploying once."""
    system = Previews(backend)
    opened = {"pr": PR, "environments": ["staging", "qa"], "commit": "a1"}
    await system.store.append("pullrequest-17", NewEvent("PullRequestOpened", opened))
    await system.store.append("pullrequest-17b", NewEvent("PullRequestOpened", opened))
    first, second = await system.store.read_all(wait=SETTLE)
    results = await asyncio.gather(
        system.engine.handle_event(first), system.engine.handle_event(second)
    )
    assert sorted(len(r) for r in results) == [1, 1]  # both entered the one process
    history = [e.event_type for e in await system.engine.history(system.pid)]
    assert history.count("ProcessStarted") == 1 and history.count("TransitionPlanned") == 2
    assert len(await backend.commands.query(CommandQuery(domain="previews"))) == 2


async def a_bad_event_is_parked_and_the_rest_go_on(backend: Any) -> None:
    system = Previews(backend)
    await system.store.append("pullrequest-1", NewEvent("PullRequestOpened", {"pr": "x#1"}))
    await system.publish("PullRequestOpened", environments=["qa"], commit="a1")
    await system.settle()
    [parked] = await system.store.parked_events(system.subscription.name)
    assert parked.event.stream == "pullrequest-1" and "KeyError" in parked.error
    assert (await system.row()).current_step == "previewing"
