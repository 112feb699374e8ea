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

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from commandbus.bus import CommandBus
from commandbus.memory import InMemoryBackend
from commandbus.memory.process_repository import InMemoryProcessRepository
from commandbus.models import JsonObject, Reply, ReplyOutcome
from commandbus.policies import RetryPolicy
from commandbus.process.base import BaseProcessManager
from commandbus.process.kernel import Decision
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessState,
    ProcessStatus,
)
from commandbus.process.router import ProcessReplyRouter
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
T = TypeVar("T")

#: A manager class, or any callable that builds the manager from a ``CommandBus``.
ManagerFactory = Callable[[CommandBus], BaseProcessManager[S, Any]]


def memory_backend(clock: VirtualClock | None = None) -> InMemoryBackend:
    """An ``InMemoryBackend`` on ``clock`` (a new ``VirtualClock`` by default) with its
    process repository wired in (``backend.processes``)."""
    backend = InMemoryBackend(clock=clock if clock is not None else VirtualClock())
    if getattr(backend, "processes", None) is None:
        backend.processes = InMemoryProcessRepository(backend)
    return backend


class ScenarioAssertionError(AssertionError):
    """An ``expect_*`` of a scenario failed; the message tells the story of the process."""


@dataclass(frozen=True)
class SentCommand:
    """A command a process sent (one audit entry), with the reply it got so far."""

    index: int  # 1-based position in the process's audit trail
    step: str
    command_type: str
    command_id: UUID
    data: JsonObject
    kind: AuditEntryKind
    reply_outcome: ReplyOutcome | None = None
    reply_data: JsonObject | None = None

    @property
    def is_compensation(self) -> bool:
        return self.kind is AuditEntryKind.COMPENSATION

    @classmethod
    def from_entry(cls, index: int, entry: ProcessAuditEntry) -> SentCommand:
        return cls(
            index=index,
            step=entry.step_name,
            command_type=entry.command_type,
            command_id=entry.command_id,
            data=dict(entry.command_data or {}),
            kind=AuditEntryKind(entry.kind),
            reply_outcome=entry.reply_outcome,
            reply_data=entry.reply_data,
        )

    def __str__(self) -> str:
        kind = " (compensation)" if self.is_compensation else ""
        return f"{self.command_type}{kind} step={self.step} data={_short_json(self.data)}"


def _short_json(value: object, limit: int = 120) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_process(
    process: ProcessMetadata[Any, Any] | None,
    audit: Sequence[ProcessAuditEntry],
    ignored: Sequence[ProcessMessageRecord] = (),
) -> str:
    """A readable multi-line account of a process: its row and every command with its
    reply (what assertion messages and ``commandbus process show`` print)."""
    if process is None:
        return "no process"
    state = process.state
    state_dict = state.to_dict() if hasattr(state, "to_dict") else state
    lines = [
        f"process {process.process_id} ({process.process_type}, domain {process.domain})",
        f"  status: {process.status.value}   current step: {process.current_step}",
    ]
    if process.error_code or process.error_message:
        lines.append(f"  error: {process.error_code}: {process.error_message}")
    lines.append(f"  state: {_short_json(state_dict, 400)}")
    if not audit:
        lines.append("  (no commands sent)")
    for index, entry in enumerate(audit, 1):
        kind = "COMP" if entry.kind is AuditEntryKind.COMPENSATION else "STEP"
        if entry.reply_outcome is None:
            answer = "awaiting reply" if entry.command_id == process.awaiting_command_id else "-"
        else:
            answer = entry.reply_outcome.value
            if entry.reply_data:
                answer += f" {_short_json(entry.reply_data, 80)}"
            if entry.error_code or entry.error_message:
                answer += f" [{entry.error_code}: {entry.error_message}]"
        timed_out = " (timed out)" if entry.timed_out_at is not None else ""
        lines.append(
            f"  #{index} {kind} {entry.step_name}: {entry.command_type} "
            f"{_short_json(entry.command_data or {}, 80)} -> {answer}{timed_out}"
        )
    for record in ignored:
        lines.append(f"  {record.disposition.value.lower()}: {record.reason}")
    return "\n".join(lines)


