"""``ProcessScenario``: given/when/then tests of a process manager, without a database.

A scenario runs one process manager on the in-memory backend and a ``VirtualClock``, with
the real engine, repository and router. The test plays the rest of the world: it starts
processes, looks at the commands they sent, and answers them — success with a result, a
business failure, a troubleshooting-queue notice, an operator's cancel or complete — or
lets a step time out by moving the virtual clock. After every action the scenario reloads
the process, so ``status``, ``state``, ``audit_trail`` and ``sent_commands`` are plain
properties, and the ``expect_*`` assertions fail with the whole story of the process::

    scenario = ProcessScenario(StatementReportProcess)
    await scenario.start({"from_date": "2025-01-01", "to_date": "2025-01-31",
                          "account_list": ["A1"], "output_type": "pdf"})
    scenario.expect_command("StatementQuery")
    await scenario.reply_success({"result_path": "s3://q"})
    scenario.expect_command("StatementDataAggregation", data={"data_path": "s3://q"})
    await scenario.reply_failed("NO_DATA", "nothing to aggregate")
    scenario.expect_command("DeleteQueryResult")          # compensation
    await scenario.reply_success({"deleted": "s3://q"})
    scenario.expect_status(ProcessStatus.FAILED, error_code="NO_DATA")

Replies are applied with ``manager.handle_reply`` (the engine path the router uses), so an
exception raised by a hook surfaces in the test with its traceback. Timers are messages on
the reply queue and are delivered by a real ``ProcessReplyRouter`` when the clock moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from commandbus.bus import CommandBus
from commandbus.memory import InMemoryBackend
from commandbus.memory.process_repository import InMemoryProcessRepository
from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.policies import RetryPolicy
from commandbus.process.base import BaseProcessManager
from commandbus.process.kernel import Decision
from commandbus.process.models import ProcessMessageDisposition, ProcessState
from commandbus.process.router import ProcessReplyRouter

# The harness is split in three modules; this one is its import path and re-exports the
# other two's public names (``from commandbus.testing.scenario import SentCommand``).
from commandbus.testing._scenario_story import (
    ScenarioAssertionError,
    SentCommand,
    describe_process,
)
from commandbus.testing._scenario_view import ScenarioView
from commandbus.testing.clock import VirtualClock

if TYPE_CHECKING:
    from commandbus.process.replay import ReplayResult

__all__ = [
    "ManagerFactory",
    "ProcessScenario",
    "ScenarioAssertionError",
    "SentCommand",
    "describe_process",
    "memory_backend",
]

S = TypeVar("S", bound=ProcessState)

#: A manager class, or any callable that builds the manager from a ``CommandBus``.
ManagerFactory = Callable[[CommandBus], BaseProcessManager[S, Any]]


def memory_backend(clock: VirtualClock | None = None) -> InMemoryBackend:
    """An ``InMemoryBackend`` on ``clock`` (a new ``VirtualClock`` by default) with its
    process repository wired in (``backend.processes``)."""
    backend = InMemoryBackend(clock=clock if clock is not None else VirtualClock())
    if getattr(backend, "processes", None) is None:
        backend.processes = InMemoryProcessRepository(backend)
    return backend


class ProcessScenario(ScenarioView[S]):
    """A process manager on the in-memory backend, driven step by step by a test.

    ``manager`` is the manager class (or a factory taking the ``CommandBus``). The
    scenario focuses on the process started last; ``await use(process_id)`` switches to
    another one it started. What the test looks at (``status``, ``state``,
    ``sent_commands`` …) and the ``expect_*`` assertions come from ``ScenarioView``.
    """

    def __init__(
        self,
        manager: ManagerFactory[S],
        *,
        clock: VirtualClock | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.backend = memory_backend(self.clock)
        self.bus = CommandBus(self.backend, retry_policy=retry_policy)
        self.manager: BaseProcessManager[S, Any] = manager(self.bus)
        # One read per message: a hook that raises parks the timer at once, and the
        # scenario reports it instead of retrying it forever.
        self.router = ProcessReplyRouter(
            self.backend, managers=[self.manager], max_reply_attempts=1
        )
        super().__init__()  # the focused process's fields: none loaded yet
        self.last_decision: Decision[Any, Any] | None = None
        #: The start input of every process started here (what replay starts from).
        self.initial_data: dict[UUID, JsonObject] = {}

    # -- actions -------------------------------------------------------------------------

    async def start(
        self, initial_data: Mapping[str, Any], process_id: UUID | str | None = None
    ) -> UUID:
        """Start a process (it becomes the focused one); returns its id."""
        pid = await self.manager.start(dict(initial_data), process_id=process_id)
        self.initial_data.setdefault(pid, dict(initial_data))
        self._process_id = pid
        self._audit = []
        self._messages = []
        await self._refresh(pid, track=True)
        return pid

    async def use(self, process_id: UUID) -> None:
        """Focus another process started in this scenario (and load it)."""
        self._process_id = process_id
        self._last_sent = []
        self._last_ignored = []
        await self._refresh(process_id, track=False)

    async def refresh(self) -> None:
        """Reload the focused process (the actions do this themselves)."""
        await self._refresh(self.process_id, track=False)

    async def reply_success(
        self,
        result: Mapping[str, Any] | None = None,
        *,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """The awaited command (or ``command``) succeeded with ``result``."""
        await self.reply(
            ReplyOutcome.SUCCESS, dict(result) if result is not None else None, command=command
        )

    async def reply_failed(
        self,
        error_code: str,
        error_message: str | None = None,
        *,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """The handler refused the command for a business reason (``BusinessRuleException``)."""
        await self.reply(
            ReplyOutcome.FAILED,
            error_code=error_code,
            error_message=error_message or f"{error_code} (simulated business failure)",
            command=command,
        )

    async def tsq_notice(
        self,
        error_code: str = "PERMANENT_ERROR",
        error_message: str | None = None,
        *,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """The command went to the troubleshooting queue (the worker's notice reply)."""
        await self.reply(
            ReplyOutcome.IN_TROUBLESHOOTING_QUEUE,
            error_code=error_code,
            error_message=error_message or "moved to the troubleshooting queue",
            command=command,
        )

    async def operator_cancel(
        self,
        reason: str = "canceled by operator",
        *,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """An operator canceled the command in the troubleshooting queue (CANCELED reply,
        as ``TroubleshootingQueue.operator_cancel`` sends it)."""
        await self.reply(
            ReplyOutcome.CANCELED, error_code="CANCELED", error_message=reason, command=command
        )

    async def operator_complete(
        self,
        result: Mapping[str, Any] | None = None,
        *,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """An operator completed the command by hand (SUCCESS reply with ``result``)."""
        await self.reply_success(result, command=command)

    async def reply(
        self,
        outcome: ReplyOutcome,
        result: JsonObject | None = None,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        command: SentCommand | UUID | None = None,
    ) -> None:
        """Deliver a reply to the awaited command (or to ``command``: e.g. a duplicate or
        late reply to an older one, which the process must ignore)."""
        target = self._target(command)
        # Field by field rather than ``Reply.answering``: a ``SentCommand`` carries neither
        # the correlation id nor the domain, and ``answering`` would drop ``result`` from a
        # non-SUCCESS reply (and the error from a SUCCESS one), where this delivers exactly
        # what the test asked for.
        reply = Reply(
            command_id=target.command_id,
            correlation_id=self.process_id,
            outcome=outcome,
            data=result,
            error_code=error_code,
            error_message=error_message,
            domain=self.manager.domain,
            command_type=target.command_type,
        )
        await self.deliver(reply)

    async def deliver(self, reply: Reply) -> None:
        """Hand any reply to the manager, exactly as written (for odd cases)."""
        pid = reply.correlation_id or self.process_id
        self.last_decision = await self.manager.handle_reply(reply)
        await self._refresh(pid, track=True)

    async def cancel(self, reason: str = "canceled") -> None:
        """Cancel the process (``manager.cancel``): compensation, then CANCELED."""
        await self.manager.cancel(self.process_id, reason)
        await self._refresh(self.process_id, track=True)

    async def retry_step(self, operator: str | None = None) -> None:
        """An operator re-sends the awaited step (``manager.retry_step``), e.g. after a
        step timeout left the process WAITING_FOR_OPERATOR."""
        await self.manager.retry_step(self.process_id, operator=operator)
        await self._refresh(self.process_id, track=True)

    async def complete_step(
        self, result: Mapping[str, Any] | None = None, operator: str | None = None
    ) -> None:
        """An operator completes the awaited step with ``result`` (``manager.complete_step``)."""
        await self.manager.complete_step(self.process_id, dict(result or {}), operator=operator)
        await self._refresh(self.process_id, track=True)

    async def fire_timeout(self) -> None:
        """Move the virtual clock to the awaited command's deadline and deliver the timer."""
        deadline = self.process.deadline_at
        if deadline is None:
            raise ScenarioAssertionError(
                "fire_timeout(): the process has no step timeout pending "
                f"(step {self.process.current_step} has no timeout, or the process does not "
                f"wait for a reply)\n{self.describe()}"
            )
        await self.advance_to(deadline)

    async def advance(self, seconds: float) -> None:
        """Move the virtual clock by ``seconds`` and deliver the timers that became due."""
        await self.advance_to(self.clock.now() + _delta(seconds))

    async def advance_to(self, when: datetime) -> None:
        await self.clock.advance_to(when)
        parked_before = self.router.stats.parked
        await self.router.drain()
        pid = self.process_id
        await self._refresh(pid, track=True)
        if self.router.stats.parked != parked_before:
            parked = [
                m for m in self._last_ignored if m.disposition is ProcessMessageDisposition.PARKED
            ]
            reasons = "; ".join(m.reason for m in parked) or "see the message log"
            raise ScenarioAssertionError(
                f"a timer could not be handled and was parked: {reasons}\n{self.describe()}"
            )

    async def replay(self, manager: BaseProcessManager[Any, Any] | None = None) -> ReplayResult:
        """Replay the focused process's history through ``manager`` (default: the
        scenario's own) with the pure kernel; see ``commandbus.process.replay``."""
        from commandbus.process.replay import replay_process

        return await replay_process(
            manager if manager is not None else self.manager,
            self.process,
            self._audit,
            initial_data=self.initial_data.get(self.process_id),
        )

    # -- internals -----------------------------------------------------------------------

    def _target(self, command: SentCommand | UUID | None) -> SentCommand:
        commands = self.sent_commands
        if command is None:
            awaited = self.awaited_command
            if awaited is None:
                raise ScenarioAssertionError(
                    "the process awaits no reply (pass command= to send a stray reply)\n"
                    + self.describe()
                )
            return awaited
        wanted = command.command_id if isinstance(command, SentCommand) else command
        for candidate in commands:
            if candidate.command_id == wanted:
                return candidate
        raise ScenarioAssertionError(f"command {wanted} was not sent by this process")

    async def _refresh(self, process_id: UUID, *, track: bool) -> None:
        process = await self.manager.get(process_id)
        if process is None:
            raise ScenarioAssertionError(f"process {process_id} does not exist")
        audit = await self.manager.get_audit_trail(process_id)
        messages = await self.manager.process_repo.list_messages(
            process_id=process_id, limit=1_000_000
        )
        if process_id == self._process_id:
            if track:
                known = {e.command_id for e in self._audit}
                self._last_sent = [
                    SentCommand.from_entry(i, e)
                    for i, e in enumerate(audit, 1)
                    if e.command_id not in known
                ]
                seen = {m.id for m in self._messages}
                self._last_ignored = [m for m in messages if m.id not in seen]
            self._process = process
            self._audit = audit
            self._messages = messages


def _delta(seconds: float) -> timedelta:
    if seconds < 0:
        raise ValueError("cannot move the clock backwards")
    return timedelta(seconds=seconds)
