"""The read side of a ``ProcessScenario``: the focused process as it was last loaded, what
the latest action changed, and the ``expect_*`` assertions on them.

``ScenarioView`` only holds and judges what the scenario loaded; ``ProcessScenario``
(``commandbus.testing.scenario``) subclasses it with the backend, the manager and the
actions that move the process and reload it. Keeping the two apart lets each be read (and
reviewed) on its own: nothing here sends, replies or moves the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar
from uuid import UUID

from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessState,
    ProcessStatus,
)
from commandbus.testing._scenario_story import (
    ScenarioAssertionError,
    SentCommand,
    describe_process,
)

__all__ = ["ScenarioView"]

S = TypeVar("S", bound=ProcessState)


class ScenarioView(Generic[S]):
    """The focused process of a scenario, as last loaded, and assertions about it.

    The ``ProcessScenario`` subclass fills the fields below after every action; the
    ``_last_*`` fields hold what that action added (the commands it made the process send,
    the messages the engine ignored or parked), which the ``expect_*`` of the latest
    action look at.
    """

    def __init__(self) -> None:
        self._process_id: UUID | None = None
        self._process: ProcessMetadata[S, Any] | None = None
        self._audit: list[ProcessAuditEntry] = []
        self._messages: list[ProcessMessageRecord] = []
        self._last_sent: list[SentCommand] = []
        self._last_ignored: list[ProcessMessageRecord] = []

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
        return [
            SentCommand.from_entry(i, e)
            for i, e in enumerate(self._audit, 1)
            if e.kind is not AuditEntryKind.STATE_UPGRADE  # a record, not a command
        ]

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

    def _fail(self, problem: str) -> None:
        new = ", ".join(str(c) for c in self._last_sent) or "none"
        raise ScenarioAssertionError(
            f"{problem}\n  new commands of the latest action: {new}\n{self.describe()}"
        )


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


# A field that is absent, told apart from one that holds None.
_MISSING: Any = _Missing()


def _subset_diff(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    diffs = []
    for key, value in expected.items():
        if key not in actual:
            diffs.append(f"{key}: missing (expected {value!r})")
        elif actual[key] != value:
            diffs.append(f"{key}: expected {value!r}, got {actual[key]!r}")
    return "; ".join(diffs)