class ProcessScenario(Generic[S]):
    """A process manager on the in-memory backend, driven step by step by a test.

    ``manager`` is the manager class (or a factory taking the ``CommandBus``). The
    scenario focuses on the process started last; ``await use(process_id)`` switches to
    another one it started.
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
        self._process_id: UUID | None = None
        self._process: ProcessMetadata[S, Any] | None = None
        self._audit: list[ProcessAuditEntry] = []
        self._messages: list[ProcessMessageRecord] = []
        self._last_sent: list[SentCommand] = []
        self._last_ignored: list[ProcessMessageRecord] = []
        self.last_decision: Decision[Any, Any] | None = None
        #: The start input of every process started here (what replay starts from).
        self.initial_data: dict[UUID, JsonObject] = {}

    # -- what the test looks at ----------------------------------------------------------

    @property
    def process_id(self) -> UUID:
        if self._process_id is None:
            raise ScenarioAssertionError("no process started yet: call `await scenario.start()`")
        return self._process_id

    @property
    def process(self) -> ProcessMetadata[S, Any]:
        """The process row as stored (typed state), reloaded after every action."""
        if self._process is None:
            raise ScenarioAssertionError("no process started yet: call `await scenario.start()`")
        return self._process

    @property
    def status(self) -> ProcessStatus:
        return self.process.status

    @property
    def state(self) -> S:
        return self.process.state

    @property
    def current_step(self) -> Any:
        return self.process.current_step

    @property
    def audit_trail(self) -> list[ProcessAuditEntry]:
        return list(self._audit)

    @property
    def sent_commands(self) -> list[SentCommand]:
        """Every command the process sent, in order (forward steps and compensations)."""
        return [SentCommand.from_entry(i, e) for i, e in enumerate(self._audit, 1)]

    @property
    def last_sent(self) -> list[SentCommand]:
        """The commands the latest action made the process send."""
        return list(self._last_sent)

    @property
    def awaited_command(self) -> SentCommand | None:
        """The command whose reply the process waits for, if any."""
        awaiting = self.process.awaiting_command_id
        for command in self.sent_commands:
            if command.command_id == awaiting:
                return command
        return None

    @property
    def ignored_messages(self) -> list[ProcessMessageRecord]:
        """Messages of this process the engine ignored or parked (the message log)."""
        return list(self._messages)

    def describe(self) -> str:
        """The story of the focused process (row, commands and replies, ignored messages)."""
        if self._process is None:
            return "no process started"
        return describe_process(self._process, self._audit, self._messages)

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

    # -- assertions ----------------------------------------------------------------------

    def expect_command(
        self,
        command_type: str | None = None,
        *,
        step: object | None = None,
        data: Mapping[str, Any] | None = None,
        compensation: bool | None = None,
    ) -> SentCommand:
        """Assert that the latest action sent exactly one command, of ``command_type``
        (and ``step``, and with ``data`` as a subset of its data); return it."""
        sent = self._last_sent
        problem: str | None = None
        if len(sent) != 1:
            problem = f"expected one new command, the process sent {len(sent)}"
        else:
            command = sent[0]
            if command_type is not None and command.command_type != command_type:
                problem = f"expected a {command_type} command, got {command.command_type}"
            elif step is not None and command.step != str(step):
                problem = f"expected step {step}, got {command.step}"
            elif compensation is not None and command.is_compensation != compensation:
                problem = "expected a " + ("compensation" if compensation else "forward step")
            elif data is not None:
                diff = _subset_diff(data, command.data)
                if diff:
                    problem = f"command data differs: {diff}"
        if problem is not None:
            self._fail(problem)
        return sent[0]

    def expect_commands(self, *command_types: str) -> list[SentCommand]:
        """Assert the types of the commands the latest action sent (in order)."""
        actual = [c.command_type for c in self._last_sent]
        if actual != list(command_types):
            self._fail(f"expected new commands {list(command_types)}, got {actual}")
        return list(self._last_sent)

    def expect_no_command(self) -> None:
        """Assert that the latest action sent nothing."""
        if self._last_sent:
            self._fail(f"expected no new command, got {[str(c) for c in self._last_sent]}")

    def expect_sent(self, *command_types: str) -> None:
        """Assert the types of every command the process sent so far (in order)."""
        actual = [c.command_type for c in self.sent_commands]
        if actual != list(command_types):
            self._fail(f"expected the commands sent to be {list(command_types)}, got {actual}")

    def expect_status(
        self,
        status: ProcessStatus | str,
        *,
        error_code: str | None = None,
    ) -> None:
        """Assert the process status (and error code, when given)."""
        expected = ProcessStatus(status)
        process = self.process
        if process.status is not expected:
            self._fail(f"expected status {expected.value}, got {process.status.value}")
        if error_code is not None and process.error_code != error_code:
            self._fail(f"expected error code {error_code!r}, got {process.error_code!r}")

    def expect_state(self, **fields: Any) -> None:
        """Assert fields of the state (attributes, or keys of a dict state)."""
        state: Any = self.process.state
        mismatches: list[str] = []
        for name, expected in fields.items():
            if isinstance(state, Mapping):
                actual = state.get(name, _MISSING)
            else:
                actual = getattr(state, name, _MISSING)
            if actual is _MISSING:
                mismatches.append(f"{name}: no such field")
            elif actual != expected:
                mismatches.append(f"{name}: expected {expected!r}, got {actual!r}")
        if mismatches:
            self._fail("state differs: " + "; ".join(mismatches))

    def expect_ignored(self, reason_contains: str = "") -> ProcessMessageRecord:
        """Assert that the latest message was ignored (a duplicate, stale or late reply),
        with ``reason_contains`` in its reason; the process did not change."""
        for record in self._last_ignored:
            if (
                record.disposition is ProcessMessageDisposition.IGNORED
                and reason_contains in record.reason
            ):
                return record
        got = [r.reason for r in self._last_ignored] or "nothing was ignored"
        self._fail(f"expected the message to be ignored ({reason_contains!r}), got {got}")
        raise AssertionError  # pragma: no cover - _fail raises

    def expect_compensations(self, *steps: object) -> None:
        """Assert the compensation steps sent, in order (names or step enums)."""
        actual = [c.step for c in self.sent_commands if c.is_compensation]
        if actual != [str(s) for s in steps]:
            self._fail(f"expected compensations {[str(s) for s in steps]}, got {actual}")

    # -- internals -----------------------------------------------------------------------

    def _fail(self, problem: str) -> None:
        new = ", ".join(str(c) for c in self._last_sent) or "none"
        raise ScenarioAssertionError(
            f"{problem}\n  new commands of the latest action: {new}\n{self.describe()}"
        )

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


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _subset_diff(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    diffs = []
    for key, value in expected.items():
        if key not in actual:
            diffs.append(f"{key}: missing (expected {value!r})")
        elif actual[key] != value:
            diffs.append(f"{key}: expected {value!r}, got {actual[key]!r}")
    return "; ".join(diffs)


def _delta(seconds: float) -> timedelta:
    if seconds < 0:
        raise ValueError("cannot move the clock backwards")
    return timedelta(seconds=seconds)
