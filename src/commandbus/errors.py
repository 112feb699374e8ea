"""Exceptions raised by commandbus.

Every error a caller can trigger says what was wrong and, where it helps, what to do.
Driver errors are translated into these at the adapter edge.

Three of them are raised by *handlers*, to say how a command ended:

- ``TransientCommandError`` (or any unexpected exception): try again later; the worker
  retries with backoff, and after the last attempt the command goes to the TSQ.
- ``PermanentCommandError``: no retry can fix it, a person can; the command waits in the
  troubleshooting queue for an operator (retry, cancel, complete), and a process waiting
  on it is ``WAITING_FOR_TSQ``.
- ``BusinessRuleException``: the business said no; the command ends FAILED at once, with
  no operator, and a process compensates its completed steps and ends FAILED.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID


class CommandBusError(Exception):
    """Base class of every commandbus error."""


class ValidationError(CommandBusError, ValueError):
    """An argument was rejected before anything was written (bad name, payload or id)."""


class PayloadTooLargeError(ValidationError):
    """A payload exceeds the configured size limit."""


class DuplicateCommandError(CommandBusError):
    """A command with this (domain, command_id) already exists; nothing was written."""

    def __init__(self, domain: str, command_ids: Sequence[UUID]) -> None:
        self.domain = domain
        self.command_ids = list(command_ids)
        shown = ", ".join(str(c) for c in self.command_ids[:5])
        more = f" (+{len(self.command_ids) - 5} more)" if len(self.command_ids) > 5 else ""
        super().__init__(
            f"command id already used in domain {domain!r}: {shown}{more}; "
            "command ids must be unique per domain (the send was not applied)"
        )


class CommandNotFoundError(CommandBusError):
    def __init__(self, domain: str, command_id: UUID) -> None:
        self.domain = domain
        self.command_id = command_id
        super().__init__(f"no command {command_id} in domain {domain!r}")


class InvalidOperationError(CommandBusError):
    """The operation is not allowed in the command's (or process's) current state."""


class HandlerNotFoundError(CommandBusError):
    def __init__(self, domain: str, command_type: str) -> None:
        self.domain = domain
        self.command_type = command_type
        super().__init__(
            f"no handler registered for command type {command_type!r} in domain {domain!r}"
        )


class HandlerAlreadyRegisteredError(CommandBusError):
    def __init__(self, domain: str, command_type: str) -> None:
        self.domain = domain
        self.command_type = command_type
        super().__init__(
            f"a handler for {command_type!r} in domain {domain!r} is already registered"
        )


class TransientCommandError(CommandBusError):
    """Raised by a handler for a failure worth retrying (timeouts, unavailable services)."""

    def __init__(
        self, code: str = "TRANSIENT", message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        self.code = code
        self.error_message = message or code
        self.details = details or {}
        super().__init__(f"[{code}] {self.error_message}")


class PermanentCommandError(CommandBusError):
    """Raised by a handler for a failure no retry can fix: the command goes to the TSQ."""

    def __init__(
        self, code: str = "PERMANENT", message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        self.code = code
        self.error_message = message or code
        self.details = details or {}
        super().__init__(f"[{code}] {self.error_message}")


class BusinessRuleException(CommandBusError):
    """Raised by a handler when a business rule refuses the command.

    The command ends FAILED (no retry, no TSQ) and a FAILED reply carrying ``code`` and
    ``message`` goes to ``reply_to``; a process manager compensates on it.
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.code = code
        self.error_message = message
        self.details = details or {}
        super().__init__(f"[{code}] {message}")


class ProcessNotFoundError(CommandBusError):
    def __init__(self, domain: str, process_id: UUID) -> None:
        self.domain = domain
        self.process_id = process_id
        super().__init__(f"no process {process_id} in domain {domain!r}")


class SchemaError(CommandBusError):
    """The database schema is missing or not at the version this library needs."""


class MissingExtraError(CommandBusError, ImportError):
    """An optional feature was used without its extra installed; the message names the
    ``pip install 'commandbus[…]'`` that brings it."""


class StorageError(CommandBusError):
    """The database refused a request (the driver's error is the ``__cause__``).

    Validation keeps user input from getting here; seeing one means a bug or a database
    constraint of the user's own (e.g. in a transactional handler's writes)."""


class DatabaseUnavailableError(StorageError):
    """The database could not be reached, or the connection broke or timed out; the same
    request may succeed later (workers and routers retry these by themselves)."""


class WrongExpectedVersionError(CommandBusError):
    """An append expected its stream at another version (someone appended first); nothing
    was written. Read the stream again, decide again, and append with the new version."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, not the expected {expected}; "
            "nothing was appended"
        )


class DuplicateEventError(CommandBusError):
    """An event with this ``event_id`` is already stored; nothing was appended."""

    def __init__(self, event_ids: Sequence[UUID]) -> None:
        self.event_ids = list(event_ids)
        shown = ", ".join(str(e) for e in self.event_ids[:5])
        more = f" and {len(self.event_ids) - 5} more" if len(self.event_ids) > 5 else ""
        super().__init__(f"event id(s) already stored: {shown}{more}; nothing was appended")


class SubscriptionNotFoundError(CommandBusError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no subscription named {name!r}")


class BatchNotFoundError(CommandBusError):
    def __init__(self, domain: str, batch_id: UUID) -> None:
        self.domain = domain
        self.batch_id = batch_id
        super().__init__(f"no batch {batch_id} in domain {domain!r}")


class DuplicateBatchError(CommandBusError):
    """A batch with this (domain, batch_id) already exists; nothing was written."""

    def __init__(self, domain: str, batch_id: UUID) -> None:
        self.domain = domain
        self.batch_id = batch_id
        super().__init__(
            f"batch id {batch_id} already used in domain {domain!r}; batch ids must be "
            "unique per domain (nothing was sent)"
        )
