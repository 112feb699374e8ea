"""Errors specific to process managers (all subclasses of ``CommandBusError``)."""

from __future__ import annotations

from uuid import UUID

from commandbus.errors import CommandBusError, InvalidOperationError
from commandbus.sanitise import describe_exception

__all__ = [
    "ProcessAlreadyExistsError",
    "ProcessDefinitionError",
    "ProcessHookError",
    "ProcessVersionConflictError",
    "StateLoadError",
]


class ProcessAlreadyExistsError(InvalidOperationError):
    """A process with this id exists already: of another type, started with other initial
    data, or ``save`` was used twice."""

    def __init__(
        self,
        domain: str,
        process_id: UUID,
        process_type: str | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        self.domain = domain
        self.process_id = process_id
        self.process_type = process_type
        of_type = f" of type {process_type!r}" if process_type else ""
        why = f" and {detail}" if detail else ""
        super().__init__(
            f"process {process_id} already exists in domain {domain!r}{of_type}{why}; "
            "process ids are unique per domain (pass another id or none)"
        )


class ProcessDefinitionError(CommandBusError, TypeError):
    """A process manager class is defined in a way the library would not honour (raised
    when the class is created or instantiated, never later)."""


class ProcessVersionConflictError(CommandBusError):
    """An update expected a process version that is not the stored one: a concurrent
    writer changed the process since it was loaded, the object was not loaded from storage
    (built by the caller: its ``version`` is 0), or the process does not exist. Nothing of
    the transaction was applied.

    Updates are optimistic: load the process (``get_by_id``), change its fields, then
    ``update`` it; on this error, load it again and redo the change."""

    def __init__(self, domain: str, process_ids: list[UUID]) -> None:
        self.domain = domain
        self.process_ids = process_ids
        shown = ", ".join(str(p) for p in process_ids[:5])
        super().__init__(
            f"process(es) {shown} in domain {domain!r}: not the stored version (changed "
            "concurrently, missing, or built by the caller instead of loaded). Update a "
            "process as loaded: get_by_id(domain, process_id), change it, update(process); "
            "on this error, load it again and redo the change"
        )


class ProcessHookError(CommandBusError):
    """A process manager hook raised while deciding; the message is retried, then parked."""

    def __init__(self, hook: str, process_type: str, cause: BaseException) -> None:
        self.hook = hook
        self.process_type = process_type
        self.cause = cause
        super().__init__(f"{process_type}.{hook} raised {describe_exception(cause)}")


class StateLoadError(CommandBusError):
    """A stored process state could not be turned back into the manager's state class."""

    def __init__(self, process_type: str, process_id: UUID, cause: BaseException) -> None:
        self.process_type = process_type
        self.process_id = process_id
        self.cause = cause
        super().__init__(
            f"cannot load the state of {process_type} process {process_id}: "
            f"{describe_exception(cause)}"
        )
