"""``EventProcessScenario``: given/when/then tests of an event-driven process manager.

The real engine runs on the in-memory backend and a ``VirtualClock``; the test plays the
world: it publishes events, looks at the commands and events the process produced, answers
the commands, moves the clock (timers), cancels::

    scenario = EventProcessScenario(PullRequestPreviews)
    await scenario.publish("PullRequestOpened", {"pr": "acme/web#17", "commit": "a1",
                                                 "environments": ["staging", "qa"]})
    scenario.expect_commands("DeployPreview", "DeployPreview")
    await scenario.reply_success({"url": "https://staging…"}, task_id="deploy-staging")
    await scenario.reply_failed("QUOTA", "no capacity", task_id="deploy-qa")
    scenario.expect_command("TearDownPreview", compensation=True)
    await scenario.reply_success(task_id="deploy-staging")
    scenario.expect_status(ProcessStatus.COMPENSATED, error_code="DEPLOY_FAILED")

Events go straight to ``engine.handle_event`` (and replies to ``handle_message``), so an
exception raised by ``decide`` or ``evolve`` surfaces in the test with its traceback.
The scenario focuses on the process the last published event concerned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.events.models import NewEvent, RecordedEvent
from commandbus.events.store import EventStore
from commandbus.memory import InMemoryBackend
from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.process.models import ProcessStatus
from commandbus.process_manager import events as E
from commandbus.process_manager.engine import ProcessEngine
from commandbus.process_manager.instance import ProcessInstance, TaskState
from commandbus.process_manager.manager import EventSourcedProcessManager
from commandbus.process_manager.router import ProcessEventRouter
from commandbus.testing._scenario_story import ScenarioAssertionError
from commandbus.testing.clock import VirtualClock

__all__ = ["EventProcessScenario", "PlannedCommand"]

TState = TypeVar("TState")


@dataclass(frozen=True)
class PlannedCommand:
    """A command the process sent (from its ``TransitionPlanned`` event)."""

    task_id: str
    command_id: UUID
    command_type: str
    data: JsonObject
    branch: str | None
    compensation: bool


def _subset_problem(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    for key, value in expected.items():
        if key not in actual:
            return f"no {key!r} in {dict(actual)}"
        if actual[key] != value:
            return f"{key!r} is {actual[key]!r}, not {value!r}"
    return None


class EventProcessScenario(Generic[TState]):
    """An event-driven process manager in memory, driven step by step by a test."""

    def __init__(
        self,
        manager: EventSourcedProcessManager[TState]
        | Callable[[], EventSourcedProcessManager[TState]],
        *,
        clock: VirtualClock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.backend = InMemoryBackend(clock=self.clock)
        instance = manager if isinstance(manager, EventSourcedProcessManager) else manager()
        self.manager: EventSourcedProcessManager[TState] = instance
        self.engine: ProcessEngine[TState] = ProcessEngine(self.backend, instance)
        self.store = EventStore(self.backend)
        # One read per message: a hook that raises parks the message at once.
        self.router = ProcessEventRouter(self.engine, max_attempts=1)
        self._process_id: UUID | None = None
        self._instance: ProcessInstance[TState] | None = None
        self._history: list[RecordedEvent] = []
        self._new: list[RecordedEvent] = []
        self._published = 0

    # -- what the test looks at ----------------------------------------------------------

    @property
    def process_id(self) -> UUID:
        if self._process_id is None:
            raise ScenarioAssertionError("no process yet: publish an event that starts one")
        return self._process_id

    @property
    def instance(self) -> ProcessInstance[TState]:
        if self._instance is None:
            raise ScenarioAssertionError("no process yet: publish an event that starts one")
        return self._instance

    @property
    def state(self) -> TState:
        return self.instance.state

    @property
    def status(self) -> ProcessStatus:
        return self.instance.status

    @property
    def history(self) -> list[RecordedEvent]:
        """Every event of the focused process's stream."""
        return list(self._history)

    @property
    def last_events(self) -> list[RecordedEvent]:
        """What the latest action appended to the process stream."""
        return list(self._new)

    @property
    def last_commands(self) -> list[PlannedCommand]:
        """The commands the latest action sent."""
        return [_planned(e) for e in self._new if e.event_type == E.TRANSITION_PLANNED]

    # -- actions -------------------------------------------------------------------------

    async def publish(
        self, event_type: str, data: Mapping[str, Any] | None = None, *, stream: str | None = None
    ) -> list[UUID]:
        """Append an event (to ``stream``, or a stream of its own) and feed it to the
        engine; returns the ids of the processes it changed (and focuses the first)."""
        self._published += 1
        category = next(iter(self.manager.categories or ()), "scenario")
        stream = stream or f"{category}-{self._published}"
        await self.store.append(stream, NewEvent(event_type, dict(data or {})))
        recorded = (await self.store.read_stream(stream))[-1]
        keys = self.manager.locator.keys(recorded)
        if keys:
            self._process_id = self.engine.process_id(keys[0])
        changed = await self.engine.handle_event(recorded)
        await self._refresh()
        return changed

    async def reply(
        self,
        outcome: ReplyOutcome,
        result: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        command: PlannedCommand | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Answer the command of ``task_id`` (default: the only one awaited), or
        ``command`` itself (e.g. one the process no longer waits for: a late reply)."""
        if command is not None:
            command_id, command_type = command.command_id, command.command_type
        else:
            command_id, command_type = self._awaited(task_id)
        reply = Reply(
            command_id=command_id,
            correlation_id=self.process_id,
            outcome=outcome,
            data=dict(result) if result is not None else None,
            error_code=error_code,
            error_message=error_message,
            command_type=command_type,
        )
        async with self.backend.transaction() as conn:
            await self.engine.handle_message(reply.to_message(), conn=conn)
        await self._refresh()

    async def reply_success(
        self,
        result: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        command: PlannedCommand | None = None,
    ) -> None:
        await self.reply(ReplyOutcome.SUCCESS, result or {}, task_id=task_id, command=command)

    async def reply_failed(
        self,
        error_code: str,
        error_message: str = "",
        *,
        task_id: str | None = None,
        command: PlannedCommand | None = None,
    ) -> None:
        await self.reply(
            ReplyOutcome.FAILED,
            task_id=task_id,
            command=command,
            error_code=error_code,
            error_message=error_message,
        )

    async def advance(self, seconds: float) -> None:
        """Move the clock; due timers fire."""
        await self.clock.advance(seconds)
        await self.router.drain()
        await self._refresh()

    async def cancel(self, reason: str = "cancelled") -> bool:
        done = await self.engine.cancel(self.process_id, reason)
        await self._refresh()
        return done

    # -- assertions ----------------------------------------------------------------------

    def expect_command(
        self,
        command_type: str | None = None,
        *,
        task_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        compensation: bool | None = None,
    ) -> PlannedCommand:
        """Assert the latest action sent exactly one command (of this type, task, data
        subset, kind); return it."""
        sent = self.last_commands
        if len(sent) != 1:
            self._fail(
                f"expected one new command, the process sent {[c.command_type for c in sent]}"
            )
        command = sent[0]
        problem = None
        if command_type is not None and command.command_type != command_type:
            problem = f"expected a {command_type} command, got {command.command_type}"
        elif task_id is not None and command.task_id != task_id:
            problem = f"expected task {task_id}, got {command.task_id}"
        elif compensation is not None and command.compensation != compensation:
            problem = "expected a " + ("compensation" if compensation else "forward task")
        elif data is not None:
            problem = _subset_problem(data, command.data)
        if problem:
            self._fail(problem)
        return command

    def expect_commands(self, *command_types: str) -> list[PlannedCommand]:
        actual = [c.command_type for c in self.last_commands]
        if actual != list(command_types):
            self._fail(f"expected new commands {list(command_types)}, got {actual}")
        return self.last_commands

    def expect_no_command(self) -> None:
        if self.last_commands:
            self._fail(
                f"expected no new command, got {[c.command_type for c in self.last_commands]}"
            )

    def expect_event(self, event_type: str, **data: Any) -> RecordedEvent:
        """Assert the latest action appended an event of ``event_type`` (with ``data`` as
        a subset of its data) to the process stream; return it."""
        for event in self._new:
            if event.event_type == event_type and _subset_problem(data, event.data) is None:
                return event
        self._fail(f"expected a {event_type} event {data or ''}")
        raise AssertionError  # unreachable: _fail raises

    def expect_status(self, status: ProcessStatus | str, *, error_code: str | None = None) -> None:
        expected = ProcessStatus(status)
        if self.status is not expected:
            self._fail(f"expected status {expected.value}, got {self.status.value}")
        finished = self.instance.book.finished or {}
        if error_code is not None and finished.get("error_code") != error_code:
            self._fail(f"expected error code {error_code!r}, got {finished.get('error_code')!r}")

    # -- internals -----------------------------------------------------------------------

    def _awaited(self, task_id: str | None) -> tuple[UUID, str]:
        book = self.instance.book
        in_flight = book.data["compensating"]
        compensating = None if in_flight is None else in_flight["task_id"]
        if task_id is not None and compensating == task_id:
            # The compensation in flight: the last command that undoes this task.
            undoing = [
                UUID(command_id)
                for command_id, sent in book.data["commands"].items()
                if sent["compensates"] == task_id and not sent["late"]
            ]
            return undoing[-1], "compensation"
        pending = book.pending_tasks()
        if task_id is None:
            if compensating is not None and not pending:
                return self._awaited(compensating)
            if len(pending) != 1:
                self._fail(f"say which task to answer: {len(pending)} are awaited ({pending})")
            task_id = pending[0]
        record = book.task(task_id)
        if record is None or record["state"] != TaskState.PENDING:
            self._fail(f"task {task_id!r} is not awaited")
        assert record is not None
        return UUID(record["command_id"]), str(record["command_type"])

    async def _refresh(self) -> None:
        if self._process_id is None:
            self._new = []
            return
        before = len(self._history)
        self._history = await self.engine.history(self._process_id)
        self._new = self._history[before:]
        self._instance = await self.engine.load(self._process_id)

    def _fail(self, problem: str) -> None:
        story = "\n".join(f"  {e.version:>3} {e.event_type} {e.data}" for e in self._history[-30:])
        raise ScenarioAssertionError(f"{problem}\nprocess {self._process_id} history:\n{story}")


def _planned(event: RecordedEvent) -> PlannedCommand:
    data = event.data
    return PlannedCommand(
        task_id=data["task_id"],
        command_id=UUID(data["command_id"]),
        command_type=data["command_type"],
        data=data["data"],
        branch=data.get("branch"),
        compensation=data.get("compensates") is not None,
    )
