"""The process repository port (seed story S058).

``ProcessRepository`` is what the process engine needs from storage. Two adapters implement
it: ``commandbus.postgres.process_repository.PostgresProcessRepository`` (tables
``commandbus.process``, ``commandbus.process_audit`` and ``commandbus.process_message_log``)
and ``commandbus.memory.process_repository.InMemoryProcessRepository``. The contract suite
``commandbus.testing.process_contracts`` runs against both.

Like every port, each method takes ``conn``: an open transaction of the backend, or None to
run in a transaction of its own. The seed's methods (``save`` … ``get_completed_steps``)
read and write one process at a time; the engine uses the batch methods (``insert_new``,
``lock``, ``apply``) so that a router handles a whole batch of replies in a few round
trips.

Repositories store and return the state as a plain JSON object (``dict``): they do not know
the state classes. ``save``/``update`` accept a typed state (anything with ``to_dict()``) or
a dict; ``BaseProcessManager.get`` returns processes with typed state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from commandbus.models import JsonObject, ReplyOutcome
from commandbus.ports import Conn
from commandbus.process.models import (
    AuditEntryKind,
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)
from commandbus.validation import json_text

__all__ = [
    "JsonText",
    "ProcessRepository",
    "ProcessWrites",
    "completed_steps",
    "state_to_dict",
    "state_to_json",
]

AnyProcess = ProcessMetadata[Any, Any]


class JsonText(str):
    """A state already encoded as a JSON object (the engine validates and encodes a new
    state once; repositories store it as it is instead of encoding it again)."""

    __slots__ = ()


def completed_steps(trail: Sequence[ProcessAuditEntry]) -> list[str]:
    """Forward steps answered SUCCESS, in the order they were sent (what compensation
    walks backwards); compensation commands themselves are not steps."""
    return [
        e.step_name
        for e in trail
        if e.kind is AuditEntryKind.STEP and e.reply_outcome is ReplyOutcome.SUCCESS
    ]


def state_to_json(state: object) -> str:
    """The JSON text stored for a state."""
    if isinstance(state, JsonText):
        return str(state)
    return json_text(state_to_dict(state))


def state_to_dict(state: object) -> JsonObject:
    """The JSON object stored for a state: ``state.to_dict()``, or the dict itself."""
    if state is None:
        return {}
    if isinstance(state, JsonText):
        decoded: JsonObject = json.loads(state)
        return decoded
    to_dict = getattr(state, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if not isinstance(result, dict):
            raise TypeError(f"{type(state).__name__}.to_dict() must return a dict")
        return result
    if isinstance(state, dict):
        return state
    raise TypeError(f"process state of type {type(state).__name__} has no to_dict()")


@dataclass
class ProcessWrites:
    """Everything a batch of decisions writes to process storage, applied in one call.

    - ``updates``: full rows; each is written only if its stored ``version`` still equals
      ``process.version`` (else ``ProcessVersionConflictError``). The repository sets the
      new version (+1) and ``updated_at`` (the database's time) on the objects.
    - ``audit_inserts`` / ``audit_updates``: ``(domain, process_id, entry)``; an update
      replaces the reply fields and ``timed_out_at`` of the entry with ``entry.command_id``.
    - ``messages``: ignored or parked messages for the message log.
    """

    updates: list[AnyProcess] = field(default_factory=list)
    audit_inserts: list[tuple[str, UUID, ProcessAuditEntry]] = field(default_factory=list)
    audit_updates: list[tuple[str, UUID, ProcessAuditEntry]] = field(default_factory=list)
    messages: list[ProcessMessageRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updates or self.audit_inserts or self.audit_updates or self.messages)


class ProcessRepository(Protocol):
    """Storage of process instances, their audit trail and their message log."""

    # -- the seed's API ----------------------------------------------------------------

    async def save(self, process: AnyProcess, *, conn: Conn | None = None) -> None:
        """Insert a new process (version 1). Raises ``ProcessAlreadyExistsError``."""
        ...

    async def update(self, process: AnyProcess, *, conn: Conn | None = None) -> None:
        """Write all fields of an existing process whose stored version is
        ``process.version``; sets ``process.version`` (+1) and ``process.updated_at`` (the
        database's clock). Raises ``ProcessVersionConflictError`` (also when missing)."""
        ...

    async def get_by_id(
        self, domain: str, process_id: UUID, *, conn: Conn | None = None
    ) -> AnyProcess | None:
        """The process with its state as a dict, or None."""
        ...

    async def find_by_status(
        self,
        domain: str,
        statuses: Sequence[ProcessStatus],
        *,
        limit: int | None = None,
        conn: Conn | None = None,
    ) -> list[AnyProcess]:
        """Processes of ``domain`` in any of ``statuses``, oldest first."""
        ...

    async def log_step(
        self,
        domain: str,
        process_id: UUID,
        entry: ProcessAuditEntry,
        *,
        conn: Conn | None = None,
    ) -> None:
        """Append an audit entry (a command the process sent)."""
        ...

    async def update_step_reply(
        self,
        domain: str,
        process_id: UUID,
        command_id: UUID,
        entry: ProcessAuditEntry,
        *,
        conn: Conn | None = None,
    ) -> None:
        """Record reply fields (outcome, data, received_at, error, timed_out_at) of
        ``entry`` on the audit entry of ``command_id``."""
        ...

    async def get_audit_trail(
        self, domain: str, process_id: UUID, *, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        """Audit entries ordered by ``sent_at`` (ties in insertion order)."""
        ...

    async def get_completed_steps(
        self, domain: str, process_id: UUID, *, conn: Conn | None = None
    ) -> list[str]:
        """Names of forward steps (kind STEP) answered SUCCESS, in send order."""
        ...

    # -- what the engine needs ---------------------------------------------------------

    async def insert_new(self, processes: Sequence[AnyProcess], *, conn: Conn) -> list[UUID]:
        """Insert the processes that do not exist yet (by ``(domain, process_id)``); return
        the ids inserted. Existing ones are left alone (a concurrent insert of the same id
        waits for the other transaction, like a unique index does)."""
        ...

    async def lock(
        self, domains: Sequence[str], process_ids: Sequence[UUID], *, conn: Conn
    ) -> list[ProcessSnapshot[Any, Any]]:
        """Lock (``FOR UPDATE``, in a fixed order) and load the processes with these ids in
        any of ``domains``, each with its audit trail. Missing ids are simply absent.

        The audit trail is read *after* the locks are held, so it includes what a
        transaction that held a lock before us committed."""
        ...

    async def apply(self, writes: ProcessWrites, *, conn: Conn | None = None) -> None:
        """Apply a batch of writes (see ``ProcessWrites``) in ``conn``'s transaction, or in
        one of its own."""
        ...

    async def find_stuck(
        self,
        domain: str,
        *,
        deadline_before: datetime,
        updated_before: datetime | None = None,
        limit: int = 1000,
        conn: Conn | None = None,
    ) -> list[AnyProcess]:
        """Non-terminal processes whose ``deadline_at`` is before ``deadline_before``, or
        (when ``updated_before`` is given) that have not changed since then."""
        ...

    async def list_messages(
        self,
        *,
        domain: str | None = None,
        process_id: UUID | None = None,
        disposition: ProcessMessageDisposition | None = None,
        limit: int = 100,
        conn: Conn | None = None,
    ) -> list[ProcessMessageRecord]:
        """The message log (ignored and parked messages), oldest first."""
        ...

    async def delete_message(self, record_id: int, *, conn: Conn | None = None) -> bool:
        """Remove a message-log record (e.g. once a parked message was replayed)."""
        ...
